//! A device's mailbox: the log of commands addressed to it or to its user, read after a cursor.
//! A long-poll subscribes to the device's and the user's wake-ups before it reads, so a new
//! command wakes it at once; it never polls the database in a loop.

use hermod_shared::wire::{MailboxEventKind, MailboxItem, MailboxPage};
use std::time::Duration;

use crate::app::AppState;
use crate::commands::{self, CommandRow, COLUMNS};
use crate::db::now_ms;
use crate::devices::DeviceRow;
use crate::error::ApiResult;
use crate::wake;

/// Most items in one page.
pub const PAGE_SIZE: i64 = 100;

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    kind: String,
    #[sqlx(flatten)]
    command: CommandRow,
}

pub async fn poll(state: &AppState, device: &DeviceRow, cursor: i64, wait: Duration) -> ApiResult<MailboxPage> {
    let mut by_device = state.wakeups.subscribe(wake::device_key(&device.id));
    let mut by_user = state
        .wakeups
        .subscribe(wake::user_key(&device.group_id, &device.user_id));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (items, next) = read(state, device, cursor).await?;
        if !items.is_empty() || tokio::time::Instant::now() >= deadline {
            let fetched: Vec<String> = items
                .iter()
                .filter(|i| i.kind == MailboxEventKind::Command)
                .map(|i| i.command.id.to_string())
                .collect();
            commands::mark_delivered(state, &fetched).await?;
            return Ok(MailboxPage {
                items,
                cursor: next,
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

async fn read(state: &AppState, device: &DeviceRow, cursor: i64) -> ApiResult<(Vec<MailboxItem>, i64)> {
    let columns = COLUMNS
        .split(", ")
        .map(|c| format!("c.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "SELECT e.seq, e.kind, {columns} FROM mailbox_events e JOIN commands c ON c.id = e.command_id
         WHERE e.seq > $1 AND (e.device_id = $2 OR (e.group_id = $3 AND e.user_id = $4))
         ORDER BY e.seq LIMIT $5"
    ))
    .bind(cursor)
    .bind(&device.id)
    .bind(&device.group_id)
    .bind(&device.user_id)
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
