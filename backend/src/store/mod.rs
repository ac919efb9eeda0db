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

impl Db {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Self::connect_sqlite(url).await,
            "postgres" | "postgresql" => Self::connect_postgres(url).await,
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

    async fn connect_postgres(url: &str) -> anyhow::Result<Self> {
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .context("cannot connect to PostgreSQL")?;
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
    pub async fn server_key(&self, given: Option<&str>) -> anyhow::Result<Vec<u8>> {
        use base64::Engine;
        if let Some(b64) = given {
            let key = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .context("HERMOD_SERVER_KEY is not base64")?;
            anyhow::ensure!(key.len() >= 32, "HERMOD_SERVER_KEY must hold at least 32 bytes");
            return Ok(key);
        }
        let fresh: [u8; 32] = rand::random();
        sqlx::query(
            "INSERT INTO server_keys (name, secret, created_at) VALUES ('root', $1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(fresh.to_vec())
        .bind(now_ms())
        .execute(&self.write)
        .await?;
        let row: AnyRow = sqlx::query("SELECT secret FROM server_keys WHERE name = 'root'")
            .fetch_one(&self.write)
            .await?;
        Ok(row.try_get::<Vec<u8>, _>(0)?)
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
        tracing::error!(error = %e, "database error");
        hermod_shared::ErrorCode::Internal.into()
    }
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
