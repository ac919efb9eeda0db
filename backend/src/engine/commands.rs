//! The command state machine. Every change of state that a client must hear about writes its
//! callback event in the same transaction; wake-ups go out after the commit.
//!
//! ```text
//! pending ──fetched──▶ delivered ──device answers──▶ approved | declined
//!    │                     │
//!    ├──────client─────────┴──▶ cancelled
//!    └──────timeout────────────▶ expired          (all leave history at lifespan end)
//! ```

use hermod_shared::approval::OutcomeReason;
use hermod_shared::wire::{CreateCommand, DeviceResponse, EnrolRequest, EnrolResponse};
use hermod_shared::{CommandId, CommandType, DeviceId, ErrorCode, Lifetimes, UserId};
use serde_json::json;
use sqlx::AnyConnection;
use std::time::Duration;

use crate::domain::approval;
use crate::domain::command::{self as rules, Recipient};
use crate::domain::error::{ApiError, ApiResult};
use crate::engine::callbacks;
use crate::engine::wake;
use crate::engine::AppState;
use crate::store::clients::Client;
use crate::store::commands::{CommandRow, COLUMNS, OPEN};
use crate::store::devices::DeviceRow;
use crate::store::now_ms;
use crate::store::sqlite::{self, NewCommand};

async fn fetch(conn: &mut AnyConnection, id: &str) -> sqlx::Result<Option<CommandRow>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM commands WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Reads a command to change it in this transaction, locking its row where the database can
/// (two devices answering at once, or one enrolment token used twice at once, on PostgreSQL).
async fn fetch_for_update(state: &AppState, conn: &mut AnyConnection, id: &str) -> sqlx::Result<Option<CommandRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM commands WHERE id = $1{}",
        state.db.for_update()
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// A client's own command.
pub async fn get(state: &AppState, client: &Client, id: &str) -> ApiResult<CommandRow> {
    let row: Option<CommandRow> = match &state.db.sqlite_read {
        Some(readers) => {
            let (id, client_pk) = (id.to_owned(), client.pk.clone());
            readers
                .run(move |c| Ok(sqlite::client_command(c, &id, &client_pk)?))
                .await?
        }
        None => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM commands WHERE id = $1 AND client_pk = $2"
            ))
            .bind(id)
            .bind(&client.pk)
            .fetch_optional(&state.db.read)
            .await?
        }
    };
    row.ok_or_else(|| ErrorCode::CommandNotFound.into())
}

