//! The TOML config file: the flags' keys (with underscores), every one optional, unknown
//! keys refused.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// The TOML file: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) bind: Option<String>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) ephemeral: Option<bool>,
    pub(super) database_url: Option<String>,
    pub(super) api_token: Option<String>,
    pub(super) token_secret: Option<String>,
    pub(super) max_message_bytes: Option<usize>,
    pub(super) max_data_bytes: Option<usize>,
    pub(super) task_retention: Option<usize>,
    pub(super) resume_interrupted: Option<String>,
    pub(super) park_grace_secs: Option<u64>,
    pub(super) ask_timeout_secs: Option<u64>,
    pub(super) hook_timeout_secs: Option<u64>,
    pub(super) spawn_timeout_secs: Option<u64>,
    pub(super) ping_interval_secs: Option<u64>,
    pub(super) session_idle_secs: Option<u64>,
    pub(super) max_unacked_frames: Option<usize>,
    pub(super) drain_secs: Option<u64>,
    pub(super) cors_origins: Option<Vec<String>>,
    pub(super) public_url: Option<String>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) tls_client_ca: Option<PathBuf>,
    pub(super) auth_failure_budget: Option<u32>,
    pub(super) auth_failure_window_secs: Option<u64>,
    pub(super) metrics_bind: Option<String>,
    pub(super) no_metrics: Option<bool>,
    pub(super) nats_url: Option<String>,
    pub(super) replica_id: Option<String>,
}

/// Reads and parses the file at `path`.
pub(super) fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
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

    fn write(text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mse-file-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("c.toml");
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn keys_are_read_and_absent_ones_stay_unset() {
        let path = write("task_retention = 7\ncors_origins = [\"https://a\"]\n");
        let file = read_file(&path).expect("parses");
        assert_eq!(file.task_retention, Some(7));
        assert_eq!(file.cors_origins, Some(vec!["https://a".to_string()]));
        assert_eq!(file.bind, None);
    }

    #[test]
    fn a_missing_file_or_a_wrong_type_names_the_file() {
        let missing = PathBuf::from("/nonexistent/mse.toml");
        let err = read_file(&missing).expect_err("missing").to_string();
        assert!(err.contains("/nonexistent/mse.toml"), "{err}");
        let path = write("task_retention = \"many\"\n");
        let err = read_file(&path).expect_err("wrong type").to_string();
        assert!(
            err.contains("c.toml") && err.contains("task_retention"),
            "{err}"
        );
    }
}
