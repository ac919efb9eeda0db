//! The store: SQLite embedded (the default) or PostgreSQL, chosen by the URL's scheme. Each
//! dialect has its own migrations and, on the hot path, its own statements: SQLite's run on a
//! writer thread with group commit and on reader threads (`sqlite.rs`, `sqlite_writer.rs`),
//! PostgreSQL's are one or two statements a transition. Less frequent work (the admin API,
//! tenants, listings) goes through sqlx's `Any` driver with `$N` parameters on both. Times are
//! unix milliseconds. Nothing here knows of the engine or HTTP above it.

pub mod audit;
pub mod clients;
pub mod commands;
pub mod devices;
pub mod mailbox;
pub mod outbox;
pub mod retention;
pub mod sqlite;
pub mod sqlite_writer;
pub mod tenants;

use anyhow::Context;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A pool for reads and, on SQLite, a one-connection pool for writes: SQLite allows one writer
/// at a time, and queueing writers in-process beats retrying on `SQLITE_BUSY`.
#[derive(Debug, Clone)]
pub struct Db {
    pub read: AnyPool,
    pub write: AnyPool,
    pub dialect: Dialect,
    pub url: String,
    /// On SQLite, the writer thread the hot-path transitions go through (group commit).
    pub sqlite: Option<sqlite_writer::Writer>,
    /// On SQLite, the reader threads the hot-path reads go through.
    pub sqlite_read: Option<sqlite_writer::Readers>,
}

/// Why a receiver gets no more callbacks (its last answer was 410 Gone).
pub const GONE: &str =
    "the receiver answered 410 Gone: callbacks to it are disabled until a recovery or a new callback-url";

/// Set on every connection. WAL itself is persistent in the file.
const PRAGMAS: &str = "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL;";

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How the store reaches a PostgreSQL server (`database.*`).
#[derive(Debug, Clone)]
pub struct PoolLimits {
    pub max_connections: u32,
    /// How long a request waits for a connection before it is answered 503.
    pub acquire_timeout: std::time::Duration,
    /// How long a starting replica waits for its database to come up.
    pub startup_wait: std::time::Duration,
}

impl PoolLimits {
    pub fn from_settings(s: &crate::config::DatabaseSettings) -> Self {
        Self {
            max_connections: s.max_connections,
            acquire_timeout: std::time::Duration::from_secs_f64(s.acquire_timeout),
            startup_wait: std::time::Duration::from_secs_f64(s.startup_wait),
        }
    }
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: std::time::Duration::from_millis(1_500),
            startup_wait: std::time::Duration::from_secs(60),
        }
    }
}

/// Seconds a client is told to wait (`Retry-After`) when the database cannot be reached.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u32 = 2;

/// Whether an error means the database cannot be reached now (down, restarting, out of
/// connections, the connection lost), as opposed to a fault in the request or in Hermod.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 53: insufficient resources (53300 too many
            // connections); 57P01-57P03: the server shuts down or is starting.
            code.starts_with("08") || code.starts_with("53") || matches!(&*code, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// Whether the statement failed because its connection died (the server restarted or the
/// network cut it), so the same statement on a fresh connection may well succeed.
pub fn is_connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02")),
        _ => false,
    }
}

