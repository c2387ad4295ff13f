//! B0: the v0.1.0 workload as legacy clients drive it (issue 12): one WebSocket operator,
//! keep-alive HTTP, 16 tasks in flight; per task a `POST /v1/tasks` that blocks to the end,
//! a `spawn` over the WebSocket, the worker's `GET /v1/worker/prompt` and
//! `POST /v1/worker/result`, the `spawn_ack`. Run against our server and against any server
//! speaking the v0.1.0 API, so the two servers' CPU per task compare in one run.

use std::sync::Arc;

use crate::clients::BoxError;
use crate::cpu;
use crate::legacy::{self, LegacySeat};
use crate::measure::measure_n;
use crate::report::Row;
use crate::target::Target;

/// Tasks in flight, as in the measurement.
const IN_FLIGHT: usize = 16;

/// `tasks` v0.1.0 tasks, 16 at a time, on a seat of their own; `baseline` names the row.
pub(super) async fn b0(t: &Target, tasks: usize, baseline: bool) -> Result<Row, BoxError> {
    let http = legacy::http_client()?;
    let seat = LegacySeat::open(&t.addr, &http).await?;
    let (url, body) = seat.task();
    let (url, body): (Arc<str>, _) = (url.into(), Arc::new(body));
    let run = measure_n(IN_FLIGHT, tasks as u64, move |_| {
        legacy::run_task(http.clone(), url.clone(), body.clone())
    });
    let (mut sample, cpu_ms) = cpu::per_task(t.pid, run, |s| s.count).await?;
    seat.close().await?;
    let server = if baseline {
        format!("baseline at {}", t.addr)
    } else {
        "ours".to_string()
    };
    let scenario =
        format!("v0.1.0 workload: 1-step operator task, HTTP + JSON WebSocket, {server}");
    Ok(Row {
        note: format!("{} tasks", sample.count),
        cpu_ms_per_task: cpu_ms,
        ..Row::measured("B0", scenario, IN_FLIGHT, &mut sample)
    })
}
