//! Server configuration: command-line flags > environment variables > TOML file > defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::brake::BrakeLimits;

/// Default listen address.
pub const DEFAULT_BIND: &str = "127.0.0.1:7777";
/// Default data directory (Blueprints in git, data outputs in SQLite).
pub const DEFAULT_DATA_DIR: &str = ".mse-grpc";

/// Flags of `mse-grpc serve`. Every flag also reads an `MSE_*` environment variable; a value
/// given neither way falls back to the TOML file, then to the default.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file (keys as the long flags, with underscores).
    #[arg(long, env = "MSE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address for gRPC, gRPC-Web and HTTP [default: 127.0.0.1:7777].
    #[arg(long, env = "MSE_BIND")]
    pub bind: Option<String>,
    /// Directory for Blueprints (git) and data outputs (SQLite) [default: ./.mse-grpc].
    #[arg(long, env = "MSE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep everything in memory; nothing is written to disk.
    #[arg(long, env = "MSE_EPHEMERAL")]
    pub ephemeral: bool,
    /// Require `authorization: Bearer <token>` on Task and Blueprint RPCs.
    #[arg(long, env = "MSE_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Hex secret that signs worker capability tokens [default: random per process].
    #[arg(long, env = "MSE_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Largest gRPC message accepted or sent, in bytes [default: 4 MiB].
    #[arg(long, env = "MSE_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Largest data-plane payload (DataService, worker submit), in bytes [default: 1 MiB].
    #[arg(long, env = "MSE_MAX_DATA_BYTES")]
    pub max_data_bytes: Option<usize>,
    /// Finished tasks kept for GetTask/ListTasks before the oldest are dropped [default: 10000].
    #[arg(long, env = "MSE_TASK_RETENTION")]
    pub task_retention: Option<usize>,
    /// Seconds an operator request waits for a detached session to re-attach [default: 60].
    #[arg(long, env = "MSE_PARK_GRACE_SECS")]
    pub park_grace_secs: Option<u64>,
    /// Seconds an operator has to answer an `ask` [default: 3600].
    #[arg(long, env = "MSE_ASK_TIMEOUT_SECS")]
    pub ask_timeout_secs: Option<u64>,
    /// Seconds an operator has to answer a `hook_before` [default: 300].
    #[arg(long, env = "MSE_HOOK_TIMEOUT_SECS")]
    pub hook_timeout_secs: Option<u64>,
    /// Seconds an operator has to answer a `spawn` [default: 3600].
    #[arg(long, env = "MSE_SPAWN_TIMEOUT_SECS")]
    pub spawn_timeout_secs: Option<u64>,
    /// Seconds between app-level pings on operator streams [default: 15].
    #[arg(long, env = "MSE_PING_INTERVAL_SECS")]
    pub ping_interval_secs: Option<u64>,
    /// Seconds a session may stay without a stream before it is reaped [default: 86400].
    #[arg(long, env = "MSE_SESSION_IDLE_SECS")]
    pub session_idle_secs: Option<u64>,
    /// Unacknowledged frames an operator session may hold before new requests fail
    /// [default: 10000].
    #[arg(long, env = "MSE_MAX_UNACKED_FRAMES")]
    pub max_unacked_frames: Option<usize>,
    /// Seconds SIGTERM waits for running tasks and open streams before aborting them
    /// [default: 5].
    #[arg(long, env = "MSE_DRAIN_SECS")]
    pub drain_secs: Option<u64>,
    /// Origins allowed to call gRPC-Web from a browser (repeatable) [default: none].
    #[arg(long = "cors-origin", env = "MSE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// PEM certificate chain: serve TLS on the same port (needs --tls-key).
    #[arg(long, env = "MSE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "MSE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: require client certificates signed by them (mTLS).
    #[arg(long, env = "MSE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Failed credential checks one client address may make per window before it is
    /// refused for a cool-down; 0 turns the brake off [default: 20].
    #[arg(long, env = "MSE_AUTH_FAILURE_BUDGET")]
    pub auth_failure_budget: Option<u32>,
    /// The brake's window, and the length of its cool-down, in seconds [default: 10].
    #[arg(long, env = "MSE_AUTH_FAILURE_WINDOW_SECS")]
    pub auth_failure_window_secs: Option<u64>,
    /// Log line format on stderr: `text` (coloured only on a terminal) or `json` (one object
    /// per line). Read before the config file, so flag or environment only.
    #[arg(long, env = "MSE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colour only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, with the span fields (`sid`, `req_id`, `task_id`).
    Json,
}

