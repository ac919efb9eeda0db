//! The audit log: who did what, when. Every admin action is written in the same transaction as
//! the change it records; the use of a key (client or admin) is written at most once a minute
//! per key, so the log shows which keys are alive without a write per request.

use hermod_shared::admin::{AuditEntry, AuditPage};
use hermod_shared::wire::rfc3339;
use serde_json::Value;
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::{now_ms, Db};

/// How often the use of one key is recorded.
pub const KEY_USE_INTERVAL_MS: i64 = 60_000;
/// Longest page of the audit log.
pub const PAGE_MAX: u32 = 500;

/// One line of the log, before it is written.
pub struct Record<'a> {
    pub tenant_id: &'a str,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub detail: Option<Value>,
}

impl Record<'_> {
    /// Writes the record, numbered next in its tenant's log. The number comes from the tenant's
    /// `audit_cursors` row in the same statement (PostgreSQL) or transaction (SQLite's one
    /// writer): the row lock orders the commits, so a reader's cursor never passes a record that
    /// commits later (see `mailbox` for the same scheme).
    pub async fn write(self, conn: &mut AnyConnection, now: i64) -> sqlx::Result<()> {
        const NEXT: &str = "INSERT INTO audit_cursors (tenant_id, last_seq) VALUES ($1, 1)
             ON CONFLICT (tenant_id) DO UPDATE SET last_seq = audit_cursors.last_seq + 1 RETURNING last_seq";
        let detail = self.detail.map(|d| d.to_string());
        if conn.backend_name() == "PostgreSQL" {
            sqlx::query(&format!(
                "WITH next AS ({NEXT})
                 INSERT INTO audit_log (tenant_id, at, actor, action, target, detail, tenant_seq)
                 SELECT $1, $2, $3, $4, $5, $6, last_seq FROM next"
            ))
            .bind(self.tenant_id)
            .bind(now)
            .bind(self.actor)
            .bind(self.action)
            .bind(self.target)
            .bind(detail)
            .execute(conn)
            .await?;
            return Ok(());
        }
        let seq: i64 = sqlx::query_scalar(NEXT)
            .bind(self.tenant_id)
            .fetch_one(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO audit_log (tenant_id, at, actor, action, target, detail, tenant_seq) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(self.tenant_id)
        .bind(now)
        .bind(self.actor)
        .bind(self.action)
        .bind(self.target)
        .bind(detail)
        .bind(seq)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Which kind of key was used.
#[derive(Debug, Clone, Copy)]
pub enum KeyKind {
    Client,
    Admin,
}

/// Remembers when each key's use was last recorded, so a busy key costs one write a minute.
#[derive(Default)]
pub struct KeyUse {
    last: Mutex<HashMap<String, i64>>,
}

impl KeyUse {
    /// Records that `key_id` was used unless that was done in the last minute; `describe` gives
    /// the actor and the request (`METHOD path`), and is only called when a record is due. The
    /// write happens in the background: it never delays the request.
    pub fn note(
        &self,
        db: &Db,
        kind: KeyKind,
        tenant_id: &str,
        key_id: &str,
        describe: impl FnOnce() -> (String, String),
    ) {
        let now = now_ms();
        {
            let mut last = self.last.lock().expect("key-use map poisoned");
            if last.get(key_id).is_some_and(|t| now - t < KEY_USE_INTERVAL_MS) {
                return;
            }
            if last.len() > 100_000 {
                last.retain(|_, t| now - *t < KEY_USE_INTERVAL_MS);
            }
            last.insert(key_id.to_owned(), now);
        }
        let (table, action) = match kind {
            KeyKind::Client => ("client_keys", "client.key.use"),
            KeyKind::Admin => ("admin_keys", "admin.key.use"),
        };
        let (actor, request) = describe();
        let (db, tenant_id, key_id) = (db.clone(), tenant_id.to_owned(), key_id.to_owned());
        tokio::spawn(async move {
            let result: sqlx::Result<()> = async {
                let mut tx = db.begin_write().await?;
                sqlx::query(&format!("UPDATE {table} SET last_used_at = $1 WHERE id = $2"))
                    .bind(now)
                    .bind(&key_id)
                    .execute(&mut *tx)
                    .await?;
                Record {
                    tenant_id: &tenant_id,
                    actor: &actor,
                    action,
                    target: Some(&key_id),
                    detail: Some(serde_json::json!({ "request": request })),
                }
                .write(&mut tx, now)
                .await?;
                tx.commit().await
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not record a key's use");
            }
        });
    }
}

/// A page of a tenant's log: `$1` tenant, `$2` cursor, `$3` limit.
pub const PAGE_SQL: &str = "SELECT tenant_seq AS seq, at, actor, action, target, detail FROM audit_log
     WHERE tenant_id = $1 AND tenant_seq > $2 ORDER BY tenant_seq LIMIT $3";

/// The tenant's log after `after`, oldest first.
pub async fn page(db: &Db, tenant_id: &str, after: i64, limit: u32) -> sqlx::Result<AuditPage> {
    let rows = sqlx::query(PAGE_SQL)
        .bind(tenant_id)
        .bind(after)
        .bind(i64::from(limit.clamp(1, PAGE_MAX)))
        .fetch_all(&db.read)
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        let detail: Option<String> = row.try_get("detail")?;
        items.push(AuditEntry {
            seq: row.try_get("seq")?,
            at: rfc3339(row.try_get("at")?),
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            target: row.try_get("target")?,
            detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
        });
    }
    let next_cursor = items.last().map_or(after, |e| e.seq);
    Ok(AuditPage { items, next_cursor })
}
