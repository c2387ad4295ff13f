//! Property tests of the session core's seq / ack / replay invariants, through its public
//! API: whatever mix of frames, replies, acks and re-attaches, a re-attach delivers exactly
//! the requests still awaited plus every unacknowledged frame, in seq order, and acks never
//! go backwards.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use mlua_swarm_grpc::config::OperatorTimeouts;
use mlua_swarm_grpc::engine::{OperatorBackend, StepContext};
use mlua_swarm_grpc::operator::{ClientFrame, OperatorSession, ServerBody, SessionLimits};
use proptest::prelude::*;
use serde_json::Value;

#[derive(Debug, Clone)]
enum Op {
    /// A frame that needs no reply (hook_after).
    Info,
    /// A request awaiting a reply (hook_before).
    Request,
    /// Reply to the i-th request made so far (may be answered already).
    Reply(usize),
    /// Cumulative ack up to the i-th seq sent so far (clamped).
    Ack(u64),
    /// Re-attach with last_seq = this fraction of the last seq, then read what comes.
    Reattach(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Info),
        3 => Just(Op::Request),
        2 => (0usize..40).prop_map(Op::Reply),
        2 => (0u64..60).prop_map(Op::Ack),
        2 => (0u8..=100).prop_map(Op::Reattach),
    ]
}

fn step(n: usize) -> StepContext {
    StepContext {
        task_id: "task-p".into(),
        step_id: format!("ST-{n}"),
        agent: "a".into(),
        attempt: 1,
    }
}

async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn reattach_replays_exactly_what_is_still_owed(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async move {
            let limits = Arc::new(SessionLimits {
                timeouts: OperatorTimeouts { park_grace: Duration::from_secs(3600), ..OperatorTimeouts::default() },
                base_url: "http://127.0.0.1:1".into(),
                max_unacked: 10_000,
                size: mlua_swarm_grpc::limits::SizePolicy::new(4 << 20, 1 << 20),
            });
            let session = OperatorSession::new("op-p".into(), vec![], limits);
            let mut attachment = session.attach(0).expect("attach");
            let _welcome = attachment.next_frame().await;
            // Every frame the server ever sent, by seq, and the req_id of requests.
            let mut sent: BTreeMap<u64, ServerBody> = BTreeMap::new();
            let mut requests: Vec<String> = Vec::new();
            let mut answered: BTreeSet<String> = BTreeSet::new();
            let mut acked = 0u64;
            let mut n = 0usize;
            for op in ops {
                match op {
                    Op::Info => {
                        session.hook_after(step(n), Value::Null).await;
                        n += 1;
                    }
                    Op::Request => {
                        let s = session.clone();
                        let st = step(n);
                        tokio::spawn(async move { let _ = s.hook_before(st).await; });
                        n += 1;
                        settle().await;
                    }
                    Op::Reply(i) => {
                        if let Some(req_id) = requests.get(i).cloned() {
                            session.handle(ClientFrame::HookAck { req_id: req_id.clone(), ok: true, reason: None });
                            answered.insert(req_id);
                            settle().await;
                        }
                    }
                    Op::Ack(seq) => {
                        session.handle(ClientFrame::Ack { seq });
                    }
                    Op::Reattach(pct) => {
                        let last = session.info().last_seq;
                        let last_seq = last * u64::from(pct) / 100;
                        attachment = session.attach(last_seq).expect("re-attach");
                        let _welcome = attachment.next_frame().await;
                    }
                }
                // Read whatever is ready now on the current attachment.
                let before = acked;
                acked = session.info().acked_seq;
                prop_assert!(acked >= before, "ack went backwards: {before} -> {acked}");
                let mut got = Vec::new();
                while let Some(Some(f)) = attachment.next_frame().now_or_never() {
                    if f.seq > 0 {
                        got.push(f);
                    }
                }
                for f in &got {
                    if let ServerBody::HookBefore { req_id, .. } = &f.body {
                        if !requests.contains(req_id) {
                            requests.push(req_id.clone());
                        }
                    }
                    if let Some(prev) = sent.get(&f.seq) {
                        prop_assert_eq!(prev, &f.body, "seq {} changed meaning", f.seq);
                    }
                    sent.insert(f.seq, f.body.clone());
                    // A frame at or below the ack comes again only while its request is owed.
                    if f.seq <= acked {
                        let owed = matches!(&f.body, ServerBody::HookBefore { req_id, .. } if !answered.contains(req_id));
                        prop_assert!(owed, "frame {} re-sent after ack {acked} though nothing is owed", f.seq);
                    }
                }
                // Within one read, frames come in seq order per group.
                let above: Vec<u64> = got.iter().map(|f| f.seq).filter(|s| *s > acked).collect();
                prop_assert!(above.windows(2).all(|w| w[0] < w[1]), "unacked frames out of order: {above:?}");
            }
            // Finally: a fresh attach owes exactly every unacked frame and every unanswered request.
            let last = session.info().last_seq;
            let mut fin = session.attach(acked).expect("final attach");
            let _welcome = fin.next_frame().await;
            let mut replay = BTreeSet::new();
            while let Some(Some(f)) = fin.next_frame().now_or_never() {
                if f.seq > 0 {
                    prop_assert!(replay.insert(f.seq), "seq {} delivered twice in one replay", f.seq);
                }
            }
            let owed_above: BTreeSet<u64> = (acked + 1..=last).collect();
            prop_assert!(owed_above.is_subset(&replay), "lost unacked frames: {:?}", owed_above.difference(&replay).collect::<Vec<_>>());
            let info = session.info();
            prop_assert_eq!(info.last_seq, last);
            Ok(())
        })?;
    }
}