impl Db {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with(url, &PoolLimits::default()).await
    }

    pub async fn connect_with(url: &str, limits: &PoolLimits) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Self::connect_sqlite(url).await,
            "postgres" | "postgresql" => Self::connect_postgres(url, limits).await,
            other => anyhow::bail!("unsupported database scheme {other:?}: use sqlite:// or postgres://"),
        }
    }

    async fn connect_sqlite(url: &str) -> anyhow::Result<Self> {
        // Validate and create the file with the native options, then talk through `Any`.
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .context("invalid sqlite URL")?
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let path = options.get_filename().to_owned();
        // The writer and reader threads each open the file: an in-memory database would be a
        // different one on each connection. (sqlx gives one a file name; the URL tells.)
        anyhow::ensure!(
            !url.contains(":memory:") && !url.contains("mode=memory"),
            "an in-memory SQLite database is not supported: name a file (sqlite://hermod.db)"
        );
        drop(
            sqlx::SqlitePool::connect_with(options)
                .await
                .context("cannot open the SQLite database")?,
        );
        let write = sqlite_pool(url, 1).await?;
        let read = sqlite_pool(url, 8).await?;
        let writer = sqlite_writer::Writer::open(&path).context("cannot open the SQLite writer")?;
        let readers = sqlite_writer::Readers::open(&path, 2).context("cannot open the SQLite readers")?;
        Ok(Self {
            read,
            write,
            dialect: Dialect::Sqlite,
            url: url.to_owned(),
            sqlite: Some(writer),
            sqlite_read: Some(readers),
        })
    }

    /// Connects, waiting for the server with backoff (0.25 s doubling to 5 s) for at most
    /// `startup_wait`: a replica started before its database serves once the database is up.
    async fn connect_postgres(url: &str, limits: &PoolLimits) -> anyhow::Result<Self> {
        let options = AnyPoolOptions::new()
            .max_connections(limits.max_connections)
            .acquire_timeout(limits.acquire_timeout);
        let give_up = std::time::Instant::now() + limits.startup_wait;
        let mut pause = std::time::Duration::from_millis(250);
        let pool = loop {
            match options.clone().connect(url).await {
                Ok(pool) => break pool,
                Err(e) if is_unavailable(&e) && std::time::Instant::now() + pause < give_up => {
                    tracing::warn!(error = %e, retry_in = ?pause, "PostgreSQL is not reachable yet; waiting for it");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(5));
                }
                Err(e) => return Err(e).context("cannot connect to PostgreSQL"),
            }
        };
        Ok(Self {
            read: pool.clone(),
            write: pool,
            dialect: Dialect::Postgres,
            url: url.to_owned(),
            sqlite: None,
            sqlite_read: None,
        })
    }

    /// Begins a write transaction. On SQLite it is `BEGIN IMMEDIATE`: it takes the write lock
    /// first (waiting its turn behind the writer thread), so a transaction that reads and then
    /// writes cannot find its snapshot stale and fail.
    pub async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Any>> {
        match self.dialect {
            Dialect::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.write.begin().await,
        }
    }

    /// Appended to a `SELECT` that is followed by an update in the same transaction. SQLite
    /// needs none: its one writer connection already serialises writers.
    pub fn for_update(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS
                .run(&self.write)
                .await
                .context("applying migrations")?,
            Dialect::Postgres => POSTGRES_MIGRATIONS
                .run(&self.write)
                .await
                .context("applying migrations")?,
        }
        Ok(())
    }

    /// The server key that device secrets and enrolment tokens are derived from: made at first
    /// start, or given (base64) in `HERMOD_SERVER_KEY` so that replicas and the edge share it.
    /// The key an older Hermod kept in the database (in plain text), if it is still there.
    pub async fn legacy_server_key(&self) -> anyhow::Result<Option<Vec<u8>>> {
        let row: Option<AnyRow> = sqlx::query("SELECT secret FROM server_keys WHERE name = 'root'")
            .fetch_optional(&self.write)
            .await?;
        Ok(row.map(|r| r.try_get::<Vec<u8>, _>(0)).transpose()?)
    }

    /// Removes that key once it lives in the key file.
    pub async fn forget_legacy_server_key(&self) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM server_keys WHERE name = 'root'")
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// The SQLite database file, when this is one.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        if self.dialect != Dialect::Sqlite {
            return None;
        }
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&self.url).ok()?;
        Some(options.get_filename().to_path_buf())
    }
}

/// A SQLite pool through `Any`, each connection set up with [`PRAGMAS`].
async fn sqlite_pool(url: &str, connections: u32) -> anyhow::Result<AnyPool> {
    Ok(AnyPoolOptions::new()
        .max_connections(connections)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::Executor::execute(&mut *conn, PRAGMAS).await?;
                Ok(())
            })
        })
        .connect(url)
        .await?)
}

/// A random id with a prefix, for rows that have no protocol id of their own.
pub fn random_id(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}

impl From<sqlx::Error> for crate::domain::error::ApiError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            tracing::warn!(error = %e, "the database is unavailable");
            let mut answer = unavailable();
            answer.connection_lost = is_connection_lost(&e);
            return answer;
        }
        tracing::error!(error = %e, "database error");
        hermod_shared::ErrorCode::Internal.into()
    }
}

/// The answer while the database cannot be reached: 503 with `Retry-After`.
pub fn unavailable() -> crate::domain::error::ApiError {
    crate::domain::error::ApiError::new(
        hermod_shared::ErrorCode::Unavailable,
        "the database is unavailable: retry shortly",
    )
    .with_headers(vec![("Retry-After".into(), UNAVAILABLE_RETRY_AFTER_SECS.to_string())])
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn an_in_memory_sqlite_database_is_refused_with_a_clear_error() {
        for url in ["sqlite::memory:", "sqlite://file.db?mode=memory"] {
            let e = super::Db::connect(url).await.expect_err(url);
            assert!(format!("{e:#}").contains("in-memory"), "{e:#}");
        }
    }
}
