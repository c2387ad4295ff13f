//! The flags of `mse-grpc serve`, each also read from an `MSE_*` environment variable.

use std::path::PathBuf;

use clap::Args;

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
    /// PostgreSQL URL (postgres://user:pass@host:5432/db): tasks, runs, the replay
    /// journal, operator sessions, Blueprints and data outputs live there; --data-dir
    /// keeps only worker handles' boot ids [default: none, all under --data-dir].
    #[arg(long, env = "MSE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
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
    /// What boot does with tasks a restart interrupted: `auto` resumes them (those that
    /// need operator sessions when the sessions attach), `manual` leaves them for
    /// ResumeTask [default: auto].
    #[arg(long, env = "MSE_RESUME_INTERRUPTED")]
    pub resume_interrupted: Option<String>,
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
    /// The URL workers are told to call in a spawn's directive, e.g. a balancer in front
    /// of several replicas (`https://swarm.example.com`) [default: the bound address].
    #[arg(long, env = "MSE_PUBLIC_URL")]
    pub public_url: Option<String>,
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
    /// Serve `/metrics` on this address instead of the main port (open there, as it is
    /// meant for an internal network) [default: on the main port, behind --api-token].
    #[arg(long, env = "MSE_METRICS_BIND")]
    pub metrics_bind: Option<String>,
    /// Export no metrics: no `/metrics` route, no recorder.
    #[arg(long, env = "MSE_NO_METRICS")]
    pub no_metrics: bool,
    /// Export traces over OTLP/gRPC to this collector (e.g. http://127.0.0.1:4317) [default:
    /// off]. Read before the config file, so flag or environment only.
    #[arg(long, env = "MSE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Log line format on stderr: `text` (coloured only on a terminal) or `json` (one object
    /// per line). Read before the config file, so flag or environment only.
    #[arg(long, env = "MSE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Several replicas: `--nats-url`, `--replica-id`.
    #[command(flatten)]
    pub cluster: super::cluster::ClusterFlags,
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn flags_parse_and_cors_origins_split_on_commas() {
        let cli = Cli::try_parse_from([
            "mse-grpc",
            "--bind",
            "127.0.0.1:1",
            "--cors-origin",
            "https://a,https://b",
            "--log-format",
            "json",
            "--ephemeral",
        ])
        .expect("parses");
        assert_eq!(cli.serve.bind.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(cli.serve.cors_origins, vec!["https://a", "https://b"]);
        assert_eq!(cli.serve.log_format, LogFormat::Json);
        assert!(cli.serve.ephemeral);
        assert!(Cli::try_parse_from(["mse-grpc", "--no-such-flag"]).is_err());
    }
}