/// Creates a command, or returns the one made earlier with the same `Idempotency-Key`
/// (`true` when replayed).
pub async fn create(
    state: &AppState,
    client: &Client,
    command_type: CommandType,
    req: CreateCommand,
    idempotency_key: Option<&str>,
    request_hash: &str,
) -> ApiResult<(CommandRow, bool)> {
    if let Some(key) = idempotency_key {
        if let Some(row) = by_idempotency_key(state, client, key, request_hash).await? {
            return Ok((row, true));
        }
    }
    let defaults = &state.settings.commands;
    let timeout = req.timeout.unwrap_or(defaults.default_timeout);
    let lifespan = req.lifespan.unwrap_or(defaults.default_lifespan);
    let lifetimes = Lifetimes::new(timeout, lifespan).map_err(|code| {
        ApiError::new(
            code,
            format!(
                "timeout {timeout} s, lifespan {lifespan} s (at most {} s)",
                Lifetimes::MAX_LIFESPAN
            ),
        )
    })?;
    let payload = rules::payload(req.payload)?;
    let is_provision = command_type == CommandType::Provision;
    if is_provision && timeout > rules::MAX_ENROLMENT_TIMEOUT {
        return Err(ApiError::new(
            ErrorCode::InvalidLifetimes,
            format!(
                "an enrolment link lives at most {} s: a provision's timeout is at most that",
                rules::MAX_ENROLMENT_TIMEOUT
            ),
        ));
    }
    let recipient = rules::recipient(&command_type, req.device_id.as_ref(), req.user_id.as_ref())?;
    let asked = approval::asked(is_provision, req.binding_message, req.number_matching)?;
    let approval = (!is_provision).then(|| {
        let draws = approval::Draws {
            challenge: rand::random(),
            qr_token: rand::random(),
            qr_secret: rand::random(),
            number: rand::random(),
            choices: rand::random(),
        };
        approval::Approval::new(asked, draws)
    });
    let claim_token = match (&recipient, &approval) {
        (Recipient::Claimable, Some(a)) => Some(a.qr_token.clone()),
        _ => None,
    };
    let approval = approval.map(|a| serde_json::to_string(&a).expect("approval serialises"));

    // Whom it is for: on SQLite checked on a reader thread, so the writer only writes (a
    // device revoked in between gets a command it can no longer fetch: its requests are
    // refused); on PostgreSQL the create's own statement finds the device's user.
    let mut find_user = false;
    let user_id: Option<String> = match &recipient {
        Recipient::Device(device) => match &state.db.sqlite_read {
            Some(readers) => {
                let (device, group) = (device.as_str().to_owned(), client.group_id.clone());
                Some(
                    readers
                        .run(move |c| Ok(sqlite::device_user(c, &device, &group)?))
                        .await?
                        .ok_or(ErrorCode::DeviceNotFound)?,
                )
            }
            None => {
                find_user = true;
                None
            }
        },
        Recipient::User(user) => {
            if !is_provision {
                let devices: i64 =
                    match &state.db.sqlite_read {
                        Some(readers) => {
                            let (group, user) = (client.group_id.clone(), user.as_str().to_owned());
                            readers
                                .run(move |c| Ok(sqlite::user_devices(c, &group, &user)?))
                                .await?
                        }
                        None => sqlx::query_scalar(
                            "SELECT COUNT(*) FROM devices WHERE group_id = $1 AND user_id = $2 AND revoked_at IS NULL",
                        )
                        .bind(&client.group_id)
                        .bind(user.as_str())
                        .fetch_one(&state.db.read)
                        .await?,
                    };
                if devices == 0 {
                    return Err(ErrorCode::UserHasNoDevice.into());
                }
            }
            Some(user.as_str().to_owned())
        }
        Recipient::Claimable => None,
    };
    let now = now_ms();
    let id = CommandId::from_random(rand::random());
    let new = NewCommand {
        id: id.as_str().to_owned(),
        group_id: client.group_id.clone(),
        client_pk: client.pk.clone(),
        command_type: command_type.as_str().to_owned(),
        device_id: req.device_id.as_ref().map(|d| d.as_str().to_owned()),
        user_id,
        payload: payload.to_string(),
        timeout_secs: i64::from(lifetimes.timeout),
        lifespan_secs: i64::from(lifetimes.lifespan),
        now,
        idempotency_key: idempotency_key.map(str::to_owned),
        request_hash: request_hash.to_owned(),
        to_mailbox: !is_provision && recipient != Recipient::Claimable,
        approval,
        claim_token,
    };
    let inserted = match &state.db.sqlite {
        Some(writer) => writer.run(move |c| sqlite::create(c, &new)).await?,
        None => create_postgres(state, &new, find_user).await?,
    };
    let Some(row) = inserted else {
        // Another request with the same Idempotency-Key won the race, or (PostgreSQL) the
        // device named is not one of the group's.
        let missing = if find_user {
            ErrorCode::DeviceNotFound
        } else {
            ErrorCode::Internal
        };
        let Some(key) = idempotency_key else {
            return Err(missing.into());
        };
        let row = by_idempotency_key(state, client, key, request_hash).await?;
        return row.map(|r| (r, true)).ok_or_else(|| missing.into());
    };
    state.metrics.commands_created.inc();
    wake_mailbox(state, &row);
    if let (false, Some(user_id)) = (row.is_provision(), &row.user_id) {
        state.push.wake(crate::engine::push::Wake {
            group_id: row.group_id.clone(),
            user_id: user_id.clone(),
            device_id: row.device_id.clone(),
            ttl_secs: u64::try_from(row.timeout_secs).unwrap_or(0),
            at: std::time::Instant::now(),
        });
    }
    Ok((row, false))
}

