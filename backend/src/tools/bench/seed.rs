//! Databases for the bench: a SQLite file in the run's folder, or a fresh PostgreSQL database
//! `hermod_bench_<random>` (dropped afterwards); and what is written into them before the server
//! starts: finished commands as history, and devices for the idle scenario.
//!
//! The schema is made by `Db::migrate` and the config's client by `sync_config_clients`, as
//! the server itself does at start; only the rows of history go in directly, as multi-row
//! INSERTs in transactions. Their values are all made here (hex ids, numbers, fixed words), so
//! they are written as literals, which is several times faster through sqlx's `Any` driver than
//! 19 binds a row.

use anyhow::Context;
use hermod_shared::DeviceId;
use sqlx::Row;
use std::time::Instant;

use crate::config::AllowedClient;
use crate::store::clients;
use crate::store::{now_ms, Db};

/// A database one run owns.
pub struct BenchDb {
    pub url: String,
    /// (admin URL, name) of a PostgreSQL database to drop at the end.
    drop: Option<(String, String)>,
}

impl BenchDb {
    pub fn sqlite(dir: &std::path::Path) -> Self {
        Self {
            url: format!("sqlite://{}", dir.join("hermod.db").display()),
            drop: None,
        }
    }

    /// An existing database named by the user: used as it is, never dropped.
    pub fn given(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            drop: None,
        }
    }

    pub async fn fresh_postgres(admin: &str) -> anyhow::Result<Self> {
        let name = format!("hermod_bench_{}", hex::encode(rand::random::<[u8; 6]>()));
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {admin}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .context("the admin URL names no database")?;
        Ok(Self {
            url: format!("{base}/{name}"),
            drop: Some((admin.to_owned(), name)),
        })
    }

    pub async fn cleanup(mut self) {
        if let Some((admin, name)) = self.drop.take() {
            if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
    }
}

