//! The hot-path transitions on SQLite, in its dialect, run on the writer thread
//! ([`super::sqlite_writer`]) with cached prepared statements. Each function is one transition's
//! whole write: the new state, the mailbox event and the callback event it owes commit together
//! (the group commit wraps it). They take the writer's connection and return what the engine
//! needs to wake whoever waits.

use hermod_shared::wire::CallbackEvent;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::commands::CommandRow;
use super::devices::DeviceRow;
use super::outbox::{self, Attempt, Claimed, Next};
use super::random_id;
use crate::domain::error::ApiError;

/// The columns of [`CommandRow`], in the order [`command_row`] reads them.
const COLUMNS: &str = super::commands::COLUMNS;

fn command_row(r: &Row<'_>) -> rusqlite::Result<CommandRow> {
    OffsetRow { row: r, by: 0 }.command()
}

/// A command about to be written.
#[derive(Debug, Clone)]
pub struct NewCommand {
    pub id: String,
    pub group_id: String,
    pub client_pk: String,
    pub command_type: String,
    pub device_id: Option<String>,
    /// `None` for a command for nobody yet (claimed by QR code).
    pub user_id: Option<String>,
    pub payload: String,
    pub timeout_secs: i64,
    pub lifespan_secs: i64,
    pub now: i64,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    /// Whether it goes to a mailbox (every type but `provision`).
    pub to_mailbox: bool,
    /// Its approval material as JSON (`None` for a provision).
    pub approval: Option<String>,
    /// For a command for nobody yet: its QR start token, by which a device claims it.
    pub claim_token: Option<String>,
}

/// Writes a command and its mailbox event; `None` when another command holds its
/// `Idempotency-Key`.
pub fn create(c: &Connection, new: &NewCommand) -> Result<Option<CommandRow>, ApiError> {
    let row = c
        .prepare_cached(&format!(
            "INSERT INTO commands (id, group_id, client_pk, type, device_id, user_id, payload, status, timeout_secs,
                 lifespan_secs, created_at, timeout_at, expires_at, idempotency_key, request_hash, approval, claim_token)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT (client_pk, idempotency_key) DO NOTHING
             RETURNING {COLUMNS}"
        ))?
        .query_row(
            params![
                new.id,
                new.group_id,
                new.client_pk,
                new.command_type,
                new.device_id,
                new.user_id,
                new.payload,
                new.timeout_secs,
                new.lifespan_secs,
                new.now,
                new.now + new.timeout_secs * 1000,
                new.now + new.lifespan_secs * 1000,
                new.idempotency_key,
                new.request_hash,
                new.approval,
                new.claim_token,
            ],
            command_row,
        )
        .optional()?;
    if let (Some(row), Some(user_id)) = (&row, &new.user_id) {
        if new.to_mailbox {
            append_mailbox(
                c,
                &row.group_id,
                user_id,
                new.device_id.as_deref(),
                &row.id,
                "command",
                new.now,
            )?;
        }
    }
    Ok(row)
}

/// Appends an event to a user's mailbox, numbered next in it (see `engine::mailbox`).
pub fn append_mailbox(
    c: &Connection,
    group_id: &str,
    user_id: &str,
    device_id: Option<&str>,
    command_id: &str,
    kind: &str,
    now: i64,
) -> rusqlite::Result<()> {
    let seq: i64 = c
        .prepare_cached(
            "INSERT INTO mailboxes (group_id, user_id, last_seq) VALUES (?1, ?2, 1)
             ON CONFLICT (group_id, user_id) DO UPDATE SET last_seq = mailboxes.last_seq + 1 RETURNING last_seq",
        )?
        .query_row(params![group_id, user_id], |r| r.get(0))?;
    c.prepare_cached(
        "INSERT INTO mailbox_events (group_id, user_id, device_id, command_id, kind, created_at, mailbox_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![group_id, user_id, device_id, command_id, kind, now, seq])?;
    Ok(())
}

/// Writes the callback event a command's final state owes, if its client has a callback URL;
/// `true` when it is due for delivery (its receiver is not disabled).
pub fn enqueue_callback(c: &Connection, row: &CommandRow, now: i64) -> rusqlite::Result<bool> {
    let receiver: Option<(Option<String>, Option<i64>)> = c
        .prepare_cached("SELECT callback_url, callback_disabled_at FROM clients WHERE id = ?1")?
        .query_row([&row.client_pk], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((Some(_), disabled)) = receiver else {
        return Ok(false);
    };
    let view = row.view(now, None);
    let event = CallbackEvent {
        event_type: format!("command.{}", view.status.as_str()),
        timestamp: hermod_shared::wire::rfc3339(now),
        data: view,
    };
    let (status, error) = match disabled {
        Some(_) => ("dead", Some(super::GONE)),
        None => ("pending", None),
    };
    c.prepare_cached(
        "INSERT INTO callback_events (id, client_pk, command_id, event_type, payload, status, next_attempt_at, created_at, last_error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
    )?
    .execute(params![
        random_id("msg_"),
        row.client_pk,
        row.id,
        event.event_type,
        serde_json::to_string(&event).expect("events serialise"),
        status,
        now,
        error,
    ])?;
    Ok(disabled.is_none())
}

/// The command for nobody of a group that a QR start token names.
pub fn claimable(c: &Connection, claim_token: &str, group_id: &str) -> rusqlite::Result<Option<CommandRow>> {
    c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM commands WHERE claim_token = ?1 AND group_id = ?2"
    ))?
    .query_row([claim_token, group_id], command_row)
    .optional()
}