/// Writes a command and its mailbox event in one statement (PostgreSQL: one round trip). The
/// mailbox number is taken under the mailbox row's lock in the same statement, so it commits
/// with the event (see `engine::mailbox`). With `find_user`, the statement takes the user from
/// the device the command names (enrolled in the group, not revoked), and writes nothing when
/// there is none.
async fn create_postgres(state: &AppState, new: &NewCommand, find_user: bool) -> ApiResult<Option<CommandRow>> {
    let inserted: Option<CommandRow> = sqlx::query_as(&format!(
        "WITH r AS (
             SELECT CASE WHEN $16 THEN (SELECT user_id FROM devices WHERE id = $5 AND group_id = $2 AND revoked_at IS NULL)
                         ELSE $6 END AS user_id),
         c AS (
             INSERT INTO commands (id, group_id, client_pk, type, device_id, user_id, payload, status, timeout_secs,
                 lifespan_secs, created_at, timeout_at, expires_at, idempotency_key, request_hash, approval,
                 claim_token)
             SELECT $1, $2, $3, $4, $5, r.user_id, $7, 'pending', $8, $9, $10, $11, $12, $13, $14, $17, $18
             FROM r WHERE r.user_id IS NOT NULL OR $18 IS NOT NULL
             ON CONFLICT (client_pk, idempotency_key) DO NOTHING
             RETURNING {COLUMNS}),
         m AS (
             INSERT INTO mailboxes (group_id, user_id, last_seq) SELECT group_id, user_id, 1 FROM c WHERE $15
             ON CONFLICT (group_id, user_id) DO UPDATE SET last_seq = mailboxes.last_seq + 1
             RETURNING last_seq, user_id),
         e AS (
             INSERT INTO mailbox_events (group_id, user_id, device_id, command_id, kind, created_at, mailbox_seq)
             SELECT $2, m.user_id, $5, $1, 'command', $10, m.last_seq FROM m)
         SELECT {COLUMNS} FROM c"
    ))
    .bind(&new.id)
    .bind(&new.group_id)
    .bind(&new.client_pk)
    .bind(&new.command_type)
    .bind(&new.device_id)
    .bind(&new.user_id)
    .bind(&new.payload)
    .bind(new.timeout_secs)
    .bind(new.lifespan_secs)
    .bind(new.now)
    .bind(new.now + new.timeout_secs * 1000)
    .bind(new.now + new.lifespan_secs * 1000)
    .bind(&new.idempotency_key)
    .bind(&new.request_hash)
    .bind(new.to_mailbox)
    .bind(find_user)
    .bind(&new.approval)
    .bind(&new.claim_token)
    .fetch_optional(&state.db.write)
    .await?;
    Ok(inserted)
}

async fn by_idempotency_key(
    state: &AppState,
    client: &Client,
    key: &str,
    request_hash: &str,
) -> ApiResult<Option<CommandRow>> {
    let row: Option<CommandRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM commands WHERE client_pk = $1 AND idempotency_key = $2"
    ))
    .bind(&client.pk)
    .bind(key)
    .fetch_optional(&state.db.write)
    .await?;
    match row {
        Some(r) if r.request_hash.as_deref() != Some(request_hash) => Err(ApiError::new(
            ErrorCode::IdempotencyConflict,
            "this Idempotency-Key was used for a different request",
        )),
        other => Ok(other),
    }
}

fn wake_mailbox(state: &AppState, row: &CommandRow) {
    match (&row.device_id, &row.user_id) {
        (Some(d), _) => state.wakeups.wake(&wake::device_key(d)),
        (None, Some(u)) => state.wakeups.wake(&wake::user_key(&row.group_id, u)),
        (None, None) => {}
    }
}

