//! Commands as stored: the row, its columns, and what it shows to a client and a device.

use hermod_shared::enrolment;
use hermod_shared::wire::{rfc3339, CommandView, Enrolment, MailboxCommand};
use hermod_shared::{CommandId, CommandStatus, CommandType, DeviceId, UserId};
use serde_json::Value;

use crate::domain::approval::Approval;
use crate::domain::command as rules;
use hermod_shared::approval::OutcomeReason;

pub const COLUMNS: &str = "id, group_id, client_pk, type, device_id, user_id, payload, status, result, answered_by, \
    response_hash, timeout_secs, lifespan_secs, created_at, timeout_at, expires_at, completed_at, idempotency_key, request_hash, approval, reason";

pub const OPEN: &str = "('pending', 'delivered')";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CommandRow {
    pub id: String,
    pub group_id: String,
    pub client_pk: String,
    #[sqlx(rename = "type")]
    pub command_type: String,
    pub device_id: Option<String>,
    pub user_id: Option<String>,
    pub payload: String,
    pub status: String,
    pub result: Option<String>,
    pub answered_by: Option<String>,
    pub response_hash: Option<String>,
    pub timeout_secs: i64,
    pub lifespan_secs: i64,
    pub created_at: i64,
    pub timeout_at: i64,
    pub expires_at: i64,
    pub completed_at: Option<i64>,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
    /// [`Approval`] as JSON; `None` for a provision.
    pub approval: Option<String>,
    /// Why it ended as it did, when known ([`OutcomeReason`]'s name).
    pub reason: Option<String>,
}

impl CommandRow {
    pub fn stored_status(&self) -> CommandStatus {
        CommandStatus::parse(&self.status).unwrap_or(CommandStatus::Expired)
    }

    /// The status as of `now`: an open command past its timeout is expired even before the
    /// sweeper has written so.
    pub fn status_at(&self, now: i64) -> CommandStatus {
        rules::status_at(self.stored_status(), self.timeout_at, now)
    }

    /// What the rules need to know of this command.
    pub fn facts(&self) -> rules::Facts<'_> {
        rules::Facts {
            provision: self.is_provision(),
            device_id: self.device_id.as_deref(),
            user_id: self.user_id.as_deref(),
            status: self.stored_status(),
            timeout_at: self.timeout_at,
            answered_by: self.answered_by.as_deref(),
            response_hash: self.response_hash.as_deref(),
        }
    }

    /// What the command carries for the person confirming it.
    pub fn approval(&self) -> Option<Approval> {
        self.approval.as_deref().and_then(|a| serde_json::from_str(a).ok())
    }

    pub fn is_provision(&self) -> bool {
        self.command_type == CommandType::Provision.as_str()
    }

    /// The command as its client sees it at `now`; an open `provision` shows its enrolment
    /// link when `enrolment` gives the server key and the public mailbox URL.
    pub fn view(&self, now: i64, enrolment: Option<(&hermod_shared::keys::ServerKey, &str)>) -> CommandView {
        let status = self.status_at(now);
        let enrolment =
            enrolment
                .filter(|_| self.is_provision() && !status.is_final())
                .map(|(server_key, public_url)| {
                    let id = CommandId::parse(&self.id).expect("stored ids are valid");
                    let token = server_key.issue_token(&id);
                    Enrolment {
                        link: enrolment::deep_link(public_url, &token),
                        // Absolute, beside the mailbox URL: `https://h/hermod/rest/ms` gives
                        // `https://h/hermod/rest/command/{id}/qr`.
                        qr_url: format!(
                            "{}/command/{}/qr",
                            public_url.strip_suffix("/ms").unwrap_or(public_url),
                            self.id
                        ),
                        token,
                    }
                });
        let approval = self.approval();
        let approval = approval.as_ref();
        CommandView {
            verification_code: approval.map(Approval::verification_code),
            binding_message: approval.and_then(|a| a.binding_message.clone()),
            number: approval.and_then(|a| a.number),
            qr_start_token: approval.map(|a| a.qr_token.clone()),
            qr_start_secret: None,
            reason: self.reason.as_deref().and_then(OutcomeReason::parse),
            id: CommandId::parse(&self.id).expect("stored ids are valid"),
            command_type: self.command_type.clone(),
            status,
            device_id: self.device_id.as_deref().and_then(DeviceId::parse),
            user_id: self.user_id.as_deref().and_then(UserId::parse),
            payload: serde_json::from_str(&self.payload).unwrap_or(Value::Null),
            result: self.result.as_deref().and_then(|r| serde_json::from_str(r).ok()),
            answered_by: self.answered_by.as_deref().and_then(DeviceId::parse),
            timeout: self.timeout_secs as u32,
            lifespan: self.lifespan_secs as u32,
            created_at: rfc3339(self.created_at),
            timeout_at: rfc3339(self.timeout_at),
            expires_at: rfc3339(self.expires_at),
            completed_at: self.completed_at.map(rfc3339),
            enrolment,
        }
    }

    pub fn mailbox_command(&self) -> MailboxCommand {
        let approval = self.approval();
        let approval = approval.as_ref();
        MailboxCommand {
            verification_code: approval.map(Approval::verification_code),
            binding_message: approval.and_then(|a| a.binding_message.clone()),
            number_choices: approval.and_then(|a| a.choices).map(Vec::from),
            id: CommandId::parse(&self.id).expect("stored ids are valid"),
            command_type: self.command_type.clone(),
            payload: serde_json::from_str(&self.payload).unwrap_or(Value::Null),
            created_at: rfc3339(self.created_at),
            timeout_at: rfc3339(self.timeout_at),
        }
    }
}