/// Gives an open command for nobody to the device that claimed it (delivered to it, in its
/// mailbox); `None` when it was claimed or ended meanwhile.
pub fn claim(
    c: &Connection,
    id: &str,
    device_id: &str,
    user_id: &str,
    now: i64,
) -> rusqlite::Result<Option<CommandRow>> {
    let row = c
        .prepare_cached(&format!(
            "UPDATE commands SET device_id = ?1, user_id = ?2, status = 'delivered'
             WHERE id = ?3 AND device_id IS NULL AND status IN {open} AND timeout_at > ?4
             RETURNING {COLUMNS}",
            open = super::commands::OPEN
        ))?
        .query_row(params![device_id, user_id, id, now], command_row)
        .optional()?;
    if let Some(row) = &row {
        append_mailbox(c, &row.group_id, user_id, Some(device_id), id, "command", now)?;
    }
    Ok(row)
}

/// A command by id, as the writer sees it (no other writer can change it meanwhile).
pub fn command(c: &Connection, id: &str) -> rusqlite::Result<Option<CommandRow>> {
    c.prepare_cached(&format!("SELECT {COLUMNS} FROM commands WHERE id = ?1"))?
        .query_row([id], command_row)
        .optional()
}

/// How a command ends: its final status and what the answer (if any) wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ending<'a> {
    pub result: Option<&'a str>,
    pub answered_by: Option<&'a str>,
    pub response_hash: Option<&'a str>,
    pub reason: Option<&'a str>,
}

/// Ends an open command in a final state (an answer, a cancellation, the timeout), with its
/// callback event; `None` when it was not open.
pub fn finish(
    c: &Connection,
    id: &str,
    status: &str,
    ending: Ending<'_>,
    now: i64,
) -> rusqlite::Result<Option<(CommandRow, bool)>> {
    let row = c
        .prepare_cached(&format!(
            "UPDATE commands SET status = ?1, result = COALESCE(?2, result), answered_by = COALESCE(?3, answered_by),
                 response_hash = COALESCE(?4, response_hash), completed_at = ?5, reason = COALESCE(?7, reason)
             WHERE id = ?6 AND status IN {open}
             RETURNING {COLUMNS}",
            open = super::commands::OPEN
        ))?
        .query_row(
            params![
                status,
                ending.result,
                ending.answered_by,
                ending.response_hash,
                now,
                id,
                ending.reason
            ],
            command_row,
        )
        .optional()?;
    match row {
        None => Ok(None),
        Some(row) => {
            let queued = enqueue_callback(c, &row, now)?;
            Ok(Some((row, queued)))
        }
    }
}

/// The enrolled device a verified request names, with its nonce recorded: `None` for no
/// such device, `(device, false)` for a nonce it used already (a replay). Notes when the device
/// was last seen, at most every `resolution_ms`.
pub fn use_nonce(
    c: &Connection,
    device_id: &str,
    nonce: &str,
    expires_at: i64,
    now: i64,
    resolution_ms: i64,
) -> rusqlite::Result<Option<(DeviceRow, bool)>> {
    let Some(device) = active_device(c, device_id)? else {
        return Ok(None);
    };
    let fresh = c
        .prepare_cached(
            "INSERT INTO nonces (device_id, nonce, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT (device_id, nonce) DO NOTHING",
        )?
        .execute(params![device_id, nonce, expires_at])?
        == 1;
    if fresh && device.last_seen_at.is_none_or(|seen| seen < now - resolution_ms) {
        c.prepare_cached("UPDATE devices SET last_seen_at = ?1 WHERE id = ?2")?
            .execute(params![now, device_id])?;
    }
    Ok(Some((device, fresh)))
}