/// The devices whose mailbox holds this command: the one it names, or every device of its user.
pub async fn addressed_devices(state: &AppState, row: &CommandRow) -> ApiResult<Vec<String>> {
    if row.is_provision() {
        return Ok(Vec::new());
    }
    if let Some(device) = &row.device_id {
        return Ok(vec![device.clone()]);
    }
    Ok(
        sqlx::query_scalar("SELECT id FROM devices WHERE group_id = $1 AND user_id = $2 AND revoked_at IS NULL")
            .bind(&row.group_id)
            .bind(&row.user_id)
            .fetch_all(&state.db.read)
            .await?,
    )
}

/// Long-polls a command: returns when its status differs from what it was when asked, when it
/// is final, or after `wait`.
pub async fn wait_for_change(state: &AppState, client: &Client, id: &str, wait: Duration) -> ApiResult<CommandRow> {
    let mut sub = state.wakeups.subscribe(wake::command_key(id));
    let row = get(state, client, id).await?;
    let first = row.status_at(now_ms());
    if wait.is_zero() || first.is_final() {
        return Ok(row);
    }
    let until_timeout = Duration::from_millis((row.timeout_at - now_ms()).max(0) as u64);
    let deadline = tokio::time::Instant::now() + wait.min(until_timeout);
    let mut place = state
        .long_polls
        .enter(crate::engine::longpoll::Holder::Client(client.pk.clone()))?;
    loop {
        tokio::select! {
            () = place.released() => return get(state, client, id).await,
            _ = sub.changed() => {
                let row = get(state, client, id).await?;
                if row.status_at(now_ms()) != first {
                    return Ok(row);
                }
            }
            _ = tokio::time::sleep_until(deadline) => return get(state, client, id).await,
        }
    }
}

/// Cancels an open command; the addressed devices see a `cancelled` mailbox event.
pub async fn cancel(state: &AppState, client: &Client, id: &str) -> ApiResult<CommandRow> {
    let now = now_ms();
    if let Some(writer) = &state.db.sqlite {
        let (owned_id, client_pk) = (id.to_owned(), client.pk.clone());
        let done = writer
            .run(move |c| {
                let id = owned_id;
                let open = sqlite::command(c, &id)?.filter(|r| {
                    r.client_pk == client_pk
                        && rules::cancel(r.stored_status(), r.timeout_at, now) == Ok(rules::Cancel::Cancel)
                });
                let Some(open) = open else { return Ok(None) };
                let (row, queued) =
                    sqlite::finish(c, &id, "cancelled", sqlite::Ending::default(), now)?.ok_or(ErrorCode::Internal)?;
                if !open.is_provision() {
                    let user = row.user_id.as_deref().ok_or(ErrorCode::Internal)?;
                    sqlite::append_mailbox(c, &row.group_id, user, row.device_id.as_deref(), &id, "cancelled", now)?;
                }
                Ok(Some((row, queued)))
            })
            .await?;
        if let Some((row, queued)) = done {
            wake_mailbox(state, &row);
            after_final(state, &row, queued);
            return Ok(row);
        }
        return cancel_refused(state, client, id, now).await;
    }
    let mut tx = state.db.begin_write().await?;
    let cancelled: Option<CommandRow> = sqlx::query_as(&format!(
        "UPDATE commands SET status = 'cancelled', completed_at = $1
         WHERE id = $2 AND client_pk = $3 AND status IN {OPEN} AND timeout_at > $1
         RETURNING {COLUMNS}"
    ))
    .bind(now)
    .bind(id)
    .bind(&client.pk)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = cancelled {
        if !row.is_provision() {
            let user = row.user_id.as_deref().ok_or(ErrorCode::Internal)?;
            let device = row.device_id.as_deref();
            crate::store::mailbox::append(
                &mut tx,
                &row.group_id,
                user,
                device,
                id,
                crate::store::mailbox::Kind::Cancelled,
                now,
            )
            .await?;
        }
        let queued = callbacks::enqueue(&mut tx, &row, now).await?;
        tx.commit().await?;
        wake_mailbox(state, &row);
        after_final(state, &row, queued);
        return Ok(row);
    }
    drop(tx);
    cancel_refused(state, client, id, now).await
}

