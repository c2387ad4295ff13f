//! Flags for running several replicas (issue 14; docs/SCALE-OUT.md): the NATS server the
//! frame bus uses, and this replica's id.

use rand::RngCore;

use super::ConfigError;

/// The scale-out flags of `serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterFlags {
    /// Carry operator frames between replicas over this NATS server (e.g.
    /// nats://127.0.0.1:4222) [default: off, one replica].
    #[arg(long, env = "MSE_NATS_URL")]
    pub nats_url: Option<String>,
    /// This replica's id on the bus: letters, digits, '-', '_' [default: the host name and
    /// a random suffix].
    #[arg(long, env = "MSE_REPLICA_ID")]
    pub replica_id: Option<String>,
}

/// How this replica meets the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The NATS server of the frame bus; None: one replica, frames stay in process.
    pub nats_url: Option<String>,
    /// This replica's id.
    pub replica_id: String,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            nats_url: None,
            replica_id: default_replica_id(),
        }
    }
}

/// Flags over the file's `nats_url` / `replica_id` keys.
pub(super) fn resolve(
    flags: &ClusterFlags,
    file_url: Option<String>,
    file_replica: Option<String>,
) -> Result<Cluster, ConfigError> {
    let nats_url = flags
        .nats_url
        .clone()
        .or(file_url)
        .filter(|u| !u.trim().is_empty());
    if let Some(url) = &nats_url {
        if !url.starts_with("nats://") && !url.starts_with("tls://") {
            return Err(ConfigError::Invalid {
                key: "nats_url",
                why: format!("'{url}' is not a NATS url like nats://127.0.0.1:4222"),
            });
        }
    }
    let replica_id = match flags.replica_id.clone().or(file_replica) {
        Some(id) if is_subject_token(&id) => id,
        Some(id) => {
            return Err(ConfigError::Invalid {
                key: "replica_id",
                why: format!("'{id}' may hold only letters, digits, '-' and '_'"),
            })
        }
        None => default_replica_id(),
    };
    Ok(Cluster {
        nats_url,
        replica_id,
    })
}

fn is_subject_token(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The host name (other characters as '-') and six random hex digits.
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut suffix = [0u8; 3];
    rand::rngs::OsRng.fill_bytes(&mut suffix);
    let host = if host.is_empty() {
        "replica".into()
    } else {
        host
    };
    format!("{host}-{}", hex::encode(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ids_default_to_the_host_and_refuse_subject_characters() {
        let c = resolve(&ClusterFlags::default(), None, None).expect("defaults");
        assert_eq!(c.nats_url, None);
        assert!(is_subject_token(&c.replica_id), "{}", c.replica_id);
        let flags = ClusterFlags {
            nats_url: Some("nats://127.0.0.1:4222".into()),
            replica_id: Some("r.1".into()),
        };
        assert!(resolve(&flags, None, None).is_err());
        let c = resolve(
            &ClusterFlags::default(),
            Some("nats://h:1".into()),
            Some("r-2".into()),
        )
        .expect("file keys");
        assert_eq!(
            (c.nats_url.as_deref(), c.replica_id.as_str()),
            (Some("nats://h:1"), "r-2")
        );
        assert!(resolve(&ClusterFlags::default(), Some("http://h".into()), None).is_err());
    }
}
