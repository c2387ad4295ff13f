//! Secret handling shared by every layer: constant-time comparison and short reference ids.

use subtle::ConstantTimeEq;

/// True if two secrets are equal, compared in constant time (the length is not secret).
pub fn secrets_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A short random id that ties a reply to a log line (`internal error (ref 3f9a…)`).
pub fn reference_id() -> String {
    hex::encode(rand::random::<[u8; 6]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_for_identical_secrets() {
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "abcd"));
        assert!(secrets_equal("", ""));
    }

    #[test]
    fn reference_ids_are_12_hex_and_differ() {
        let a = reference_id();
        assert_eq!(a.len(), 12);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, reference_id());
    }
}
