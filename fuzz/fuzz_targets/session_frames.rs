//! ClientFrame handling in the session core: any sequence of client frames and
//! re-attaches, against a session with requests in flight, must never panic, and a
//! re-attach must never lose an unacknowledged frame.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use libfuzzer_sys::fuzz_target;
use mlua_swarm_grpc::config::OperatorTimeouts;
use mlua_swarm_grpc::engine::{OperatorBackend, StepContext};
use mlua_swarm_grpc::operator::{ClientFrame, OperatorSession, SessionLimits};
use serde_json::Value;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn step(n: u8) -> StepContext {
    StepContext {
        task_id: "task-f".into(),
        step_id: format!("ST-{n}"),
        agent: "a".into(),
        attempt: 1,
    }
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let limits = Arc::new(SessionLimits {
            // A short grace: every session's parking watchdog ends within the run, so
            // timers do not pile up across inputs.
            timeouts: OperatorTimeouts {
                park_grace: Duration::from_millis(1),
                ..OperatorTimeouts::default()
            },
            base_url: "http://127.0.0.1:1".into(),
            max_unacked: 64,
            size: mlua_swarm_grpc::limits::SizePolicy::new(4 << 20, 1 << 20),
        });
        let session = OperatorSession::new("op-f".into(), vec![], limits);
        let mut attachment = session.attach(0).expect("first attach");
        let mut req_ids: Vec<String> = Vec::new();
        let mut waiting = Vec::new();
        for (i, chunk) in data.chunks(3).enumerate() {
            let [kind, a, b] = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let req = |idx: u8| {
                req_ids
                    .get(usize::from(idx) % req_ids.len().max(1))
                    .cloned()
                    .unwrap_or_else(|| format!("bogus-{idx}"))
            };
            let frame = match kind % 10 {
                0 => {
                    let s = session.clone();
                    waiting.push(tokio::spawn(async move { s.hook_before(step(a)).await.is_ok() }));
                    None
                }
                1 => {
                    session.hook_after(step(a), Value::from(b)).await;
                    None
                }
                2 => Some(ClientFrame::Ack { seq: u64::from(a) * 3 + u64::from(b) }),
                3 => Some(ClientFrame::Pong { nonce: u64::from(a) }),
                4 => Some(ClientFrame::HookAck { req_id: req(a), ok: b % 2 == 0, reason: None }),
                5 => Some(ClientFrame::Answer { req_id: req(a), value: Value::from(b) }),
                6 => Some(ClientFrame::SpawnAck { req_id: req(a), value: Value::Null, ok: b % 2 == 0, error: None }),
                7 => Some(ClientFrame::Hello { sid: "op-f".into(), last_seq: u64::from(a) }),
                8 => {
                    // Any last_seq, valid or not: an error or a new attachment, never a panic.
                    if let Ok(att) = session.attach(u64::from(a) * 7 + u64::from(b)) {
                        attachment = att;
                    }
                    None
                }
                _ => {
                    if i % 2 == 0 {
                        session.close("closed by fuzz", 0);
                    }
                    None
                }
            };
            if let Some(f) = frame {
                let _ = session.handle(f);
            }
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            while let Some(Some(f)) = attachment.next_frame().now_or_never() {
                if let Some(id) = f.body.req_id() {
                    if !req_ids.iter().any(|r| r == id) {
                        req_ids.push(id.to_string());
                    }
                }
            }
        }
        session.close("done", 0);
        for w in waiting {
            let _ = w.await;
        }
    });
});
