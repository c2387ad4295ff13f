//! PostgreSQL, the system of record behind `--database-url`: the URL (never shown with
//! its password), a connection pool, the embedded schema applied at start, and the
//! mapping of its errors. The engine's and the operator core's Postgres stores import
//! this module; it imports nothing of the crate but [`crate::error`].

pub mod replicas;
mod schema;
mod url;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

pub use schema::SCHEMA_VERSION;
pub use url::DatabaseUrl;

use crate::error::Error;

/// Connections a process keeps open at most.
const POOL_SIZE: usize = 16;
/// How long a caller waits for a connection (and a new connection for its handshake).
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// Idle time before TCP keepalives probe a connection.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// The pool of `url`: the one this process already opened, or a new one (see [`open`]).
/// The engine and the operator core share it, and the schema is checked once.
pub async fn connect(url: &DatabaseUrl) -> Result<Pool, Error> {
    static POOLS: OnceLock<tokio::sync::Mutex<HashMap<String, Pool>>> = OnceLock::new();
    let mut pools = POOLS.get_or_init(Default::default).lock().await;
    if let Some(pool) = pools.get(url.expose()) {
        return Ok(pool.clone());
    }
    let pool = open(url).await?;
    pools.insert(url.expose().to_string(), pool.clone());
    Ok(pool)
}

/// Opens a pool on `url`, checks the database answers, and applies the embedded schema.
/// Fails with a message naming the database (without its password) and what to fix.
async fn open(url: &DatabaseUrl) -> Result<Pool, Error> {
    let mut config: tokio_postgres::Config = url.expose().parse().map_err(|e| {
        Error::InvalidArgument(format!(
            "database_url: {url} is not a PostgreSQL URL like postgres://user@host:5432/db ({e})"
        ))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_WAIT);
    }
    // A silent network (no reset) is noticed in about a minute, not the kernel's hours.
    config.keepalives_idle(KEEPALIVE_IDLE);
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_WAIT))
        .create_timeout(Some(CONNECT_WAIT))
        .build()
        .map_err(|e| Error::Internal(format!("database pool: {e}")))?;
    let mut client = pool.get().await.map_err(|e| {
        Error::Unavailable(format!(
            "cannot reach the database {url}: {}; start PostgreSQL or fix --database-url",
            pool_reason(&e)
        ))
    })?;
    schema::migrate(&mut client).await.map_err(|e| match e {
        Error::Unavailable(why) | Error::Internal(why) => {
            Error::Unavailable(format!("cannot prepare the database {url}: {why}"))
        }
        other => other,
    })?;
    Ok(pool)
}

/// A connection from `pool`; UNAVAILABLE when the database cannot be reached.
pub async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, Error> {
    pool.get()
        .await
        .map_err(|e| Error::Unavailable(format!("database unavailable: {}", pool_reason(&e))))
}

/// A failed statement as a domain error: a lost or refused connection is UNAVAILABLE
/// (retry), anything else INTERNAL (logged under a ref id).
pub fn error(what: &str, e: &tokio_postgres::Error) -> Error {
    if is_transient(e) {
        Error::Unavailable(format!("database unavailable ({what}): {}", reason(e)))
    } else {
        Error::Internal(format!("database ({what}): {}", reason(e)))
    }
}

/// True for a failure a retry may cure: the connection is gone, or the server is
/// shutting down, starting or out of connections.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Class 08 (connection exception), 57P (operator intervention: shutdown,
        // cannot connect now), 53300 (too many connections), 40001 / 40P01
        // (serialization failure, deadlock: the transaction may simply be run again).
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c.starts_with("57P") || c == "53300" || c.starts_with("40")
        }
        // No SQLSTATE: an I/O error on the socket.
        None => true,
    }
}

/// A connection failure as a domain error (for a pool checkout done by hand).
pub fn pool_error(e: &deadpool_postgres::PoolError) -> Error {
    Error::Unavailable(format!("database unavailable: {}", pool_reason(e)))
}

/// The server's message with its detail, or the error and its source.
fn reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

fn pool_reason(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => reason(e),
        deadpool_postgres::PoolError::Timeout(_) => {
            format!("no connection within {} s", CONNECT_WAIT.as_secs())
        }
        other => other.to_string(),
    }
}

/// Our counts and times are `u64`; Postgres integers are signed, and ours fit.
pub fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The other way: a stored integer, never negative.
pub fn uint(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
