//! Follows one task: its events from the first to the terminal one, replayed page by page
//! and then live, each event read and sent once.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::watch;

use super::{TaskEvent, TaskStore};
use crate::error::Result;

/// Events read from the store at a time.
const PAGE: usize = 256;

struct Follow {
    store: Arc<dyn TaskStore>,
    task_id: String,
    changed: watch::Receiver<u64>,
    seen: u64,
    buffered: VecDeque<TaskEvent>,
    done: bool,
}

/// A task's events, oldest first, ending after the terminal one (or when the task is
/// dropped, or with the store's error). `changed` must be subscribed before the first
/// read, so no event slips between the read and the wait.
pub(crate) fn follow(
    store: Arc<dyn TaskStore>,
    task_id: String,
    changed: watch::Receiver<u64>,
) -> impl Stream<Item = Result<TaskEvent>> + Send + 'static {
    let start = Follow {
        store,
        task_id,
        changed,
        seen: 0,
        buffered: VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(start, |mut f| async move {
        loop {
            if let Some(event) = f.buffered.pop_front() {
                return Some((Ok(event), f));
            }
            if f.done {
                return None;
            }
            let page = match f.store.events_after(&f.task_id, f.seen, PAGE).await {
                Ok(Some(page)) => page,
                Ok(None) => return None,
                Err(e) => {
                    f.done = true;
                    return Some((Err(e), f));
                }
            };
            if page.is_empty() {
                if f.changed.changed().await.is_err() {
                    return None;
                }
                continue;
            }
            for event in page {
                f.seen = event.seq;
                f.done |= event.kind.is_terminal();
                f.buffered.push_back(event);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use serde_json::Value;

    use super::super::record::running;
    use super::super::{TaskEventKind, TaskRegistry, EVENTS_KEPT};
    use super::*;

    async fn follower(
        reg: &Arc<TaskRegistry>,
        id: &str,
    ) -> impl Stream<Item = Result<TaskEvent>> + Send + 'static {
        let changed = reg.subscribe(id).await.expect("sub").expect("known");
        let store: Arc<dyn TaskStore> = reg.clone();
        follow(store, id.to_string(), changed)
    }

    fn step(i: usize) -> TaskEventKind {
        TaskEventKind::StepDispatched {
            step_id: format!("S{i}"),
            agent: "a".into(),
        }
    }

    #[tokio::test]
    async fn replays_a_long_history_in_order_once_and_ends_after_the_terminal_event() {
        let reg = Arc::new(TaskRegistry::new(10));
        reg.create(running("t")).await.expect("create");
        for i in 0..EVENTS_KEPT - 2 {
            reg.push("t", step(i)).await.expect("push");
        }
        let end = TaskEventKind::Completed {
            final_ctx: Value::Null,
        };
        reg.finish("t", end).await.expect("finish");
        let seqs: Vec<u64> = follower(&reg, "t")
            .await
            .map(|e| e.expect("event").seq)
            .collect()
            .await;
        assert_eq!(seqs, (1..=EVENTS_KEPT as u64).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn follows_live_events_until_the_task_ends() {
        let reg = Arc::new(TaskRegistry::new(10));
        reg.create(running("t")).await.expect("create");
        let mut events = Box::pin(follower(&reg, "t").await);
        let first = events.next().await.expect("started").expect("ok");
        assert!(matches!(first.kind, TaskEventKind::Started { .. }));
        let writer = {
            let reg = reg.clone();
            tokio::spawn(async move {
                reg.push("t", step(1)).await.expect("push");
                let end = TaskEventKind::Cancelled { reason: "r".into() };
                reg.finish("t", end).await.expect("finish");
            })
        };
        let rest: Vec<TaskEvent> = events.map(|e| e.expect("event")).collect().await;
        writer.await.expect("writer");
        assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
        assert!(rest[1].kind.is_terminal());
    }

    #[tokio::test]
    async fn ends_when_the_task_is_dropped_before_the_rest_is_read() {
        let reg = Arc::new(TaskRegistry::new(1));
        reg.create(running("t")).await.expect("create");
        let mut events = Box::pin(follower(&reg, "t").await);
        events.next().await.expect("started").expect("ok");
        let fail = || TaskEventKind::Failed { error: "e".into() };
        reg.finish("t", fail()).await.expect("finish");
        reg.create(running("u")).await.expect("create");
        reg.finish("u", fail()).await.expect("finish");
        assert!(
            reg.get("t").await.expect("get").is_none(),
            "retention dropped t"
        );
        assert!(events.next().await.is_none());
    }
}
