//! ListTasks pages: newest first, sized by count and by the response budget, continued by
//! an opaque token holding the position of the last task sent.

use std::time::{Duration, UNIX_EPOCH};

use crate::engine::{EngineHost, TaskPosition, TaskRecord, TaskState};
use crate::error::{Error, Result};

/// Tasks a ListTasks page holds when the caller gives no size.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Most tasks a ListTasks page holds.
pub const MAX_PAGE_SIZE: usize = 1000;

/// One page of a task listing.
#[derive(Debug, Clone)]
pub struct TaskPage {
    /// Newest first.
    pub tasks: Vec<TaskRecord>,
    /// Where the next page starts; None on the last page.
    pub next_page_token: Option<String>,
}

impl EngineHost {
    /// One page of tasks, newest first: at most `page_size` (0: 100, capped at 1000), and
    /// fewer where one more would take the page over the response budget.
    pub async fn list_tasks(
        &self,
        state: Option<TaskState>,
        page_size: usize,
        page_token: &str,
    ) -> Result<TaskPage> {
        let page_size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = match page_token.trim() {
            "" => None,
            token => Some(decode_page_token(token)?),
        };
        let candidates = self
            .tasks
            .list(state, after.as_ref(), page_size + 1)
            .await?;
        Ok(fill_page(
            candidates,
            page_size,
            self.size.response_budget(),
        ))
    }
}

/// Takes up to `page_size` of `candidates` (fetched one past it, to tell whether more
/// follow) within `budget` bytes; at least one task, so a page always advances.
fn fill_page(mut candidates: Vec<TaskRecord>, page_size: usize, budget: usize) -> TaskPage {
    let more = candidates.len() > page_size;
    candidates.truncate(page_size);
    let total = candidates.len();
    let mut used = 0;
    let mut tasks = Vec::with_capacity(candidates.len());
    for rec in candidates {
        let len = rec.wire_len();
        if !tasks.is_empty() && used + len > budget {
            break;
        }
        used += len;
        tasks.push(rec);
    }
    let next_page_token = match tasks.last() {
        Some(last) if more || tasks.len() < total => {
            Some(encode_page_token(&TaskPosition::of(last)))
        }
        _ => None,
    };
    TaskPage {
        tasks,
        next_page_token,
    }
}

fn encode_page_token(pos: &TaskPosition) -> String {
    let nanos = pos
        .created_at
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    hex::encode(format!("{nanos}:{}", pos.task_id))
}

fn decode_page_token(token: &str) -> Result<TaskPosition> {
    let bad = || {
        Error::invalid(
            "page_token",
            "not a next_page_token from ListTasks; list again without one",
        )
    };
    let text = hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let (nanos, task_id) = text.split_once(':').ok_or_else(bad)?;
    let nanos: u64 = nanos.parse().map_err(|_| bad())?;
    Ok(TaskPosition {
        created_at: UNIX_EPOCH + Duration::from_nanos(nanos),
        task_id: task_id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::engine::TtlSource;

    fn record(i: u64) -> TaskRecord {
        TaskRecord {
            task_id: format!("task-{i}"),
            state: TaskState::Running,
            final_ctx: None,
            error: None,
            bound_version: None,
            effective_ttl_secs: 1,
            ttl_source: TtlSource::ServerDefault,
            created_at: UNIX_EPOCH + Duration::from_nanos(1_000 + i),
            finished_at: None,
            blueprint_id: "bp".into(),
            operator_sid: None,
            step_ids: VecDeque::new(),
            step_count: 0,
            runs: Vec::new(),
            launch: None,
        }
    }

    #[test]
    fn a_token_round_trips_to_the_same_position_and_garbage_is_refused() {
        let pos = TaskPosition::of(&record(7));
        assert_eq!(
            decode_page_token(&encode_page_token(&pos)).expect("ok"),
            pos
        );
        for bad in ["zz", "6869", &hex::encode("x:task")] {
            let err = decode_page_token(bad).expect_err(bad).to_string();
            assert!(err.contains("page_token"), "{err}");
        }
    }

    #[test]
    fn a_page_stops_at_its_size_or_its_budget_and_says_where_to_go_on() {
        let all: Vec<TaskRecord> = (0..4).map(record).collect();
        let one = all[0].wire_len();
        let last_page = fill_page(all[..2].to_vec(), 3, usize::MAX);
        assert_eq!(last_page.tasks.len(), 2);
        assert_eq!(last_page.next_page_token, None);
        let by_size = fill_page(all.clone(), 3, usize::MAX);
        assert_eq!(by_size.tasks.len(), 3);
        let next = decode_page_token(&by_size.next_page_token.expect("more")).expect("ok");
        assert_eq!(next.task_id, "task-2");
        let by_budget = fill_page(all.clone(), 3, one * 2);
        assert_eq!(by_budget.tasks.len(), 2);
        assert!(by_budget.next_page_token.is_some());
        let tiny = fill_page(all, 3, 1);
        assert_eq!(tiny.tasks.len(), 1, "a page always holds one task");
    }
}
