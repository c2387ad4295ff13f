//! Resolving a [`Config`]: flags and environment over the TOML file over the defaults,
//! then the checks that refuse an unsafe or incomplete combination.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::file::{read_file, FileConfig};
use super::{
    Config, ConfigError, OperatorTimeouts, ServeArgs, Storage, TlsFiles, DEFAULT_BIND,
    DEFAULT_DATA_DIR,
};
use crate::brake::BrakeLimits;
use crate::engine::ResumeMode;
use crate::pg::DatabaseUrl;

impl Config {
    /// Resolves flags and environment (already merged by clap) over the TOML file over the
    /// defaults, and checks the result.
    pub fn load(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let defaults = Config::default();
        let bind_text = args
            .bind
            .clone()
            .or(file.bind)
            .unwrap_or_else(|| DEFAULT_BIND.to_string());
        let bind: SocketAddr = bind_text.parse().map_err(|e| ConfigError::Invalid {
            key: "bind",
            why: format!("'{bind_text}' is not an address like 127.0.0.1:7777 ({e})"),
        })?;
        let ephemeral = args.ephemeral || file.ephemeral.unwrap_or(false);
        let database_url = args
            .database_url
            .clone()
            .or(file.database_url)
            .filter(|u| !u.trim().is_empty());
        let dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let storage = match (ephemeral, database_url) {
            (true, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "database_url",
                    why: "--ephemeral keeps everything in memory; drop one of --ephemeral \
                          and --database-url"
                        .into(),
                })
            }
            (true, None) => Storage::Ephemeral,
            (false, Some(url)) => Storage::Postgres {
                url: database_url_checked(&url)?,
                dir,
            },
            (false, None) => Storage::Dir(dir),
        };
        let api_token = args
            .api_token
            .clone()
            .or(file.api_token)
            .filter(|t| !t.trim().is_empty());
        let token_secret = match args.token_secret.clone().or(file.token_secret) {
            Some(hex_text) => {
                Some(
                    hex::decode(hex_text.trim()).map_err(|e| ConfigError::Invalid {
                        key: "token_secret",
                        why: format!("must be hex ({e})"),
                    })?,
                )
            }
            None => None,
        };
        let secs = |flag: Option<u64>, file: Option<u64>, default: Duration| {
            flag.or(file).map(Duration::from_secs).unwrap_or(default)
        };
        let d = &defaults.operator;
        let operator = OperatorTimeouts {
            park_grace: secs(args.park_grace_secs, file.park_grace_secs, d.park_grace),
            ask: secs(args.ask_timeout_secs, file.ask_timeout_secs, d.ask),
            hook: secs(args.hook_timeout_secs, file.hook_timeout_secs, d.hook),
            spawn: secs(args.spawn_timeout_secs, file.spawn_timeout_secs, d.spawn),
            ping_interval: secs(
                args.ping_interval_secs,
                file.ping_interval_secs,
                d.ping_interval,
            ),
            idle_horizon: secs(
                args.session_idle_secs,
                file.session_idle_secs,
                d.idle_horizon,
            ),
            max_unacked: args
                .max_unacked_frames
                .or(file.max_unacked_frames)
                .unwrap_or(d.max_unacked)
                .max(1),
        };
        if operator.ping_interval.is_zero() {
            return Err(ConfigError::Invalid {
                key: "ping_interval_secs",
                why: "must be at least 1".into(),
            });
        }
        let cors_origins = if args.cors_origins.is_empty() {
            file.cors_origins.unwrap_or_default()
        } else {
            args.cors_origins.clone()
        };
        let tls = tls_files(
            args.tls_cert.clone().or(file.tls_cert),
            args.tls_key.clone().or(file.tls_key),
            args.tls_client_ca.clone().or(file.tls_client_ca),
        )?;
        let brake = BrakeLimits {
            failures: args
                .auth_failure_budget
                .or(file.auth_failure_budget)
                .unwrap_or(defaults.brake.failures),
            window: secs(
                args.auth_failure_window_secs,
                file.auth_failure_window_secs,
                defaults.brake.window,
            ),
        };
        if brake.window.is_zero() {
            return Err(ConfigError::Invalid {
                key: "auth_failure_window_secs",
                why: "must be at least 1".into(),
            });
        }
        let resume = match args
            .resume_interrupted
            .clone()
            .or(file.resume_interrupted)
            .as_deref()
            .map(str::trim)
        {
            None | Some("auto") => ResumeMode::Auto,
            Some("manual") => ResumeMode::Manual,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "resume_interrupted",
                    why: format!("'{other}' is neither auto nor manual"),
                })
            }
        };
        let metrics_bind = match args.metrics_bind.clone().or(file.metrics_bind) {
            Some(text) => Some(text.parse().map_err(|e| ConfigError::Invalid {
                key: "metrics_bind",
                why: format!("'{text}' is not an address like 127.0.0.1:9090 ({e})"),
            })?),
            None => None,
        };
        let config = Config {
            bind,
            resume,
            storage,
            api_token,
            token_secret,
            max_message_bytes: args
                .max_message_bytes
                .or(file.max_message_bytes)
                .unwrap_or(defaults.max_message_bytes),
            max_data_bytes: args
                .max_data_bytes
                .or(file.max_data_bytes)
                .unwrap_or(defaults.max_data_bytes),
            task_retention: args
                .task_retention
                .or(file.task_retention)
                .unwrap_or(defaults.task_retention),
            operator,
            cors_origins,
            public_url: public_url_checked(args.public_url.clone().or(file.public_url))?,
            tls,
            brake,
            drain: secs(args.drain_secs, file.drain_secs, defaults.drain),
            metrics: !(args.no_metrics || file.no_metrics.unwrap_or(false)),
            metrics_bind,
            cluster: super::cluster::resolve(&args.cluster, file.nats_url, file.replica_id)?,
        };
        config.check_exposure()?;
        config.check_replica_secret()?;
        Ok(config)
    }

    /// Refuses `--nats-url` without `--token-secret`: replicas that each drew their own
    /// secret would refuse each other's capability tokens.
    fn check_replica_secret(&self) -> Result<(), ConfigError> {
        if self.cluster.nats_url.is_some() && self.token_secret.is_none() {
            return Err(ConfigError::Invalid {
                key: "token_secret",
                why: "--nats-url runs this server as one of several replicas: give every \
                      replica the same --token-secret (or MSE_TOKEN_SECRET, hex, e.g. from \
                      `openssl rand -hex 32`)"
                    .into(),
            });
        }
        Ok(())
    }

    /// Refuses a non-loopback bind without an API token: it would hand the Task and
    /// Blueprint APIs to the network.
    fn check_exposure(&self) -> Result<(), ConfigError> {
        if !self.bind.ip().is_loopback() && self.api_token.is_none() {
            return Err(ConfigError::Invalid {
                key: "bind",
                why: format!(
                    "{} is reachable from other machines; set --api-token (or MSE_API_TOKEN) \
                     so the Task and Blueprint APIs require it, or bind 127.0.0.1",
                    self.bind
                ),
            });
        }
        Ok(())
    }
}