/// The TOML file: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<String>,
    data_dir: Option<PathBuf>,
    ephemeral: Option<bool>,
    api_token: Option<String>,
    token_secret: Option<String>,
    max_message_bytes: Option<usize>,
    max_data_bytes: Option<usize>,
    task_retention: Option<usize>,
    park_grace_secs: Option<u64>,
    ask_timeout_secs: Option<u64>,
    hook_timeout_secs: Option<u64>,
    spawn_timeout_secs: Option<u64>,
    ping_interval_secs: Option<u64>,
    session_idle_secs: Option<u64>,
    max_unacked_frames: Option<usize>,
    drain_secs: Option<u64>,
    cors_origins: Option<Vec<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    auth_failure_budget: Option<u32>,
    auth_failure_window_secs: Option<u64>,
}

/// Where state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Blueprints in a git store and data outputs in SQLite under this directory.
    Dir(PathBuf),
    /// Everything in memory.
    Ephemeral,
}

/// Time limits of operator sessions.
#[derive(Debug, Clone)]
pub struct OperatorTimeouts {
    /// How long requests park while no stream is attached.
    pub park_grace: Duration,
    /// Reply deadline of `ask`.
    pub ask: Duration,
    /// Reply deadline of `hook_before`.
    pub hook: Duration,
    /// Reply deadline of `spawn`.
    pub spawn: Duration,
    /// Interval of app-level pings.
    pub ping_interval: Duration,
    /// How long a session without a stream lives.
    pub idle_horizon: Duration,
    /// Unacknowledged frames a session may hold.
    pub max_unacked: usize,
}

impl Default for OperatorTimeouts {
    fn default() -> Self {
        Self {
            park_grace: Duration::from_secs(60),
            ask: Duration::from_secs(3600),
            hook: Duration::from_secs(300),
            spawn: Duration::from_secs(3600),
            ping_interval: Duration::from_secs(15),
            idle_horizon: Duration::from_secs(86_400),
            max_unacked: crate::operator::DEFAULT_MAX_UNACKED,
        }
    }
}

/// PEM files of TLS; the server reloads `cert` and `key` when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf.
    pub key: PathBuf,
    /// CA certificates client certificates must chain to (mTLS); `None` = no client auth.
    pub client_ca: Option<PathBuf>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub bind: SocketAddr,
    /// State location.
    pub storage: Storage,
    /// API token for Task and Blueprint RPCs, if required.
    pub api_token: Option<String>,
    /// Secret signing worker tokens; `None` = random per process.
    pub token_secret: Option<Vec<u8>>,
    /// gRPC message size limit in bytes.
    pub max_message_bytes: usize,
    /// Data-plane payload limit in bytes.
    pub max_data_bytes: usize,
    /// Finished tasks kept in memory.
    pub task_retention: usize,
    /// Operator session limits.
    pub operator: OperatorTimeouts,
    /// Allowed browser origins for gRPC-Web.
    pub cors_origins: Vec<String>,
    /// TLS on every door; `None` = plaintext.
    pub tls: Option<TlsFiles>,
    /// The brake on failed credential checks per client address.
    pub brake: BrakeLimits,
    /// How long shutdown waits for running tasks and open streams before aborting them.
    pub drain: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 7777)),
            storage: Storage::Ephemeral,
            api_token: None,
            token_secret: None,
            max_message_bytes: 4 * 1024 * 1024,
            max_data_bytes: 1024 * 1024,
            task_retention: 10_000,
            operator: OperatorTimeouts::default(),
            cors_origins: Vec::new(),
            tls: None,
            brake: BrakeLimits::default(),
            drain: Duration::from_secs(5),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read or parsed.
    #[error("config file {path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// A value is malformed.
    #[error("{key}: {why}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

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
        let storage = if ephemeral {
            Storage::Ephemeral
        } else {
            Storage::Dir(
                args.data_dir
                    .clone()
                    .or(file.data_dir)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            )
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
        let config = Config {
            bind,
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
            tls,
            brake,
            drain: secs(args.drain_secs, file.drain_secs, defaults.drain),
        };
        config.check_exposure()?;
        Ok(config)
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

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
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
}