/// One sweep: ends the open commands past their timeout as expired (`due` selects them, at
/// most a batch), each with its callback event; forgets commands past their lifespan and nonces
/// past the signature window. Returns the expired commands and whether each owes a delivery.
pub fn sweep(
    c: &Connection,
    due: &str,
    forget: &str,
    forget_nonces: &str,
    now: i64,
) -> rusqlite::Result<Vec<(CommandRow, bool)>> {
    let ids: Vec<String> = c
        .prepare_cached(due)?
        .query_map([now], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut expired = Vec::with_capacity(ids.len());
    for id in ids {
        expired.extend(finish(c, &id, "expired", Ending::default(), now)?);
    }
    c.prepare_cached(forget)?.execute([now])?;
    c.prepare_cached(forget_nonces)?.execute([now])?;
    Ok(expired)
}

/// Marks fetched commands delivered; returns those that were pending.
pub fn mark_delivered(c: &Connection, ids: &[String]) -> rusqlite::Result<Vec<String>> {
    let mut changed = Vec::new();
    let mut stmt = c.prepare_cached("UPDATE commands SET status = 'delivered' WHERE id = ?1 AND status = 'pending'")?;
    for id in ids {
        if stmt.execute([id])? == 1 {
            changed.push(id.clone());
        }
    }
    Ok(changed)
}

/// See `outbox::BRING_FORWARD`.
pub fn bring_forward(c: &Connection, client_pk: &str, now: i64) -> rusqlite::Result<usize> {
    c.prepare_cached(outbox::BRING_FORWARD)?
        .execute(params![now, client_pk])
}

/// Logs a delivery attempt and moves its event on (the same statements as `outbox::record`).
pub fn record_attempt(c: &Connection, a: &Attempt) -> rusqlite::Result<()> {
    c.prepare_cached(outbox::INSERT_ATTEMPT)?.execute(params![
        a.event_id,
        a.at,
        a.status_code,
        a.duration_ms,
        a.error
    ])?;
    match &a.next {
        Next::Delivered => {
            c.prepare_cached(outbox::DELIVERED)?
                .execute(params![a.attempts, a.at, a.event_id])?;
        }
        Next::Retry { at, last_error } => {
            c.prepare_cached(outbox::RETRY)?
                .execute(params![a.attempts, at, last_error, a.event_id])?;
        }
        Next::Dead {
            last_error,
            disable_client,
        } => {
            c.prepare_cached(outbox::DEAD)?
                .execute(params![a.attempts, last_error, a.event_id])?;
            if *disable_client {
                c.prepare_cached(outbox::DISABLE_RECEIVER)?
                    .execute(params![a.at, a.client_pk])?;
            }
        }
    }
    Ok(())
}

// ---- hot-path reads (on the reader threads) --------------------------------------------------

fn device_row(r: &Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        id: r.get(0)?,
        group_id: r.get(1)?,
        user_id: r.get(2)?,
        name: r.get(3)?,
        enrolled_at: r.get(4)?,
        last_seen_at: r.get(5)?,
        key_id: r.get(6)?,
    })
}

/// An enrolled, unrevoked device.
pub fn active_device(c: &Connection, id: &str) -> rusqlite::Result<Option<DeviceRow>> {
    c.prepare_cached(&format!(
        "SELECT {} FROM devices WHERE id = ?1 AND revoked_at IS NULL",
        super::devices::COLUMNS
    ))?
    .query_row([id], device_row)
    .optional()
}

/// The user of an active device of the group.
pub fn device_user(c: &Connection, device_id: &str, group_id: &str) -> rusqlite::Result<Option<String>> {
    c.prepare_cached("SELECT user_id FROM devices WHERE id = ?1 AND group_id = ?2 AND revoked_at IS NULL")?
        .query_row([device_id, group_id], |r| r.get(0))
        .optional()
}

/// How many active devices a user of the group has.
pub fn user_devices(c: &Connection, group_id: &str, user_id: &str) -> rusqlite::Result<i64> {
    c.prepare_cached("SELECT COUNT(*) FROM devices WHERE group_id = ?1 AND user_id = ?2 AND revoked_at IS NULL")?
        .query_row([group_id, user_id], |r| r.get(0))
}