/// The command for nobody of a group that a QR start token names (PostgreSQL), locked for the
/// claim in this transaction.
pub async fn claimable_for_update(
    conn: &mut sqlx::AnyConnection,
    claim_token: &str,
    group_id: &str,
) -> sqlx::Result<Option<CommandRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM commands WHERE claim_token = $1 AND group_id = $2 FOR UPDATE"
    ))
    .bind(claim_token)
    .bind(group_id)
    .fetch_optional(conn)
    .await
}

/// Gives an open command for nobody to the device that claimed it (PostgreSQL; its mailbox
/// event is appended by the caller in the same transaction).
pub async fn claim(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    device_id: &str,
    user_id: &str,
    now: i64,
) -> sqlx::Result<Option<CommandRow>> {
    sqlx::query_as(&format!(
        "UPDATE commands SET device_id = $1, user_id = $2, status = 'delivered'
         WHERE id = $3 AND device_id IS NULL AND status IN {OPEN} AND timeout_at > $4
         RETURNING {COLUMNS}"
    ))
    .bind(device_id)
    .bind(user_id)
    .bind(id)
    .bind(now)
    .fetch_optional(conn)
    .await
}

/// A command that ended, the callback event it owes (if its client has a receiver) and that
/// receiver as the statement read it.
#[derive(Debug, sqlx::FromRow)]
struct Finished {
    #[sqlx(flatten)]
    command: CommandRow,
    event_id: Option<String>,
    event_status: Option<String>,
    event_claimed_until: Option<i64>,
    tenant_id: Option<String>,
    #[sqlx(flatten)]
    receiver: super::outbox::Receiver,
}

/// How a command ended on PostgreSQL.
#[derive(Debug)]
pub struct Ended {
    pub command: CommandRow,
    /// Whether a callback event is due for delivery.
    pub callback_due: bool,
    /// That event, when it was claimed with the write (`claim_until`): the caller hands it to
    /// the delivery worker itself.
    pub claimed: Option<super::outbox::Claimed>,
}

/// Ends an open command (PostgreSQL, one statement): the new state and the callback event it
/// owes (`event` is its type and body, built from the state it ends in) commit together.
/// With `claim_until` > 0 the event is written claimed until then (by this replica, which
/// delivers it at once), and the statement returns its receiver too: the first attempt then
/// needs no query for candidates, no claim and no read of the receiver. `None` when the
/// command was no longer open.
#[allow(clippy::too_many_arguments)]
pub async fn finish(
    db: &super::Db,
    id: &str,
    status: CommandStatus,
    result: Option<&str>,
    answered_by: Option<&str>,
    response_hash: Option<&str>,
    reason: Option<OutcomeReason>,
    now: i64,
    event: (&str, &str),
    claim_until: i64,
) -> sqlx::Result<Option<Ended>> {
    let finished: Option<Finished> = sqlx::query_as(&FINISH_PG)
        .bind(status.as_str())
        .bind(result)
        .bind(answered_by)
        .bind(response_hash)
        .bind(now)
        .bind(id)
        .bind(super::random_id("msg_"))
        .bind(event.0)
        .bind(event.1)
        .bind(super::GONE)
        .bind(claim_until)
        .bind(reason.map(OutcomeReason::as_str))
        .fetch_optional(&db.write)
        .await?;
    Ok(finished.map(|f| {
        let callback_due = f.event_status.as_deref() == Some("pending");
        let claimed = match (f.event_id, f.event_claimed_until, f.tenant_id) {
            (Some(event_id), Some(until), Some(tenant_id)) if callback_due && until > 0 => {
                Some(super::outbox::Claimed {
                    id: event_id,
                    client_pk: f.command.client_pk.clone(),
                    payload: event.1.to_owned(),
                    attempts: 0,
                    tenant_id,
                    created_at: now,
                    claimed_until: until,
                    receiver: Some(f.receiver),
                })
            }
            _ => None,
        };
        Ended {
            command: f.command,
            callback_due,
            claimed,
        }
    }))
}