/// What cancelling a command that is not open (or not this client's) answers.
async fn cancel_refused(state: &AppState, client: &Client, id: &str, now: i64) -> ApiResult<CommandRow> {
    let row = get(state, client, id).await?;
    match rules::cancel(row.stored_status(), row.timeout_at, now)? {
        rules::Cancel::Replay => Ok(row),
        // It was open a moment ago and the update lost a race with an answer or the timeout.
        rules::Cancel::Cancel => Err(ErrorCode::AlreadyAnswered.into()),
    }
}

/// A device's answer. The same answer sent again gets the same reply; a different one is
/// refused.
pub async fn respond(
    state: &AppState,
    device: &DeviceRow,
    id: &str,
    response: DeviceResponse,
    body_hash: &str,
) -> ApiResult<CommandRow> {
    let now = now_ms();
    let data = response.data.clone().unwrap_or_else(|| json!({})).to_string();
    if let Some(writer) = &state.db.sqlite {
        let (id, device, hash) = (id.to_owned(), device.clone(), body_hash.to_owned());
        let (row, queued) = writer
            .run(move |c| {
                let row = sqlite::command(c, &id)?
                    .filter(|r| r.group_id == device.group_id)
                    .ok_or(ErrorCode::CommandNotFound)?;
                let outcome = approval::outcome(row.approval().and_then(|a| a.number), &response)?;
                match rules::answer(&row.facts(), &device.id, &device.user_id, outcome.decision, &hash, now)? {
                    rules::Answer::Replay => Ok((row, None)),
                    rules::Answer::Final(status) => {
                        let ending = sqlite::Ending {
                            result: Some(&data),
                            answered_by: Some(&device.id),
                            response_hash: Some(&hash),
                            reason: outcome.reason.map(OutcomeReason::as_str),
                        };
                        let done = sqlite::finish(c, &id, status.as_str(), ending, now)?;
                        let (row, queued) = done.ok_or(ErrorCode::Internal)?;
                        if row.device_id.is_none() {
                            // Withdrawn from the mailboxes of the user's other devices.
                            let user = row.user_id.as_deref().ok_or(ErrorCode::Internal)?;
                            sqlite::append_mailbox(c, &row.group_id, user, None, &id, "cancelled", now)?;
                        }
                        Ok((row, Some(queued)))
                    }
                }
            })
            .await?;
        if let Some(queued) = queued {
            answered(state, &row);
            after_final(state, &row, queued);
        }
        return Ok(row);
    }
    // PostgreSQL: read, judge, then one statement that ends the command only if it is still
    // open; if another answer or the timeout won in between, judge again on what it wrote.
    loop {
        let row = fetch(&mut *state.db.read.acquire().await?, id)
            .await?
            .filter(|r| r.group_id == device.group_id)
            .ok_or(ErrorCode::CommandNotFound)?;
        let outcome = approval::outcome(row.approval().and_then(|a| a.number), &response)?;
        let status = match rules::answer(
            &row.facts(),
            &device.id,
            &device.user_id,
            outcome.decision,
            body_hash,
            now,
        )? {
            rules::Answer::Replay => return Ok(row),
            rules::Answer::Final(status) => status,
        };
        let (answer_by, result) = (Some(device.id.as_str()), Some(data.as_str()));
        let (event_type, event) = row.ended(status, result, answer_by, Some(body_hash), outcome.reason, now);
        // The callback event is claimed as it is written, for this replica's worker to deliver
        // at once (unless many already wait: then the worker finds it in the database).
        let claim_until = if state.handoff.accepting() {
            callbacks::Handoff::claim_until(&state.settings.callbacks, now)
        } else {
            0
        };
        let done = crate::store::commands::finish(
            &state.db,
            id,
            status,
            result,
            answer_by,
            Some(body_hash),
            outcome.reason,
            now,
            (&event_type, &event),
            claim_until,
        )
        .await?;
        if let Some(ended) = done {
            answered(state, &ended.command);
            match ended.claimed {
                Some(event) => {
                    state.metrics.finished(&ended.command.status);
                    state.wakeups.wake(&wake::command_key(&ended.command.id));
                    state.handoff.push(event);
                }
                None => after_final(state, &ended.command, ended.callback_due),
            }
            return Ok(ended.command);
        }
    }
}