/// The schema and the config's client, as the server makes them at start; returns the client's
/// row id and group.
pub async fn prepare(db: &Db, client: &AllowedClient) -> anyhow::Result<(String, String)> {
    db.migrate().await?;
    clients::sync_config_clients(db, std::slice::from_ref(client)).await?;
    let row = sqlx::query("SELECT id, group_id FROM clients WHERE client_id = $1")
        .bind(&client.client_id)
        .fetch_one(&db.write)
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

const ROWS_PER_INSERT: usize = 1000;
const INSERTS_PER_TX: usize = 20;

/// Writes `count` answered `authenticate` commands of the client, spread over the last day and
/// kept in history for 30 days (past any run), addressed to 1,000 devices that are not the
/// bench's, with every row a real history holds for them: each command's mailbox event, its
/// delivered callback event and the attempt that delivered it, and an audit record for every
/// tenth. Returns the seconds it took.
pub async fn history(db: &Db, client_pk: &str, group_id: &str, count: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let now = now_ms();
    let history_devices: Vec<String> = (0..1000)
        .map(|_| DeviceId::from_random(rand::random()).to_string())
        .collect();
    let mut written = 0u64;
    while written < count {
        let mut tx = db.begin_write().await?;
        for _ in 0..INSERTS_PER_TX {
            if written >= count {
                break;
            }
            let n = (count - written).min(ROWS_PER_INSERT as u64);
            let mut commands = String::with_capacity(n as usize * 400);
            let mut events = String::with_capacity(n as usize * 150);
            let mut callbacks = String::with_capacity(n as usize * 250);
            let mut attempts = String::with_capacity(n as usize * 100);
            let mut audit = String::with_capacity(n as usize * 15);
            for i in 0..n {
                let k = written + i;
                let device = &history_devices[(k % 1000) as usize];
                let user = k % 1000;
                let created = now - 86_400_000 + (k as i64 * 86_400_000 / count.max(1) as i64);
                let id = hermod_shared::CommandId::from_random(rand::random());
                let event = format!("msg_hist{}", hex::encode(rand::random::<[u8; 12]>()));
                let sep = if i > 0 { "," } else { "" };
                commands.push_str(&format!(
                    "{sep}('{id}', '{group_id}', '{client_pk}', 'authenticate', '{device}', 'history-user-{user}', '{{\"text\":\"history\"}}', \
                     'approved', '{{\"simulated\":true}}', '{device}', '{hash}', 120, 2592000, {created}, {timeout_at}, {expires_at}, {done}, NULL, '{hash}')",
                    hash = hex::encode(rand::random::<[u8; 32]>()),
                    timeout_at = created + 120_000,
                    expires_at = created + 2_592_000_000,
                    done = created + 1_500,
                ));
                events.push_str(&format!(
                    "{sep}('{group_id}', 'history-user-{user}', '{device}', '{id}', 'command', {created}, {seq})",
                    seq = k / 1000 + 1
                ));
                callbacks.push_str(&format!(
                    "{sep}('{event}', '{client_pk}', '{id}', 'command.approved', '{{\"type\":\"command.approved\"}}', 'delivered', 1, {done}, 0, {done}, {delivered})",
                    done = created + 1_500,
                    delivered = created + 1_510,
                ));
                attempts.push_str(&format!("{sep}('{event}', {at}, 204, 3)", at = created + 1_505));
                if k % 10 == 0 {
                    let a = if audit.is_empty() { "" } else { "," };
                    audit.push_str(&format!(
                        "{a}('default', {created}, 'client:bench', 'client.key.use', 'history', NULL, {seq})",
                        seq = k / 10 + 1
                    ));
                }
            }
            sqlx::query(&format!(
                "INSERT INTO commands (id, group_id, client_pk, type, device_id, user_id, payload, status, result, answered_by, \
                 response_hash, timeout_secs, lifespan_secs, created_at, timeout_at, expires_at, completed_at, idempotency_key, request_hash) VALUES {commands}"
            ))
            .execute(&mut *tx)
            .await?;
            sqlx::query(&format!(
                "INSERT INTO mailbox_events (group_id, user_id, device_id, command_id, kind, created_at, mailbox_seq) VALUES {events}"
            ))
            .execute(&mut *tx)
            .await?;
            sqlx::query(&format!(
                "INSERT INTO callback_events (id, client_pk, command_id, event_type, payload, status, attempts, next_attempt_at, \
                 claimed_until, created_at, delivered_at) VALUES {callbacks}"
            ))
            .execute(&mut *tx)
            .await?;
            sqlx::query(&format!(
                "INSERT INTO callback_attempts (event_id, attempted_at, status_code, duration_ms) VALUES {attempts}"
            ))
            .execute(&mut *tx)
            .await?;
            if !audit.is_empty() {
                sqlx::query(&format!(
                    "INSERT INTO audit_log (tenant_id, at, actor, action, target, detail, tenant_seq) VALUES {audit}"
                ))
                .execute(&mut *tx)
                .await?;
            }
            written += n;
        }
        tx.commit().await?;
    }
    // The mailboxes and the audit log continue above what was seeded.
    sqlx::query(
        "INSERT INTO mailboxes (group_id, user_id, last_seq)
         SELECT group_id, user_id, MAX(mailbox_seq) FROM mailbox_events WHERE true GROUP BY group_id, user_id
         ON CONFLICT (group_id, user_id) DO UPDATE SET last_seq = excluded.last_seq",
    )
    .execute(&db.write)
    .await?;
    sqlx::query(
        "INSERT INTO audit_cursors (tenant_id, last_seq) SELECT 'default', COALESCE(MAX(tenant_seq), 0) FROM audit_log WHERE true
         ON CONFLICT (tenant_id) DO UPDATE SET last_seq = excluded.last_seq",
    )
    .execute(&db.write)
    .await?;
    if db.dialect == crate::store::Dialect::Postgres {
        for table in [
            "commands",
            "mailbox_events",
            "callback_events",
            "callback_attempts",
            "audit_log",
        ] {
            sqlx::query(&format!("ANALYZE {table}")).execute(&db.write).await?;
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Writes `count` enrolled devices of the group (users `idle-<n>`), as enrolment would; their
/// secrets derive from the server key. Returns their ids.
pub async fn devices(db: &Db, group_id: &str, count: usize) -> anyhow::Result<Vec<DeviceId>> {
    let now = now_ms();
    let ids: Vec<DeviceId> = (0..count).map(|_| DeviceId::from_random(rand::random())).collect();
    for (c, chunk) in ids.chunks(ROWS_PER_INSERT).enumerate() {
        let mut sql = String::from(
            "INSERT INTO devices (id, group_id, user_id, name, enrolled_by, enrolled_at, last_seen_at) VALUES ",
        );
        for (i, id) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            let enrolled_by = hermod_shared::CommandId::from_random(rand::random());
            sql.push_str(&format!(
                "('{id}', '{group_id}', 'idle-{n}', 'bench', '{enrolled_by}', {now}, NULL)",
                n = c * ROWS_PER_INSERT + i
            ));
        }
        sqlx::query(&sql).execute(&db.write).await?;
    }
    Ok(ids)
}
