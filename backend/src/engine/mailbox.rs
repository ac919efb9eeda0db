//! A device's mailbox: the log of commands addressed to it or to its user, read after a cursor.
//! A long-poll subscribes to the device's and the user's wake-ups before it reads, so a new
//! command wakes it at once; it never polls the database in a loop.
//!
//! The log is kept per user of a group (the user's devices share it; an event addressed to one
//! device names that device). Its numbers are taken from the `mailboxes` row in the statement
//! that writes the event: on PostgreSQL the row lock this takes is held until commit, so the
//! numbers of one mailbox commit in order and a cursor can never pass one that commits later.
//! (A global identity column hands out values in one order and commits them in another.)

use hermod_shared::wire::{MailboxEventKind, MailboxItem, MailboxPage};
use sqlx::AnyConnection;
use std::time::Duration;

use crate::domain::error::ApiResult;
use crate::engine::commands;
use crate::engine::devices::DeviceRow;
use crate::engine::wake;
use crate::engine::AppState;
use crate::store::commands::{CommandRow, COLUMNS};
use crate::store::now_ms;

/// Most items in one page.
pub const PAGE_SIZE: i64 = 100;

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    kind: String,
    #[sqlx(flatten)]
    command: CommandRow,
}

/// What a mailbox event says.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Command,
    Cancelled,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Command => "command",
            Kind::Cancelled => "cancelled",
        }
    }
}

/// Appends an event to the mailbox of `user_id` in `group_id` (for one of its devices when
/// `device_id` is given), numbered next in that mailbox, in the caller's transaction.
pub async fn append(
    conn: &mut AnyConnection,
    group_id: &str,
    user_id: &str,
    device_id: Option<&str>,
    command_id: &str,
    kind: Kind,
    now: i64,
) -> sqlx::Result<()> {
    const NEXT: &str = "INSERT INTO mailboxes (group_id, user_id, last_seq) VALUES ($1, $2, 1)
         ON CONFLICT (group_id, user_id) DO UPDATE SET last_seq = mailboxes.last_seq + 1 RETURNING last_seq";
    if conn.backend_name() == "PostgreSQL" {
        // One statement: the number and the event commit together even outside a transaction.
        sqlx::query(&format!(
            "WITH next AS ({NEXT})
             INSERT INTO mailbox_events (group_id, user_id, device_id, command_id, kind, created_at, mailbox_seq)
             SELECT $1, $2, $3, $4, $5, $6, last_seq FROM next"
        ))
        .bind(group_id)
        .bind(user_id)
        .bind(device_id)
        .bind(command_id)
        .bind(kind.as_str())
        .bind(now)
        .execute(conn)
        .await?;
    } else {
        let seq: i64 = sqlx::query_scalar(NEXT)
            .bind(group_id)
            .bind(user_id)
            .fetch_one(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO mailbox_events (group_id, user_id, device_id, command_id, kind, created_at, mailbox_seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(group_id)
        .bind(user_id)
        .bind(device_id)
        .bind(command_id)
        .bind(kind.as_str())
        .bind(now)
        .bind(seq)
        .execute(conn)
        .await?;
    }
    Ok(())
}

pub async fn poll(state: &AppState, device: &DeviceRow, cursor: i64, wait: Duration) -> ApiResult<MailboxPage> {
    let mut by_device = state.wakeups.subscribe(wake::device_key(&device.id));
    let mut by_user = state
        .wakeups
        .subscribe(wake::user_key(&device.group_id, &device.user_id));
    let deadline = tokio::time::Instant::now() + wait;
    let mut cursor = cursor;
    loop {
        let (items, next) = read(state, device, cursor).await?;
        // Events that no longer concern the device (finished commands) are passed for good: the
        // next read starts after them, so a new command is found at once however many lie behind.
        let passed_only = items.is_empty() && next > cursor;
        cursor = next;
        if passed_only {
            continue;
        }
        if !items.is_empty() || tokio::time::Instant::now() >= deadline {
            let fetched: Vec<String> = items
                .iter()
                .filter(|i| i.kind == MailboxEventKind::Command)
                .map(|i| i.command.id.to_string())
                .collect();
            commands::mark_delivered(state, &fetched).await?;
            return Ok(MailboxPage {
                items,
                cursor,
                server_time: now_ms(),
            });
        }
        tokio::select! {
            _ = by_device.changed() => {}
            _ = by_user.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// A page of a device's mailbox: `$1` group, `$2` user, `$3` cursor, `$4` device, `$5` limit.
pub static PAGE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let columns = COLUMNS
        .split(", ")
        .map(|c| format!("c.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT e.mailbox_seq AS seq, e.kind, {columns} FROM mailbox_events e JOIN commands c ON c.id = e.command_id
         WHERE e.group_id = $1 AND e.user_id = $2 AND e.mailbox_seq > $3 AND (e.device_id IS NULL OR e.device_id = $4)
         ORDER BY e.mailbox_seq LIMIT $5"
    )
});

async fn read(state: &AppState, device: &DeviceRow, cursor: i64) -> ApiResult<(Vec<MailboxItem>, i64)> {
    let rows: Vec<EventRow> = sqlx::query_as(&PAGE_SQL)
        .bind(&device.group_id)
        .bind(&device.user_id)
        .bind(cursor)
        .bind(&device.id)
        .bind(PAGE_SIZE)
        .fetch_all(&state.db.read)
        .await?;
    let now = now_ms();
    let next = rows.last().map_or(cursor, |r| r.seq);
    let items = rows
        .into_iter()
        .filter_map(|r| {
            let kind = match r.kind.as_str() {
                "command" if !r.command.status_at(now).is_final() => MailboxEventKind::Command,
                "cancelled" => MailboxEventKind::Cancelled,
                _ => return None,
            };
            Some(MailboxItem {
                seq: r.seq,
                kind,
                command: r.command.mailbox_command(),
            })
        })
        .collect();
    Ok((items, next))
}