/// A device claims a command created for nobody with a frame of its animated QR code: a frame
/// of that command's, at most `commands.qr-max-age` seconds old. The first claim wins; the
/// command becomes the device's and its user's, delivered to it and in its mailbox. The same
/// device claiming again gets the same answer.
pub async fn claim(state: &AppState, device: &DeviceRow, frame: &str) -> ApiResult<CommandRow> {
    let token = hermod_shared::approval::frame_token(frame)
        .ok_or(ErrorCode::InvalidQrFrame)?
        .to_owned();
    let max_age = u64::from(state.settings.commands.qr_max_age);
    let now = now_ms();
    let judge = {
        let (frame, device_id) = (frame.to_owned(), device.id.clone());
        move |row: &CommandRow| -> ApiResult<rules::Claim> {
            let a = row.approval().ok_or(ErrorCode::Internal)?;
            hermod_shared::approval::verify_frame(&frame, &a.qr_token, &a.qr_secret, row.created_at, now, max_age)
                .map_err(approval::frame_refused)?;
            Ok(rules::claim(&row.facts(), &device_id, now)?)
        }
    };
    let row = if let Some(writer) = &state.db.sqlite {
        let device = device.clone();
        writer
            .run(move |c| {
                let row = sqlite::claimable(c, &token, &device.group_id)?.ok_or(ErrorCode::QrFrameUnknown)?;
                match judge(&row)? {
                    rules::Claim::Replay => Ok(row),
                    rules::Claim::Claim => {
                        Ok(sqlite::claim(c, &row.id, &device.id, &device.user_id, now)?.ok_or(ErrorCode::Internal)?)
                    }
                }
            })
            .await?
    } else {
        let mut tx = state.db.begin_write().await?;
        let row = crate::store::commands::claimable_for_update(&mut tx, &token, &device.group_id)
            .await?
            .ok_or(ErrorCode::QrFrameUnknown)?;
        match judge(&row)? {
            rules::Claim::Replay => row,
            rules::Claim::Claim => {
                let row = crate::store::commands::claim(&mut tx, &row.id, &device.id, &device.user_id, now)
                    .await?
                    .ok_or(ErrorCode::Internal)?;
                crate::store::mailbox::append(
                    &mut tx,
                    &row.group_id,
                    &device.user_id,
                    Some(&device.id),
                    &row.id,
                    crate::store::mailbox::Kind::Command,
                    now,
                )
                .await?;
                tx.commit().await?;
                row
            }
        }
    };
    state.wakeups.wake(&wake::command_key(&row.id));
    Ok(row)
}

/// After a device's answer: the user's other devices learn the command was withdrawn, and a
/// `not_me` decline is counted and written to the audit log.
fn answered(state: &AppState, row: &CommandRow) {
    if row.device_id.is_none() {
        wake_mailbox(state, row);
    }
    if row.reason.as_deref() == Some(OutcomeReason::NotMe.as_str()) {
        let (state, row) = (state.clone(), row.clone());
        tokio::spawn(async move {
            if let Err(e) = audit_not_me(&state, &row).await {
                tracing::warn!(command_id = %row.id, error = %e, "could not write the not_me audit record");
            }
        });
    }
}

