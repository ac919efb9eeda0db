//! The callback outbox as stored: a claimed event, and one attempt's record with the event's
//! next state (the PostgreSQL statements; SQLite's are in `sqlite.rs`).

use std::sync::LazyLock;

use super::Db;

/// When the next pending event is due.
pub const NEXT_DUE_SQL: &str =
    "SELECT MIN(CASE WHEN claimed_until > next_attempt_at THEN claimed_until ELSE next_attempt_at END) \
    FROM callback_events WHERE status = 'pending'";

/// Due events, oldest first, none while an older one of its command is pending, none of a
/// receiver or tenant already at its bound: `$1` now, `$2` limit, `$3` and `$4` JSON arrays of
/// the busy clients and tenants. Skipping the busy ones in the query (not after it) is what
/// keeps a hanging receiver's backlog from filling every page of candidates and starving the
/// others. It walks `callback_events_pending`, which holds only pending events.
pub const CANDIDATES_SQL: &str = "SELECT e.id, e.client_pk, e.payload, e.attempts, c.tenant_id, e.created_at FROM callback_events e
     JOIN clients c ON c.id = e.client_pk
     WHERE e.status = 'pending' AND e.next_attempt_at <= $1 AND e.claimed_until <= $1
       AND NOT EXISTS (SELECT 1 FROM callback_events p WHERE p.command_id = e.command_id AND p.status = 'pending' AND p.seq < e.seq)
       AND e.client_pk NOT IN (SELECT value FROM json_each($3))
       AND c.tenant_id NOT IN (SELECT value FROM json_each($4))
     ORDER BY e.seq LIMIT $2";

/// [`CANDIDATES_SQL`] in PostgreSQL's JSON functions.
pub const CANDIDATES_PG_SQL: &str = "SELECT e.id, e.client_pk, e.payload, e.attempts, c.tenant_id, e.created_at FROM callback_events e
     JOIN clients c ON c.id = e.client_pk
     WHERE e.status = 'pending' AND e.next_attempt_at <= $1 AND e.claimed_until <= $1
       AND NOT EXISTS (SELECT 1 FROM callback_events p WHERE p.command_id = e.command_id AND p.status = 'pending' AND p.seq < e.seq)
       AND e.client_pk NOT IN (SELECT jsonb_array_elements_text(CAST($3 AS jsonb)))
       AND c.tenant_id NOT IN (SELECT jsonb_array_elements_text(CAST($4 AS jsonb)))
     ORDER BY e.seq LIMIT $2";

/// An event a worker claimed for one delivery attempt.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    pub id: String,
    pub client_pk: String,
    pub payload: String,
    pub attempts: i64,
    pub tenant_id: String,
    pub created_at: i64,
    /// Until when the claim holds (PostgreSQL), when the claim was taken with the event's
    /// write; 0 when unknown.
    #[sqlx(skip)]
    pub claimed_until: i64,
    /// The receiver as read with the claim, when it was (else it is read before sending).
    #[sqlx(skip)]
    pub receiver: Option<Receiver>,
}

/// Where and how a client's callbacks go.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Receiver {
    pub callback_url: Option<String>,
    pub callback_basic_auth: Option<String>,
    pub callback_secrets: Option<String>,
    pub callback_disabled_at: Option<i64>,
    /// `config` (the operator's file) or `api` (a tenant's).
    pub source: String,
}

/// What happens to an event after an attempt.
#[derive(Debug, Clone)]
pub enum Next {
    Delivered,
    Retry {
        at: i64,
        last_error: Option<String>,
    },
    /// A dead letter; `disable_client` when the receiver answered 410 Gone for the first time.
    Dead {
        last_error: Option<String>,
        disable_client: bool,
    },
}

/// One delivery attempt, to be logged with the event's next state.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub event_id: String,
    pub client_pk: String,
    pub at: i64,
    pub status_code: Option<i64>,
    pub duration_ms: i64,
    pub error: Option<String>,
    /// Attempts made, this one included.
    pub attempts: i64,
    pub next: Next,
}

/// Where a client's callbacks go: `$1` the client.
pub const RECEIVER_SQL: &str =
    "SELECT callback_url, callback_basic_auth, callback_secrets, callback_disabled_at, source FROM clients WHERE id = $1";

pub const INSERT_ATTEMPT: &str =
    "INSERT INTO callback_attempts (event_id, attempted_at, status_code, duration_ms, error) \
     VALUES ($1, $2, $3, $4, $5)";