/// A `postgres://` or `postgresql://` URL, or the `key=value` form.
/// `http(s)://host[:port][/path]`, without a trailing slash; empty is none.
fn public_url_checked(text: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(text) = text.map(|t| t.trim().trim_end_matches('/').to_string()) else {
        return Ok(None);
    };
    if text.is_empty() {
        return Ok(None);
    }
    let host = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"));
    match host {
        Some(h) if !h.is_empty() && !h.contains(char::is_whitespace) => Ok(Some(text)),
        _ => Err(ConfigError::Invalid {
            key: "public_url",
            why: format!(
                "'{text}' is not an http:// or https:// URL like https://swarm.example.com"
            ),
        }),
    }
}

fn database_url_checked(text: &str) -> Result<DatabaseUrl, ConfigError> {
    let url = DatabaseUrl::new(text);
    let shown = url.redacted();
    let lower = shown.to_ascii_lowercase();
    if lower.starts_with("postgres://")
        || lower.starts_with("postgresql://")
        || (!lower.contains("://") && lower.contains('='))
    {
        Ok(url)
    } else {
        Err(ConfigError::Invalid {
            key: "database_url",
            why: format!("'{shown}' is not a PostgreSQL URL like postgres://user@host:5432/db"),
        })
    }
}

/// Cert and key come together; a client CA needs both.
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    let missing = |key: &'static str, flag: &str, other: &str| ConfigError::Invalid {
        key,
        why: format!("{other} is set but {flag} is missing; give both PEM files or neither"),
    };
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert,
            key,
            client_ca,
        })),
        (Some(_), None) => Err(missing("tls_key", "--tls-key", "--tls-cert")),
        (None, Some(_)) => Err(missing("tls_cert", "--tls-cert", "--tls-key")),
        (None, None) if client_ca.is_some() => Err(ConfigError::Invalid {
            key: "tls_client_ca",
            why: "mTLS needs TLS: set --tls-cert and --tls-key too".into(),
        }),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs::default()
    }

    #[test]
    fn defaults_bind_loopback_and_use_the_data_dir() {
        let c = Config::load(&args()).expect("defaults load");
        assert_eq!(c.bind.to_string(), DEFAULT_BIND);
        assert_eq!(c.storage, Storage::Dir(PathBuf::from(DEFAULT_DATA_DIR)));
        assert_eq!(c.operator.park_grace, Duration::from_secs(60));
    }

    #[test]
    fn flags_beat_the_file_and_unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("mse-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("c.toml");
        std::fs::write(&path, "bind = \"127.0.0.1:8888\"\npark_grace_secs = 5\n").expect("w");
        let mut a = args();
        a.config = Some(path.clone());
        a.bind = Some("127.0.0.1:9999".into());
        let c = Config::load(&a).expect("load");
        assert_eq!(c.bind.port(), 9999);
        assert_eq!(c.operator.park_grace, Duration::from_secs(5));
        std::fs::write(&path, "typo_field = 1\n").expect("w");
        let err = Config::load(&a).expect_err("unknown key");
        assert!(err.to_string().contains("typo_field"), "{err}");
    }

    #[test]
    fn public_bind_without_token_is_refused_with_the_reason() {
        let mut a = args();
        a.bind = Some("0.0.0.0:7777".into());
        let err = Config::load(&a).expect_err("refused");
        assert!(err.to_string().contains("--api-token"), "{err}");
        a.api_token = Some("s3cret".into());
        assert!(Config::load(&a).is_ok());
        a.bind = Some("nonsense".into());
        assert!(Config::load(&a)
            .expect_err("bad")
            .to_string()
            .contains("nonsense"));
    }

    #[test]
    fn a_replica_on_nats_needs_the_shared_token_secret() {
        let mut a = args();
        a.cluster.nats_url = Some("nats://127.0.0.1:4222".into());
        let err = Config::load(&a).expect_err("no secret").to_string();
        assert!(err.contains("--token-secret"), "{err}");
        a.token_secret = Some("00ff".into());
        assert!(Config::load(&a).is_ok());
    }

    #[test]
    fn a_database_url_selects_postgres_and_excludes_ephemeral() {
        let mut a = args();
        a.database_url = Some("postgres://mse:s3cret@db/mse".into());
        a.data_dir = Some("/d".into());
        let c = Config::load(&a).expect("postgres");
        assert_eq!(
            c.storage,
            Storage::Postgres {
                url: DatabaseUrl::new("postgres://mse:s3cret@db/mse"),
                dir: "/d".into()
            }
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        a.ephemeral = true;
        let err = Config::load(&a).expect_err("both").to_string();
        assert!(
            err.contains("--ephemeral") && err.contains("--database-url"),
            "{err}"
        );
        a.ephemeral = false;
        a.database_url = Some("mysql://u:s3cret@db/x".into());
        let err = Config::load(&a).expect_err("not postgres").to_string();
        assert!(
            err.contains("not a PostgreSQL URL") && !err.contains("s3cret"),
            "{err}"
        );
    }

    #[test]
    fn tls_needs_both_cert_and_key_and_names_the_missing_one() {
        let mut a = args();
        assert_eq!(Config::load(&a).expect("plain").tls, None);
        a.tls_cert = Some("c.pem".into());
        let err = Config::load(&a).expect_err("no key").to_string();
        assert!(err.contains("--tls-key is missing"), "{err}");
        a.tls_cert = None;
        a.tls_key = Some("k.pem".into());
        let err = Config::load(&a).expect_err("no cert").to_string();
        assert!(err.contains("--tls-cert is missing"), "{err}");
        a.tls_key = None;
        a.tls_client_ca = Some("ca.pem".into());
        let err = Config::load(&a).expect_err("ca alone").to_string();
        assert!(err.contains("--tls-cert and --tls-key"), "{err}");
        a.tls_cert = Some("c.pem".into());
        a.tls_key = Some("k.pem".into());
        let tls = Config::load(&a).expect("tls").tls.expect("some");
        assert_eq!(tls.client_ca, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn a_public_url_is_an_http_url_kept_without_its_trailing_slash() {
        let mut a = args();
        assert_eq!(Config::load(&a).expect("none").public_url, None);
        a.public_url = Some("https://swarm.example.com/".into());
        let c = Config::load(&a).expect("https");
        assert_eq!(c.public_url.as_deref(), Some("https://swarm.example.com"));
        a.public_url = Some("swarm.example.com:7777".into());
        let err = Config::load(&a).expect_err("no scheme").to_string();
        assert!(
            err.contains("public_url") && err.contains("https://"),
            "{err}"
        );
    }
}
