//! A v0.1.0 client: only routes and JSON that mlua-swarm-server 0.1.0 speaks
//! (`docs/COMPAT.md`): operator login, a Blueprint stored with `POST /v1/blueprints/{id}`,
//! the blocking `POST /v1/tasks`, the JSON WebSocket operator and the worker's HTTP routes.
//! B0 drives our server and the original one with it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::clients::{self, BoxError};

/// The keep-alive HTTP/1.1 client every B0 call goes through (a pool of connections).
pub(crate) fn http_client() -> Result<reqwest::Client, BoxError> {
    Ok(reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// An operator logged in over HTTP, its WebSocket attached, and a stored one-step
/// Blueprint routed to its role.
pub(crate) struct LegacySeat {
    http: reqwest::Client,
    base: String,
    bp_id: String,
    sid: String,
    token: String,
    stop: Arc<AtomicBool>,
    op: JoinHandle<Result<(), BoxError>>,
}

impl LegacySeat {
    /// Logs in at the server at `addr` (host:port), stores the Blueprint, attaches the
    /// WebSocket operator; returns once the server reports it connected.
    pub(crate) async fn open(addr: &str, http: &reqwest::Client) -> Result<Self, BoxError> {
        let base = format!("http://{addr}");
        let role = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let login: Value = http
            .post(format!("{base}/v1/operators"))
            .json(&json!({ "roles": [role] }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let field = |k: &str| login[k].as_str().map(str::to_string);
        let (Some(sid), Some(token)) = (field("sid"), field("token")) else {
            return Err(format!("login answered {login}").into());
        };
        let bp_id = format!("b0-{}", uuid::Uuid::new_v4().simple());
        http.post(format!("{base}/v1/blueprints/{bp_id}"))
            .json(&clients::operator_blueprint(&bp_id, &role))
            .send()
            .await?
            .error_for_status()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (h, b) = (http.clone(), base.clone());
        let work = move |spawn: Value| worker(h.clone(), b.clone(), spawn);
        let op = tokio::spawn(clients::ws_operator(
            addr.to_string(),
            sid.clone(),
            token.clone(),
            work,
            stop.clone(),
        ));
        let seat = LegacySeat {
            http: http.clone(),
            base,
            bp_id,
            sid,
            token,
            stop,
            op,
        };
        seat.wait_connected().await?;
        Ok(seat)
    }

    /// Polls `GET /v1/operators/{sid}` until it says connected, for 10 s at most.
    async fn wait_connected(&self) -> Result<(), BoxError> {
        let url = format!("{}/v1/operators/{}", self.base, self.sid);
        let limit = Duration::from_secs(10);
        clients::poll_until(limit, "the WebSocket operator did not attach", || async {
            let info: Value = self
                .http
                .get(&url)
                .bearer_auth(&self.token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            Ok(info["connected"] == true)
        })
        .await
    }

    /// The URL and body of a `POST /v1/tasks` of the seat's Blueprint (its latest version).
    pub(crate) fn task(&self) -> (String, Value) {
        let body = json!({
            "blueprint": {"kind": "id", "id": self.bp_id},
            "init_ctx": {"input": "x"},
        });
        (format!("{}/v1/tasks", self.base), body)
    }

    /// Stops the operator and logs out (`DELETE /v1/operators/{sid}`).
    pub(crate) async fn close(self) -> Result<(), BoxError> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.op.await;
        self.http
            .delete(format!("{}/v1/operators/{}", self.base, self.sid))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

/// One `POST /v1/tasks` (it blocks until the flow ends); anything but a 200 carrying a
/// `final_ctx` is an error.
pub(crate) async fn run_task(
    http: reqwest::Client,
    url: Arc<str>,
    body: Arc<Value>,
) -> Result<(), BoxError> {
    let resp = http.post(&*url).json(&*body).send().await?;
    let status = resp.status();
    let out: Value = resp.json().await?;
    if !status.is_success() || out.get("final_ctx").is_none() {
        return Err(format!("POST /v1/tasks answered {status}: {out}").into());
    }
    Ok(())
}

/// The sub-agent's part of a spawn: `GET /v1/worker/prompt` with the worker handle,
/// `POST /v1/worker/result` with the capability token. Bodies are read to the end so the
/// keep-alive connections are reused.
async fn worker(http: reqwest::Client, base: String, spawn: Value) -> Result<(), BoxError> {
    let (Some(step), Some(cap)) = (
        spawn["task_id"].as_str(),
        spawn["capability_token"].as_str(),
    ) else {
        return Err(format!("spawn without task_id or capability_token: {spawn}").into());
    };
    let handle = spawn["worker_handle"].as_str().unwrap_or(cap);
    let prompt =
        reqwest::Url::parse_with_params(&format!("{base}/v1/worker/prompt"), [("task_id", step)])?;
    http.get(prompt)
        .bearer_auth(handle)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    http.post(format!("{base}/v1/worker/result"))
        .bearer_auth(cap)
        .json(&json!({"task_id": step, "value": "ok", "ok": true}))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    Ok(())
}
