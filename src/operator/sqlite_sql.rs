//! The SQL of the durable session store (`sessions.sqlite`): its schema, how a row
//! decodes, and each operation's statements inside the transaction the store opens.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::notes::{from_unix_ms, unix_ms, Note};
use super::outbox::Marks;
use super::store::{Claim, SessionRecord, DELETED_KEPT};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    roles TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    acked INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    deleted_ms INTEGER
);
CREATE TABLE IF NOT EXISTS roles (
    role TEXT PRIMARY KEY,
    sid TEXT NOT NULL
);
";

pub(super) const COLUMNS: &str =
    "sid, token_hash, roles, epoch, last_seq, acked, created_ms, last_seen_ms, deleted_ms";

pub(super) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(super) fn decode(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    let roles: String = row.get(2)?;
    let roles: Vec<String> = serde_json::from_str(&roles).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(SessionRecord {
        sid: row.get(0)?,
        token_hash: row.get(1)?,
        roles,
        epoch: to_u64(row.get(3)?),
        marks: Marks {
            last_seq: to_u64(row.get(4)?),
            acked: to_u64(row.get(5)?),
        },
        created_at: from_unix_ms(row.get(6)?),
        last_seen: from_unix_ms(row.get(7)?),
        deleted_at: row.get::<_, Option<i64>>(8)?.map(from_unix_ms),
    })
}

fn is_sid(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<bool> {
    tx.query_row("SELECT 1 FROM sessions WHERE sid = ?1", [name], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
}

pub(super) fn held(tx: &Transaction<'_>, roles: &[String]) -> rusqlite::Result<Vec<String>> {
    let mut out = Vec::new();
    for role in roles {
        let found = tx
            .query_row("SELECT 1 FROM roles WHERE role = ?1", [role], |_| Ok(()))
            .optional()?;
        if found.is_some() {
            out.push(role.clone());
        }
    }
    Ok(out)
}

pub(super) fn create_tx(
    tx: &Transaction<'_>,
    r: &SessionRecord,
) -> rusqlite::Result<Option<Claim>> {
    if is_sid(tx, &r.sid)? {
        return Ok(None);
    }
    for role in &r.roles {
        if is_sid(tx, role)? {
            return Ok(Some(Claim::RoleIsSid));
        }
    }
    let taken = held(tx, &r.roles)?;
    if !taken.is_empty() {
        return Ok(Some(Claim::Held(taken)));
    }
    let roles = serde_json::to_string(&r.roles).unwrap_or_else(|_| "[]".into());
    tx.execute(
        &format!("INSERT INTO sessions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL)"),
        params![
            r.sid,
            r.token_hash,
            roles,
            to_i64(r.epoch),
            to_i64(r.marks.last_seq),
            to_i64(r.marks.acked),
            unix_ms(r.created_at),
            unix_ms(r.last_seen),
        ],
    )?;
    for role in &r.roles {
        tx.execute(
            "INSERT INTO roles (role, sid) VALUES (?1, ?2)",
            params![role, r.sid],
        )?;
    }
    Ok(Some(Claim::Claimed))
}

pub(super) fn delete_tx(
    tx: &Transaction<'_>,
    sid: &str,
    now_ms: i64,
) -> rusqlite::Result<Option<SessionRecord>> {
    let select = format!("SELECT {COLUMNS} FROM sessions WHERE sid = ?1 AND deleted_ms IS NULL");
    let Some(mut record) = tx.query_row(&select, [sid], decode).optional()? else {
        return Ok(None);
    };
    tx.execute("DELETE FROM roles WHERE sid = ?1", [sid])?;
    tx.execute(
        "UPDATE sessions SET deleted_ms = ?2 WHERE sid = ?1",
        params![sid, now_ms],
    )?;
    // Keep the newest DELETED_KEPT tombstones; their sids stay reserved.
    tx.execute(
        "DELETE FROM sessions WHERE deleted_ms IS NOT NULL AND sid NOT IN \
         (SELECT sid FROM sessions WHERE deleted_ms IS NOT NULL \
          ORDER BY deleted_ms DESC, rowid DESC LIMIT ?1)",
        [to_i64(DELETED_KEPT as u64)],
    )?;
    record.deleted_at = Some(from_unix_ms(now_ms));
    Ok(Some(record))
}

pub(super) fn write_notes(
    tx: &Transaction<'_>,
    notes: &HashMap<String, Note>,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "UPDATE sessions SET epoch = MAX(epoch, ?2), last_seq = MAX(last_seq, ?3), \
         acked = MAX(acked, ?4), last_seen_ms = MAX(last_seen_ms, ?5) \
         WHERE sid = ?1 AND deleted_ms IS NULL",
    )?;
    for (sid, n) in notes {
        stmt.execute(params![
            sid,
            to_i64(n.epoch),
            to_i64(n.marks.last_seq),
            to_i64(n.marks.acked),
            n.seen_ms,
        ])?;
    }
    Ok(())
}
