//! Server configuration: command-line flags > environment variables > TOML file > defaults.
//! The flags ([`ServeArgs`]), the file, and how they resolve into a [`Config`] live in
//! submodules; the engine's settings are derived here and nowhere else.

mod cluster;
mod file;
mod flags;
mod load;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use cluster::{Cluster, ClusterFlags};
pub use flags::{LogFormat, ServeArgs};

use crate::brake::BrakeLimits;
pub use crate::engine::Storage;
use crate::engine::{EngineSettings, ResumeMode};
use crate::limits::SizePolicy;

/// Default listen address.
pub const DEFAULT_BIND: &str = "127.0.0.1:7777";
/// Default data directory (Blueprints in git, data outputs in SQLite).
pub const DEFAULT_DATA_DIR: &str = ".mse-grpc";

/// Time limits of operator sessions; the operator core owns the type, config fills it.
pub use crate::operator::OperatorTimeouts;

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
    /// What boot does with interrupted tasks.
    pub resume: ResumeMode,
    /// Operator session limits.
    pub operator: OperatorTimeouts,
    /// Allowed browser origins for gRPC-Web.
    pub cors_origins: Vec<String>,
    /// What spawn directives tell workers to call; `None` = the bound address.
    pub public_url: Option<String>,
    /// TLS on every door; `None` = plaintext.
    pub tls: Option<TlsFiles>,
    /// The brake on failed credential checks per client address.
    pub brake: BrakeLimits,
    /// How long shutdown waits for running tasks and open streams before aborting them.
    pub drain: Duration,
    /// Whether `/metrics` is served (and metrics recorded).
    pub metrics: bool,
    /// Serve `/metrics` on its own address (open) rather than on `bind` (gated).
    pub metrics_bind: Option<SocketAddr>,
    /// Several replicas: the NATS frame bus and this replica's id.
    pub cluster: Cluster,
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
            resume: ResumeMode::Auto,
            operator: OperatorTimeouts::default(),
            cors_origins: Vec::new(),
            public_url: None,
            tls: None,
            brake: BrakeLimits::default(),
            drain: Duration::from_secs(5),
            metrics: true,
            metrics_bind: None,
            cluster: Cluster::default(),
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

impl From<&Config> for EngineSettings {
    fn from(config: &Config) -> Self {
        EngineSettings {
            storage: config.storage.clone(),
            token_secret: config.token_secret.clone(),
            task_retention: config.task_retention,
            size: SizePolicy::new(config.max_message_bytes, config.max_data_bytes),
            resume: config.resume,
            replica: crate::engine::Replica {
                id: config.cluster.replica_id.clone(),
                shared: config.cluster.nats_url.is_some(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_settings_come_from_the_config() {
        let config = Config {
            storage: Storage::Dir("/d".into()),
            token_secret: Some(vec![1, 2]),
            task_retention: 3,
            max_message_bytes: 1 << 20,
            max_data_bytes: 1 << 30,
            ..Config::default()
        };
        let s = EngineSettings::from(&config);
        assert_eq!(s.storage, config.storage);
        assert_eq!(s.token_secret, Some(vec![1, 2]));
        assert_eq!(s.task_retention, 3);
        assert_eq!(s.size, SizePolicy::new(1 << 20, 1 << 30));
    }
}
