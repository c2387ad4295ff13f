//! The PostgreSQL [`SessionStore`] (`--database-url`): the token's SHA-256, never the
//! token; each role a live session holds is a row of `session_roles`, whose primary key
//! makes the claim unique across every replica sharing the database. Creating a session
//! is one transaction under an advisory lock (sids and roles share one namespace). The
//! hot-path notes are merged in memory and written behind in one statement per batch.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;

use super::notes::{from_unix_ms, unix_ms, Notes};
use super::outbox::Marks;
use super::store::{Claim, SessionRecord, SessionStore, DELETED_KEPT};
use crate::error::{Error, Result};
use crate::pg::{int, uint};

/// Key of the advisory lock session creation takes (any fixed number).
const CREATE_LOCK: i64 = 0x6d73_655f_7365_7373;

const COLUMNS: &str = "sid, token_hash, roles::text, epoch, last_seq, acked, created_ms, \
                       last_seen_ms, deleted_ms";

/// Session records in PostgreSQL.
pub struct PgSessionStore {
    pool: Pool,
    notes: Arc<Notes>,
}

impl std::fmt::Debug for PgSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSessionStore").finish_non_exhaustive()
    }
}

impl PgSessionStore {
    /// The store on `pool` (whose schema `crate::pg::connect` applied). Every stored
    /// session must decode: damaged rows fail the boot here.
    pub async fn open(pool: Pool) -> Result<Self> {
        let store = Self {
            pool,
            notes: Arc::new(Notes::default()),
        };
        store.list().await?;
        spawn_flusher(store.pool.clone(), store.notes.clone());
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        crate::pg::client(&self.pool).await
    }
}

fn db(e: tokio_postgres::Error) -> Error {
    crate::pg::error("operator sessions", &e)
}

fn decode(row: &Row) -> Result<SessionRecord> {
    let roles: Vec<String> = serde_json::from_str(row.get(2))
        .map_err(|e| Error::Internal(format!("session {}: roles: {e}", row.get::<_, &str>(0))))?;
    Ok(SessionRecord {
        sid: row.get(0),
        token_hash: row.get(1),
        roles,
        epoch: uint(row.get(3)),
        marks: Marks {
            last_seq: uint(row.get(4)),
            acked: uint(row.get(5)),
        },
        created_at: from_unix_ms(row.get(6)),
        last_seen: from_unix_ms(row.get(7)),
        deleted_at: row.get::<_, Option<i64>>(8).map(from_unix_ms),
    })
}

async fn select(
    client: &impl GenericClient,
    filter: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<SessionRecord>> {
    let rows = client
        .query(&format!("SELECT {COLUMNS} FROM sessions {filter}"), params)
        .await
        .map_err(db)?;
    rows.iter().map(decode).collect()
}

/// Which of `roles` live sessions hold, in the order asked.
async fn held(client: &impl GenericClient, roles: &[String]) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT role FROM session_roles WHERE role = ANY($1)",
            &[&roles],
        )
        .await
        .map_err(db)?;
    let found: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(roles
        .iter()
        .filter(|r| found.contains(*r))
        .cloned()
        .collect())
}

