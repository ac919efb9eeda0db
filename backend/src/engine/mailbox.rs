//! A device's mailbox: the log of commands addressed to it or to its user, read after a cursor.
//! A long-poll subscribes to the device's and the user's wake-ups before it reads, so a new
//! command wakes it at once; it never polls the database in a loop.
//!
//! The log is kept per user of a group (the user's devices share it; an event addressed to one
//! device names that device). Its numbers are taken from the `mailboxes` row in the statement
//! that writes the event: on PostgreSQL the row lock this takes is held until commit, so the
//! numbers of one mailbox commit in order and a cursor can never pass one that commits later.
//! (A global identity column hands out values in one order and commits them in another.)

use hermod_shared::wire::{MailboxEventKind, MailboxItem, MailboxPage, WithdrawReason};
use hermod_shared::CommandStatus;
use std::time::Duration;

use crate::domain::error::ApiResult;
use crate::engine::commands;
use crate::engine::longpoll::Holder;
use crate::engine::wake;
use crate::engine::AppState;
use crate::store::commands::CommandRow;
use crate::store::devices::DeviceRow;
use crate::store::mailbox::{PAGE_DELIVER_SQL, PAGE_SQL};
use crate::store::now_ms;

/// Most items in one page.
pub const PAGE_SIZE: i64 = 100;

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    kind: String,
    #[sqlx(flatten)]
    command: CommandRow,
    /// Marked delivered by the read itself ([`PAGE_DELIVER_SQL`]).
    #[sqlx(default)]
    delivered_now: bool,
}

pub async fn poll(state: &AppState, device: &DeviceRow, cursor: i64, wait: Duration) -> ApiResult<MailboxPage> {
    let mut by_device = state.wakeups.subscribe(wake::device_key(&device.id));
    let mut by_user = state
        .wakeups
        .subscribe(wake::user_key(&device.group_id, &device.user_id));
    let deadline = tokio::time::Instant::now() + wait;
    let mut place = if wait.is_zero() {
        None
    } else {
        Some(state.long_polls.enter(Holder::Device(device.id.clone()))?)
    };
    let mut released = false;
    let mut cursor = cursor;
    loop {
        let (items, next, marked) = read(state, device, cursor, true).await?;
        // Events that no longer concern the device (finished commands) are passed for good: the
        // next read starts after them, so a new command is found at once however many lie behind.
        let passed_only = items.is_empty() && next > cursor;
        cursor = next;
        if passed_only {
            continue;
        }
        if !items.is_empty() || released || tokio::time::Instant::now() >= deadline {
            match marked {
                Some(ids) => commands::delivered(state, ids),
                None => {
                    let fetched: Vec<String> = items
                        .iter()
                        .filter(|i| i.kind == MailboxEventKind::Command)
                        .map(|i| i.command.id.to_string())
                        .collect();
                    commands::mark_delivered(state, &fetched).await?;
                }
            }
            return Ok(MailboxPage {
                items,
                cursor,
                server_time: now_ms(),
            });
        }
        let release = async {
            match place.as_mut() {
                Some(place) => place.released().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = by_device.changed() => {}
            _ = by_user.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            () = release => {
                state.metrics.long_polls_capped.inc();
                released = true;
            }
        }
    }
}

/// Whether the device has anything after `cursor` (for the edge's reconciliation): a read that
/// neither waits nor marks anything delivered.
pub async fn has_items(state: &AppState, device: &DeviceRow, cursor: i64) -> ApiResult<bool> {
    let mut cursor = cursor;
    loop {
        let (items, next, _) = read(state, device, cursor, false).await?;
        if !items.is_empty() {
            return Ok(true);
        }
        if next == cursor {
            return Ok(false);
        }
        cursor = next;
    }
}

/// A page after `cursor`: its items, the cursor after it, and, when `take` (the device takes
/// the page) on PostgreSQL, the commands the read itself marked delivered (on SQLite the
/// caller marks them on the writer thread).
async fn read(
    state: &AppState,
    device: &DeviceRow,
    cursor: i64,
    take: bool,
) -> ApiResult<(Vec<MailboxItem>, i64, Option<Vec<String>>)> {
    let now = now_ms();
    let rows: Vec<EventRow> = match &state.db.sqlite_read {
        Some(readers) => {
            let (group, user, id) = (device.group_id.clone(), device.user_id.clone(), device.id.clone());
            readers
                .run(move |c| {
                    Ok(crate::store::sqlite::mailbox_page(
                        c, &group, &user, cursor, &id, PAGE_SIZE,
                    )?)
                })
                .await?
                .into_iter()
                .map(|(seq, kind, command)| EventRow {
                    seq,
                    kind,
                    command,
                    delivered_now: false,
                })
                .collect()
        }
        None if take => {
            sqlx::query_as(&PAGE_DELIVER_SQL)
                .bind(&device.group_id)
                .bind(&device.user_id)
                .bind(cursor)
                .bind(&device.id)
                .bind(PAGE_SIZE)
                .bind(now)
                .fetch_all(&state.db.write)
                .await?
        }
        None => {
            sqlx::query_as(&PAGE_SQL)
                .bind(&device.group_id)
                .bind(&device.user_id)
                .bind(cursor)
                .bind(&device.id)
                .bind(PAGE_SIZE)
                .fetch_all(&state.db.read)
                .await?
        }
    };
    let next = rows.last().map_or(cursor, |r| r.seq);
    let marked = (take && state.db.sqlite_read.is_none()).then(|| {
        rows.iter()
            .filter(|r| r.delivered_now)
            .map(|r| r.command.id.clone())
            .collect()
    });
    let items = rows
        .into_iter()
        .filter_map(|r| {
            let kind = match r.kind.as_str() {
                "command" if !r.command.status_at(now).is_final() => MailboxEventKind::Command,
                // A device does not hear that the command it answered itself was withdrawn.
                "cancelled" if r.command.answered_by.as_deref() == Some(device.id.as_str()) => return None,
                "cancelled" => MailboxEventKind::Cancelled,
                _ => return None,
            };
            // A command ended by an answer was withdrawn because another device answered it.
            let reason = (kind == MailboxEventKind::Cancelled).then(|| match r.command.stored_status() {
                CommandStatus::Approved | CommandStatus::Declined => WithdrawReason::AnsweredElsewhere,
                _ => WithdrawReason::CancelledByClient,
            });
            Some(MailboxItem {
                seq: r.seq,
                kind,
                reason,
                command: r.command.mailbox_command(),
            })
        })
        .collect();
    Ok((items, next, marked))
}