/// A client's own command.
pub fn client_command(c: &Connection, id: &str, client_pk: &str) -> rusqlite::Result<Option<CommandRow>> {
    c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM commands WHERE id = ?1 AND client_pk = ?2"
    ))?
    .query_row([id, client_pk], command_row)
    .optional()
}

/// A page of a device's mailbox: (number, kind, command) after `cursor`.
pub fn mailbox_page(
    c: &Connection,
    group_id: &str,
    user_id: &str,
    cursor: i64,
    device_id: &str,
    limit: i64,
) -> rusqlite::Result<Vec<(i64, String, CommandRow)>> {
    let mut stmt = c.prepare_cached(&crate::store::mailbox::PAGE_SQL)?;
    let rows = stmt.query_map(params![group_id, user_id, cursor, device_id, limit], |r| {
        // The page's columns: the number, the kind, then the command's columns.
        let seq: i64 = r.get(0)?;
        let kind: String = r.get(1)?;
        let offset = OffsetRow { row: r, by: 2 };
        Ok((seq, kind, offset.command()?))
    })?;
    rows.collect()
}

/// A row read from column `by` on, as a command.
struct OffsetRow<'a, 'b> {
    row: &'a Row<'b>,
    by: usize,
}

impl OffsetRow<'_, '_> {
    fn get<T: rusqlite::types::FromSql>(&self, i: usize) -> rusqlite::Result<T> {
        self.row.get(self.by + i)
    }

    fn command(&self) -> rusqlite::Result<CommandRow> {
        Ok(CommandRow {
            id: self.get(0)?,
            group_id: self.get(1)?,
            client_pk: self.get(2)?,
            command_type: self.get(3)?,
            device_id: self.get(4)?,
            user_id: self.get(5)?,
            payload: self.get(6)?,
            status: self.get(7)?,
            result: self.get(8)?,
            answered_by: self.get(9)?,
            response_hash: self.get(10)?,
            timeout_secs: self.get(11)?,
            lifespan_secs: self.get(12)?,
            created_at: self.get(13)?,
            timeout_at: self.get(14)?,
            expires_at: self.get(15)?,
            completed_at: self.get(16)?,
            idempotency_key: self.get(17)?,
            request_hash: self.get(18)?,
            approval: self.get(19)?,
            reason: self.get(20)?,
        })
    }
}

/// Due callback events, oldest first: (id, client).
/// `busy_clients` and `busy_tenants` are JSON arrays of ids to skip.
pub fn callback_candidates(
    c: &Connection,
    now: i64,
    limit: i64,
    busy_clients: &str,
    busy_tenants: &str,
) -> rusqlite::Result<Vec<Claimed>> {
    let mut stmt = c.prepare_cached(crate::store::outbox::CANDIDATES_SQL)?;
    // By name: SQLite numbers `$N` parameters in the order they first appear, not by N.
    let binds = rusqlite::named_params! { "$1": now, "$2": limit, "$3": busy_clients, "$4": busy_tenants };
    let rows = stmt.query_map(binds, |r| {
        Ok(Claimed {
            id: r.get(0)?,
            client_pk: r.get(1)?,
            payload: r.get(2)?,
            attempts: r.get(3)?,
            tenant_id: r.get(4)?,
            created_at: r.get(5)?,
            claimed_until: 0,
            receiver: None,
        })
    })?;
    rows.collect()
}

/// When the next pending callback event is due.
pub fn next_callback_due(c: &Connection) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached(crate::store::outbox::NEXT_DUE_SQL)?
        .query_row([], |r| r.get(0))
}

/// An enabled client's active keys: (pk, client_id, tenant, group, rate quota, key id, key hash).
pub type ClientKeyRow = (String, String, String, String, Option<i64>, String, String);

/// (`sql` is the query both dialects share, `clients::AUTHENTICATE_SQL`.)
pub fn client_keys(c: &Connection, sql: &str, client_id: &str) -> rusqlite::Result<Vec<ClientKeyRow>> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map([client_id], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    })?;
    rows.collect()
}

/// A client's callback receiver: (URL, basic auth, signing secrets, disabled at).
pub type ReceiverRow = (Option<String>, Option<String>, Option<String>, Option<i64>, String);

pub fn receiver(c: &Connection, client_pk: &str) -> rusqlite::Result<ReceiverRow> {
    c.prepare_cached(super::outbox::RECEIVER_SQL)?
        .query_row([client_pk], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
}
