//! The database URL: kept whole for the driver, shown everywhere else without its
//! password.

use std::fmt;

/// A PostgreSQL connection string (`postgres://user:pass@host:port/db` or
/// `host=… user=… password=…`). `Display` and `Debug` replace the password with `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps `text`, trimmed.
    pub fn new(text: &str) -> Self {
        Self(text.trim().to_string())
    }

    /// The full string, password included: for the driver only.
    pub(super) fn expose(&self) -> &str {
        &self.0
    }

    /// The string with its password replaced by `***`.
    pub fn redacted(&self) -> String {
        let s = &self.0;
        if let Some(scheme_end) = s.find("://") {
            let rest = &s[scheme_end + 3..];
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            if let Some(at) = rest[..authority_end].rfind('@') {
                if let Some(colon) = rest[..at].find(':') {
                    let start = scheme_end + 3 + colon + 1;
                    let end = scheme_end + 3 + at;
                    return format!("{}***{}", &s[..start], &s[end..]);
                }
            }
            return redact_query(s);
        }
        redact_key_value(s)
    }
}

/// `?password=…` in a URL's query.
fn redact_query(s: &str) -> String {
    let Some(q) = s.find('?') else {
        return s.to_string();
    };
    let params: Vec<String> = s[q + 1..]
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => p.to_string(),
        })
        .collect();
    format!("{}?{}", &s[..q], params.join("&"))
}

/// `password=…` in the `key=value` form (quoted values included).
fn redact_key_value(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let Some(at) = lower.find("password") else {
        return s.to_string();
    };
    let after = &s[at + "password".len()..];
    let Some(eq) = after.find('=') else {
        return s.to_string();
    };
    let value = after[eq + 1..].trim_start();
    let value_start = s.len() - value.len();
    let value_len = if let Some(quoted) = value.strip_prefix('\'') {
        quoted.find('\'').map(|i| i + 2).unwrap_or(value.len())
    } else {
        value.find(char::is_whitespace).unwrap_or(value.len())
    };
    format!("{}***{}", &s[..value_start], &s[value_start + value_len..])
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        let cases = [
            (
                "postgres://mse:s3cret@db:5432/mse",
                "postgres://mse:***@db:5432/mse",
            ),
            ("postgresql://mse@db/mse", "postgresql://mse@db/mse"),
            (
                "postgres://db/mse?user=a&password=s3cret",
                "postgres://db/mse?user=a&password=***",
            ),
            (
                "host=db user=mse password=s3cret dbname=mse",
                "host=db user=mse password=*** dbname=mse",
            ),
            (
                "host=db password = 's3 cret' dbname=mse",
                "host=db password = *** dbname=mse",
            ),
        ];
        for (raw, shown) in cases {
            let url = DatabaseUrl::new(raw);
            assert_eq!(url.to_string(), shown);
            assert!(!format!("{url:?}").contains("s3"), "{url:?}");
            assert_eq!(url.expose(), raw);
        }
    }
}