/// A user said they started nothing: the tenant's audit log records it, with the command, the
/// device and the user (no payload, no result).
async fn audit_not_me(state: &AppState, row: &CommandRow) -> sqlx::Result<()> {
    let mut tx = state.db.begin_write().await?;
    let tenant_id: String = sqlx::query_scalar("SELECT tenant_id FROM clients WHERE id = $1")
        .bind(&row.client_pk)
        .fetch_one(&mut *tx)
        .await?;
    state
        .metrics
        .declined_not_me
        .get_or_create(&crate::engine::metrics::TenantLabel {
            tenant: tenant_id.clone(),
        })
        .inc();
    crate::store::audit::Record {
        tenant_id: &tenant_id,
        actor: &format!("device:{}", row.answered_by.as_deref().unwrap_or("")),
        action: "command.declined.not_me",
        target: Some(&row.id),
        detail: Some(json!({ "user_id": row.user_id, "type": row.command_type })),
    }
    .write(&mut tx, now_ms())
    .await?;
    tx.commit().await
}

fn after_final(state: &AppState, row: &CommandRow, callback_queued: bool) {
    state.metrics.finished(&row.status);
    state.wakeups.wake(&wake::command_key(&row.id));
    if callback_queued {
        state.outbox.notify_one();
    }
}

/// Enrols a device with the single-use token of a `provision` command, which it completes.
pub async fn enrol(state: &AppState, req: EnrolRequest) -> ApiResult<EnrolResponse> {
    let (command_id, _) = state
        .keys
        .verify_token(&req.token)
        .ok_or(ErrorCode::InvalidEnrolmentToken)?;
    // The device's secret derives from the current key, whichever key made the link.
    let key = state.keys.current();
    if req
        .name
        .as_ref()
        .is_some_and(|n| n.chars().count() > 100 || n.chars().any(char::is_control))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "name must be at most 100 printable characters",
        ));
    }
    let now = now_ms();
    let mut tx = state.db.begin_write().await?;
    let row = fetch_for_update(state, &mut tx, command_id.as_str())
        .await?
        .filter(|r| rules::enrols(&r.facts(), now))
        .ok_or(ErrorCode::InvalidEnrolmentToken)?;
    let user_id = row
        .user_id
        .clone()
        .and_then(|u| UserId::parse(&u))
        .ok_or(ErrorCode::Internal)?;
    crate::store::tenants::check_device_quota(&mut tx, &state.db, &row.group_id).await?;
    let device_id = DeviceId::from_random(rand::random());
    sqlx::query("INSERT INTO devices (id, group_id, user_id, name, enrolled_by, enrolled_at, last_seen_at, key_id) VALUES ($1, $2, $3, $4, $5, $6, $6, $7)")
        .bind(device_id.as_str())
        .bind(&row.group_id)
        .bind(user_id.as_str())
        .bind(&req.name)
        .bind(&row.id)
        .bind(now)
        .bind((!key.is_legacy()).then(|| key.id().to_owned()))
        .execute(&mut *tx)
        .await?;
    let result = json!({ "device_id": device_id, "name": req.name, "data": req.data.unwrap_or_else(|| json!({})) });
    sqlx::query(&format!(
        "UPDATE commands SET status = 'approved', result = $1, answered_by = $2, completed_at = $3 WHERE id = $4 AND status IN {OPEN}"
    ))
    .bind(result.to_string())
    .bind(device_id.as_str())
    .bind(now)
    .bind(&row.id)
    .execute(&mut *tx)
    .await?;
    let row = fetch(&mut tx, &row.id).await?.ok_or(ErrorCode::Internal)?;
    let queued = callbacks::enqueue(&mut tx, &row, now).await?;
    tx.commit().await?;
    after_final(state, &row, queued);
    tracing::info!(device_id = %device_id, command_id = %row.id, "device enrolled");
    Ok(EnrolResponse {
        device_secret: key.device_secret(&device_id).to_base64(),
        device_id,
        user_id,
        server_time: now,
    })
}

