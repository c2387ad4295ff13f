//! This replica (`--replica-id`) in the `replicas` table: a row stamped with the
//! database's `now()` every [`HEARTBEAT`], so replicas' clocks never matter. A replica
//! silent for [`DEAD_AFTER`] is dead: the others take over its tasks (the task store's
//! leases). A replica that leaves (shutdown) marks itself dead at once.

use std::time::Duration;

use deadpool_postgres::Pool;

/// How often the row is stamped.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A replica silent this long is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(15);

/// Registers replica `id`, warns about other live replicas unless the database is
/// `shared` on purpose, and stamps the row every [`HEARTBEAT`] until the process ends (a failed
/// stamp is logged; the next one retries).
pub async fn join(pool: &Pool, id: &str, shared: bool) -> Result<(), crate::error::Error> {
    let client = super::client(pool).await?;
    let fail = |e: tokio_postgres::Error| super::error("replicas", &e);
    client
        .execute(
            "INSERT INTO replicas (id) VALUES ($1) ON CONFLICT (id) DO UPDATE \
             SET started_at = now(), heartbeat_at = now(), draining = false",
            &[&id],
        )
        .await
        .map_err(fail)?;
    let others = client
        .query(
            "SELECT id FROM replicas WHERE id <> $1 \
             AND heartbeat_at > now() - make_interval(secs => $2)",
            &[&id, &(DEAD_AFTER.as_secs_f64())],
        )
        .await
        .map_err(fail)?;
    drop(client);
    let ids: Vec<String> = others.iter().map(|r| r.get(0)).collect();
    if !ids.is_empty() && !shared {
        tracing::warn!(
            replica = id,
            others = ?ids,
            "another server uses this database without --nats-url: each takes every \
             unfinished task at its boot; run replicas with --nats-url to share one"
        );
    }
    tracing::info!(
        replica = id,
        live_others = ids.len(),
        "replica registered in the database"
    );
    let (pool, id) = (pool.clone(), id.to_string());
    // The heartbeat runs on its own task: a busy runtime delays it, never skips it.
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.tick().await;
        loop {
            tick.tick().await;
            let stamped = async {
                let client = super::client(&pool).await?;
                client
                    .execute(
                        "UPDATE replicas SET heartbeat_at = now() WHERE id = $1 AND NOT draining",
                        &[&id],
                    )
                    .await
                    .map_err(|e| super::error("replicas", &e))
            };
            if let Err(e) = stamped.await {
                tracing::warn!(replica = %id, error = %e, "heartbeat not stamped");
            }
        }
    });
    Ok(())
}

/// Marks `id` dead now (a shutdown that interrupted its runs): the other replicas take
/// over its unfinished tasks on their next tick rather than after [`DEAD_AFTER`].
pub async fn leave(pool: &Pool, id: &str) -> Result<(), crate::error::Error> {
    let client = super::client(pool).await?;
    client
        .execute(
            "UPDATE replicas SET heartbeat_at = '-infinity', draining = true WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(|e| super::error("replicas", &e))
        .map(drop)
}
