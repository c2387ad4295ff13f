//! Engine sessions as v0.1.0's `/v1/sessions` exposed them: attach an agent with a role
//! and TTL, detach it by the session id (the token's nonce).

use std::time::Duration;

use mlua_swarm::types::{CapToken, Role};

use super::errors::from_engine;
use super::lock;
use super::EngineHost;
use crate::error::{Error, Result};

impl EngineHost {
    /// Attaches `agent_id` with `role` (operator | worker | observer | senior, any case)
    /// for `ttl_secs`; returns the session id.
    pub async fn attach_engine_session(
        &self,
        agent_id: &str,
        role: &str,
        ttl_secs: u64,
    ) -> Result<String> {
        let role = match role.to_ascii_lowercase().as_str() {
            "operator" => Role::Operator,
            "worker" => Role::Worker,
            "observer" => Role::Observer,
            "senior" => Role::Senior,
            other => return Err(Error::InvalidArgument(format!("unknown role: {other}"))),
        };
        let token = self
            .engine
            .attach(agent_id, role, Duration::from_secs(ttl_secs))
            .await
            .map_err(from_engine)?;
        let id = token.nonce.clone();
        lock(&self.engine_sessions).insert(id.clone(), token);
        Ok(id)
    }

    /// Detaches the session `session_id`.
    pub async fn detach_engine_session(&self, session_id: &str) -> Result<()> {
        let token: CapToken = lock(&self.engine_sessions)
            .remove(session_id)
            .ok_or_else(|| Error::NotFound(format!("session: {session_id}")))?;
        self.engine.detach(&token).await.map_err(from_engine)
    }

    /// The Blueprint store's backend name ("git2", "postgres" or "in_memory") and root
    /// directory.
    pub fn blueprint_store_info(&self) -> (&'static str, Option<std::path::PathBuf>) {
        match &self.store_root {
            Some(root) => ("git2", Some(root.clone())),
            None if self.durable => ("postgres", None),
            None => ("in_memory", None),
        }
    }
}