/// Open commands past their timeout (`$1` now), oldest first; `commands_open_by_timeout` holds
/// only open commands.
pub static DUE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM commands WHERE status IN {OPEN} AND timeout_at <= $1 ORDER BY timeout_at LIMIT 500")
});
/// Commands past their lifespan (`$1` now), at most 5,000 a sweep (a bounded write even after
/// a long stop; a sweep a second keeps up with 5,000 commands a second); their mailbox events go
/// with them.
pub const FORGET_SQL: &str =
    "DELETE FROM commands WHERE id IN (SELECT id FROM commands WHERE expires_at <= $1 LIMIT 5000)";
/// Nonces past the signature window (`$1` now).
pub const FORGET_NONCES_SQL: &str = "DELETE FROM nonces WHERE expires_at <= $1";

/// Expires open commands past their timeout (each with its callback), and forgets commands
/// past their lifespan and nonces past the signature window. Safe to run concurrently.
pub async fn sweep(state: &AppState) -> anyhow::Result<()> {
    let now = now_ms();
    if let Some(writer) = &state.db.sqlite {
        let expired = writer
            .run(move |c| Ok(sqlite::sweep(c, &DUE_SQL, FORGET_SQL, FORGET_NONCES_SQL, now)?))
            .await
            .map_err(|e| anyhow::anyhow!("sweeping: {:?}", e.code))?;
        for (row, _) in &expired {
            state.metrics.finished("expired");
            state.wakeups.wake(&wake::command_key(&row.id));
        }
        if expired.iter().any(|(_, queued)| *queued) {
            state.outbox.notify_one();
        }
        return Ok(());
    }
    let due: Vec<CommandRow> = sqlx::query_as(&DUE_SQL).bind(now).fetch_all(&state.db.write).await?;
    if !due.is_empty() {
        let mut expired = Vec::new();
        let mut queued = false;
        let mut tx = state.db.begin_write().await?;
        for row in due {
            let done = sqlx::query(&format!(
                "UPDATE commands SET status = 'expired', completed_at = $1 WHERE id = $2 AND status IN {OPEN}"
            ))
            .bind(now)
            .bind(&row.id)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                let row = fetch(&mut tx, &row.id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("command vanished"))?;
                queued |= callbacks::enqueue(&mut tx, &row, now).await?;
                expired.push(row.id);
            }
        }
        tx.commit().await?;
        for id in &expired {
            state.metrics.finished("expired");
            state.wakeups.wake(&wake::command_key(id));
        }
        if queued {
            state.outbox.notify_one();
        }
        tracing::debug!(count = expired.len(), "commands expired");
    }
    sqlx::query(FORGET_SQL).bind(now).execute(&state.db.write).await?;
    sqlx::query(FORGET_NONCES_SQL)
        .bind(now)
        .execute(&state.db.write)
        .await?;
    Ok(())
}

/// Marks commands that a device fetched as delivered.
pub async fn mark_delivered(state: &AppState, ids: &[String]) -> ApiResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let changed: Vec<String> = match &state.db.sqlite {
        Some(writer) => {
            let ids = ids.to_vec();
            writer
                .run(move |c| Ok(crate::store::sqlite::mark_delivered(c, &ids)?))
                .await?
        }
        None => {
            // One statement for the whole page (atomic by itself, no transaction around it).
            let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "UPDATE commands SET status = 'delivered' WHERE status = 'pending' AND id IN ({}) RETURNING id",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_scalar::<_, String>(&sql);
            for id in ids {
                query = query.bind(id);
            }
            query.fetch_all(&state.db.write).await?
        }
    };
    delivered(state, changed);
    Ok(())
}

/// Commands that became delivered: their clients' long-polls learn it.
pub fn delivered(state: &AppState, ids: Vec<String>) {
    for id in ids {
        state.wakeups.wake(&wake::command_key(&id));
    }
}