pub const DELIVERED: &str =
    "UPDATE callback_events SET status = 'delivered', attempts = $1, delivered_at = $2, claimed_until = 0, \
     last_error = NULL WHERE id = $3";
pub const RETRY: &str =
    "UPDATE callback_events SET attempts = $1, next_attempt_at = $2, claimed_until = 0, last_error = $3 WHERE id = $4";
pub const DEAD: &str =
    "UPDATE callback_events SET status = 'dead', attempts = $1, claimed_until = 0, last_error = $2 WHERE id = $3";
/// A receiver answered again after failures: its pending retries (`$2` the client) are due now
/// (`$1`) instead of waiting out their backoff.
pub const BRING_FORWARD: &str = "UPDATE callback_events SET next_attempt_at = $1 \
     WHERE status = 'pending' AND client_pk = $2 AND next_attempt_at > $1";

/// Whether any event of the client (`$1`) created since `$2` was delivered: when none was, a
/// dead letter's receiver failed for the event's whole retry window.
pub const DELIVERED_SINCE: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM callback_events \
     WHERE client_pk = $1 AND created_at >= $2 AND status = 'delivered' LIMIT 1) d";

/// Disables a receiver (`$2`) at `$1` unless it is already; returns the tenant when it did.
pub const DISABLE_FAILING: &str = "UPDATE clients SET callback_disabled_at = $1 \
     WHERE id = $2 AND callback_disabled_at IS NULL RETURNING tenant_id, client_id";

pub const DISABLE_RECEIVER: &str = "UPDATE clients SET callback_disabled_at = $1 WHERE id = $2";

/// Logs an attempt and moves its event on, in one statement (PostgreSQL: one round trip).
pub async fn record(db: &Db, a: &Attempt) -> sqlx::Result<()> {
    let attempt = |sql: &'static str| {
        sqlx::query(sql)
            .bind(&a.event_id)
            .bind(a.at)
            .bind(a.status_code)
            .bind(a.duration_ms)
            .bind(&a.error)
            .bind(a.attempts)
    };
    let query = match &a.next {
        Next::Delivered => attempt(&DELIVERED_PG),
        Next::Retry { at, last_error } => attempt(&RETRY_PG).bind(*at).bind(last_error.clone()),
        Next::Dead {
            last_error,
            disable_client,
        } => attempt(&DEAD_PG)
            .bind(last_error.clone())
            .bind(&a.client_pk)
            .bind(*disable_client),
    };
    query.execute(&db.write).await?;
    Ok(())
}

/// See [`BRING_FORWARD`]; returns how many events moved.
pub async fn bring_forward(db: &Db, client_pk: &str, now: i64) -> sqlx::Result<u64> {
    Ok(sqlx::query(BRING_FORWARD)
        .bind(now)
        .bind(client_pk)
        .execute(&db.write)
        .await?
        .rows_affected())
}

/// The attempt's insert, which each PostgreSQL statement below begins with: `$1` event, `$2`
/// time, `$3` status code, `$4` duration, `$5` error; `$6` is the attempt count. The receiver's
/// answer body is never kept: a tenant must not read what an address answered (SSRF).
const ATTEMPT_PG: &str = "WITH a AS (
     INSERT INTO callback_attempts (event_id, attempted_at, status_code, duration_ms, error)
     VALUES ($1, $2, $3, $4, $5))";
static DELIVERED_PG: LazyLock<String> = LazyLock::new(|| {
    format!("{ATTEMPT_PG} UPDATE callback_events SET status = 'delivered', attempts = $6, delivered_at = $2, claimed_until = 0, last_error = NULL WHERE id = $1")
});
/// `$7` the next attempt's time, `$8` the last error.
static RETRY_PG: LazyLock<String> = LazyLock::new(|| {
    format!("{ATTEMPT_PG} UPDATE callback_events SET attempts = $6, next_attempt_at = $7, claimed_until = 0, last_error = $8 WHERE id = $1")
});
/// `$7` the last error, `$8` the client, `$9` whether its receiver is disabled now (410 Gone).
static DEAD_PG: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{ATTEMPT_PG}, d AS (UPDATE clients SET callback_disabled_at = $2 WHERE id = $8 AND $9)
         UPDATE callback_events SET status = 'dead', attempts = $6, claimed_until = 0, last_error = $7 WHERE id = $1"
    )
});
