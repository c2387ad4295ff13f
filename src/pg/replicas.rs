//! This replica (`--replica-id`) in the `replicas` table: a row stamped with the database's `now()` every
//! [`HEARTBEAT`], so replicas' clocks never matter. This phase runs one replica per
//! database; a boot that finds another live one says so (its running tasks would be
//! taken for interrupted ones here). Claims and takeover read the same rows later.

use std::time::Duration;

use deadpool_postgres::Pool;

/// How often the row is stamped.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A replica silent this long is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(15);

/// Registers `id`, warns about other live replicas, and stamps the row every
/// [`HEARTBEAT`] until the process ends (a failed stamp is logged; the next one retries).
pub async fn join(pool: &Pool, id: &str) -> Result<(), crate::error::Error> {
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
    if !others.is_empty() {
        let ids: Vec<String> = others.iter().map(|r| r.get(0)).collect();
        tracing::warn!(
            replica = id,
            others = ?ids,
            "another server uses this database; this version keeps one per database (its \
             running tasks would be resumed here after a restart of this one)"
        );
    }
    let (pool, id) = (pool.clone(), id.to_string());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.tick().await;
        loop {
            tick.tick().await;
            let stamped = async {
                let client = super::client(&pool).await?;
                client
                    .execute(
                        "UPDATE replicas SET heartbeat_at = now() WHERE id = $1",
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