#[async_trait]
impl SessionStore for PgSessionStore {
    async fn create(&self, r: SessionRecord) -> Result<Claim> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CREATE_LOCK])
            .await
            .map_err(db)?;
        let names: Vec<&str> = std::iter::once(r.sid.as_str())
            .chain(r.roles.iter().map(String::as_str))
            .collect();
        let sids: HashSet<String> = tx
            .query("SELECT sid FROM sessions WHERE sid = ANY($1)", &[&names])
            .await
            .map_err(db)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if sids.contains(&r.sid) {
            return Err(Error::AlreadyExists(format!(
                "operator session {} exists",
                r.sid
            )));
        }
        if !sids.is_empty() {
            return Ok(Claim::RoleIsSid);
        }
        let taken = held(&tx, &r.roles).await?;
        if !taken.is_empty() {
            return Ok(Claim::Held(taken));
        }
        let roles = serde_json::to_string(&r.roles).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "INSERT INTO sessions (sid, token_hash, roles, epoch, last_seq, acked, created_ms, \
             last_seen_ms) VALUES ($1, $2, $3::text::jsonb, $4, $5, $6, $7, $8)",
            &[
                &r.sid,
                &r.token_hash,
                &roles,
                &int(r.epoch),
                &int(r.marks.last_seq),
                &int(r.marks.acked),
                &unix_ms(r.created_at),
                &unix_ms(r.last_seen),
            ],
        )
        .await
        .map_err(db)?;
        tx.execute(
            "INSERT INTO session_roles (role, sid) SELECT unnest($1::text[]), $2",
            &[&r.roles, &r.sid],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Claim::Claimed)
    }

    async fn get(&self, sid: &str) -> Result<Option<SessionRecord>> {
        let client = self.client().await?;
        Ok(select(&client, "WHERE sid = $1", &[&sid]).await?.pop())
    }

    async fn list(&self) -> Result<Vec<SessionRecord>> {
        let client = self.client().await?;
        select(
            &client,
            "WHERE deleted_ms IS NULL ORDER BY created_ms, sid",
            &[],
        )
        .await
    }

    async fn delete(&self, sid: &str) -> Result<Option<SessionRecord>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let live = "WHERE sid = $1 AND deleted_ms IS NULL FOR UPDATE";
        let Some(mut record) = select(&tx, live, &[&sid]).await?.pop() else {
            return Ok(None);
        };
        let now = unix_ms(SystemTime::now());
        tx.execute("DELETE FROM session_roles WHERE sid = $1", &[&sid])
            .await
            .map_err(db)?;
        tx.execute(
            "UPDATE sessions SET deleted_ms = $2 WHERE sid = $1",
            &[&sid, &now],
        )
        .await
        .map_err(db)?;
        // Keep the newest DELETED_KEPT tombstones; their sids stay reserved.
        tx.execute(
            "DELETE FROM sessions WHERE deleted_ms IS NOT NULL AND sid NOT IN \
             (SELECT sid FROM sessions WHERE deleted_ms IS NOT NULL \
              ORDER BY deleted_ms DESC, sid DESC LIMIT $1)",
            &[&int(DELETED_KEPT as u64)],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        record.deleted_at = Some(from_unix_ms(now));
        Ok(Some(record))
    }

    async fn held_roles(&self, roles: &[String]) -> Result<Vec<String>> {
        let client = self.client().await?;
        held(&client, roles).await
    }

    fn record_attach(&self, sid: &str, epoch: u64, at: SystemTime) {
        self.notes.attach(sid, epoch, at);
    }

    fn record_marks(&self, sid: &str, marks: Marks) {
        self.notes.marks(sid, marks);
    }

    fn touch(&self, sid: &str, at: SystemTime) {
        self.notes.touch(sid, at);
    }

    fn outlives_process(&self) -> bool {
        true
    }

    async fn reserve_seqs(&self, sid: &str, upto: u64) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("UPDATE sessions SET last_seq = GREATEST(last_seq, $2) WHERE sid = $1")
            .await
            .map_err(db)?;
        client
            .execute(&stmt, &[&sid, &int(upto)])
            .await
            .map(drop)
            .map_err(db)
    }

    async fn close(&self) {
        self.notes.finish();
        flush(&self.pool, &self.notes).await;
    }
}

impl Drop for PgSessionStore {
    fn drop(&mut self) {
        self.notes.finish();
    }
}

/// Writes the merged notes whenever some arrive, until the store closes or drops.
fn spawn_flusher(pool: Pool, notes: Arc<Notes>) {
    tokio::spawn(async move {
        while notes.next().await {
            flush(&pool, &notes).await;
        }
    });
}

/// Raises the stored notes to what is pending, in one statement. A failure is logged:
/// the notes only rise, and a restored session continues past its reserved seqs.
async fn flush(pool: &Pool, notes: &Notes) {
    let batch = notes.take();
    if batch.is_empty() {
        return;
    }
    let mut sids = Vec::with_capacity(batch.len());
    let (mut epochs, mut seqs, mut acks, mut seen) = (vec![], vec![], vec![], vec![]);
    for (sid, n) in batch {
        sids.push(sid);
        epochs.push(int(n.epoch));
        seqs.push(int(n.marks.last_seq));
        acks.push(int(n.marks.acked));
        seen.push(n.seen_ms);
    }
    let written = async {
        let client = crate::pg::client(pool).await?;
        let stmt = client
            .prepare_cached(
                "UPDATE sessions s SET epoch = GREATEST(s.epoch, x.e), \
                 last_seq = GREATEST(s.last_seq, x.l), acked = GREATEST(s.acked, x.a), \
                 last_seen_ms = GREATEST(s.last_seen_ms, x.m) \
                 FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[]) \
                     AS x(sid, e, l, a, m) \
                 WHERE s.sid = x.sid AND s.deleted_ms IS NULL",
            )
            .await
            .map_err(db)?;
        client
            .execute(&stmt, &[&sids, &epochs, &seqs, &acks, &seen])
            .await
            .map_err(db)
    };
    if let Err(e) = written.await {
        tracing::warn!(error = %e, "session store: attach / ack marks not written");
    }
}