static FINISH_PG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let done_columns = COLUMNS
        .split(", ")
        .map(|c| format!("done.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH done AS (
             UPDATE commands SET status = $1, result = COALESCE($2, result), answered_by = COALESCE($3, answered_by),
                 response_hash = COALESCE($4, response_hash), completed_at = $5, reason = COALESCE($12, reason)
             WHERE id = $6 AND status IN {OPEN}
             RETURNING {COLUMNS}),
         -- A command for a user is withdrawn from the mailboxes of the user's other devices.
         m AS (
             UPDATE mailboxes SET last_seq = mailboxes.last_seq + 1 FROM done
             WHERE done.device_id IS NULL AND done.answered_by IS NOT NULL
               AND mailboxes.group_id = done.group_id AND mailboxes.user_id = done.user_id
             RETURNING mailboxes.last_seq),
         me AS (
             INSERT INTO mailbox_events (group_id, user_id, device_id, command_id, kind, created_at, mailbox_seq)
             SELECT done.group_id, done.user_id, NULL, done.id, 'cancelled', $5, m.last_seq FROM done, m),
         ev AS (
             INSERT INTO callback_events (id, client_pk, command_id, event_type, payload, status, next_attempt_at, created_at,
                 last_error, claimed_until)
             SELECT $7, done.client_pk, done.id, $8, $9,
                    CASE WHEN cl.callback_disabled_at IS NULL THEN 'pending' ELSE 'dead' END, $5, $5,
                    CASE WHEN cl.callback_disabled_at IS NULL THEN NULL ELSE $10 END,
                    CASE WHEN cl.callback_disabled_at IS NULL THEN $11 ELSE 0 END
             FROM done JOIN clients cl ON cl.id = done.client_pk WHERE cl.callback_url IS NOT NULL
             RETURNING id, status, claimed_until)
         SELECT {done_columns}, ev.id AS event_id, ev.status AS event_status, ev.claimed_until AS event_claimed_until,
                cl.tenant_id, cl.callback_url, cl.callback_basic_auth, cl.callback_secrets, cl.callback_disabled_at,
                COALESCE(cl.source, 'config') AS source
         FROM done LEFT JOIN ev ON TRUE LEFT JOIN clients cl ON cl.id = done.client_pk"
    )
});

impl CommandRow {
    /// This command as it is once ended in `status` at `now` (before it is written), and the
    /// callback event (type, JSON body) that this end owes.
    pub fn ended(
        &self,
        status: CommandStatus,
        result: Option<&str>,
        answered_by: Option<&str>,
        response_hash: Option<&str>,
        reason: Option<OutcomeReason>,
        now: i64,
    ) -> (String, String) {
        let mut ended = self.clone();
        ended.status = status.as_str().to_owned();
        ended.result = result.map(str::to_owned).or(ended.result);
        ended.answered_by = answered_by.map(str::to_owned).or(ended.answered_by);
        ended.response_hash = response_hash.map(str::to_owned).or(ended.response_hash);
        ended.reason = reason.map(|r| r.as_str().to_owned()).or(ended.reason);
        ended.completed_at = Some(now);
        let event = hermod_shared::wire::CallbackEvent {
            event_type: format!("command.{}", status.as_str()),
            timestamp: rfc3339(now),
            data: ended.view(now, None),
        };
        let body = serde_json::to_string(&event).expect("events serialise");
        (event.event_type, body)
    }
}
