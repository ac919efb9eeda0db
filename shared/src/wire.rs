//! Request and response bodies of the client API (`/command`) and the device API (`/ms`).
//! Bodies refuse unknown fields, so a misspelt field is an error rather than silently ignored.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::command::{CommandId, CommandStatus, DeviceId, UserId};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// `POST /command/{type}`: whom the command is for, what it carries and how long it lives.
/// Exactly one of `device_id` and `user_id`; a `provision` command takes `user_id`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateCommand {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<DeviceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// Any JSON object the device needs (text to show, a document digest to sign…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub payload: Option<Value>,
    /// Seconds until the command leaves the mailbox. Must be less than `lifespan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// Seconds until the command leaves history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifespan: Option<u32>,
    /// The text the device shows with the request (CIBA's `binding_message`): 1–256
    /// characters, no control characters (no line breaks) and no invisible or bidi formatting
    /// characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub binding_message: Option<String>,
    /// Number matching: Hermod picks a 2-digit `number` for the client to show; the device
    /// shows it among three choices and sends the one the user picked. A wrong pick declines
    /// the command with reason `number_mismatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_matching: Option<bool>,
}

/// A command as its client sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CommandView {
    pub id: CommandId,
    #[serde(rename = "type")]
    pub command_type: String,
    pub status: CommandStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<DeviceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: Value,
    /// What the device answered, once it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub result: Option<Value>,
    /// The device that answered (or enrolled, for `provision`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<DeviceId>,
    pub timeout: u32,
    pub lifespan: u32,
    pub created_at: String,
    /// When it leaves the mailbox.
    pub timeout_at: String,
    /// When it leaves history.
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// For `provision`: how the device enrols.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolment: Option<Enrolment>,
    /// The 4-digit code the device shows too: the user checks that both screens show the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9]{4}$"))]
    pub verification_code: Option<String>,
    /// The text the device shows with the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_message: Option<String>,
    /// With number matching: the number to show the user, who picks it on the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 10, maximum = 99))]
    pub number: Option<u8>,
    /// The animated QR code's token (in every frame, see `qr_start_secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_start_token: Option<String>,
    /// Only in the answer to the create (and to its replay with the same `Idempotency-Key`):
    /// the key of the animated QR code's frames,
    /// `hermod.{qr_start_token}.{t}.{hex(HMAC-SHA256(qr_start_secret, decimal t))}` with `t` the
    /// whole seconds since `created_at`. Never shown again, never in a callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_start_secret: Option<String>,
    /// Why the command ended as it did, when a reason is known (a decline's reason,
    /// `number_mismatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<crate::approval::OutcomeReason>,
}

/// How a device enrols for a `provision` command: open the deep link or scan the QR code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Enrolment {
    /// The single-use enrolment token.
    pub token: String,
    /// `hermod://enrol?ms=…&token=…`, what the QR code holds.
    pub link: String,
    /// Where to fetch the QR code (SVG) with the client's credentials: an absolute URL beside
    /// the public mailbox URL (its prefix kept).
    pub qr_url: String,
}

/// A command as a device sees it in its mailbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MailboxCommand {
    pub id: CommandId,
    #[serde(rename = "type")]
    pub command_type: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: Value,
    pub created_at: String,
    /// The device must answer before this time.
    pub timeout_at: String,
    /// The 4-digit code to show: the client's screen shows the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9]{4}$"))]
    pub verification_code: Option<String>,
    /// The text to show with the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_message: Option<String>,
    /// With number matching: the three numbers to offer; the answer's `number` is the one the
    /// user picked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_choices: Option<Vec<u8>>,
}

/// What happened in a mailbox: a new command, or one the device may have shown was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MailboxEventKind {
    Command,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MailboxItem {
    /// Position in the mailbox; pass the page's `cursor` to get only what came after.
    pub seq: i64,
    pub kind: MailboxEventKind,
    /// For `cancelled`: why the command was withdrawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<WithdrawReason>,
    pub command: MailboxCommand,
}

/// Why a command left the mailbox before the device answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WithdrawReason {
    /// Its client cancelled it.
    CancelledByClient,
    /// Another device of the user answered it first.
    AnsweredElsewhere,
}

/// `GET /ms/mailbox?cursor=N&wait=S`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MailboxPage {
    pub items: Vec<MailboxItem>,
    /// The cursor to send next time.
    pub cursor: i64,
    /// The server's clock, unix milliseconds, so a device can correct its own.
    pub server_time: i64,
}

/// `POST /ms/claim`: a frame of a command's animated QR code, as the device scanned it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// `hermod.{qr_start_token}.{t}.{code}`, exactly as the QR code holds it.
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    pub frame: String,
}

/// The claimed command, now in the device's mailbox too: show it and answer it as any other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ClaimAccepted {
    pub command: MailboxCommand,
    pub server_time: i64,
}

/// How a device is woken when it is not long-polling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PushTransport {
    /// Web Push (RFC 8030, RFC 8291 encryption, VAPID): browsers and UnifiedPush distributors.
    Webpush,
}

/// A Web Push subscription's keys, base64url, as `PushSubscription.toJSON()` gives them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WebPushKeys {
    /// The subscription's P-256 public key (uncompressed, 65 bytes).
    pub p256dh: String,
    /// Its 16-byte authentication secret.
    pub auth: String,
}

/// `PUT /ms/push`: how to wake this device. Replaces an earlier registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PushRegistration {
    pub transport: PushTransport,
    /// The push service's URL for this subscription.
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub endpoint: String,
    pub keys: WebPushKeys,
}

/// A device's push registration, as the server keeps it (its keys are not shown again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PushRegistered {
    pub transport: PushTransport,
    pub endpoint: String,
}

/// `GET /ms/push`: what the server offers and what the device registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PushStatus {
    /// The VAPID public key (base64url, uncompressed P-256) to subscribe with as the
    /// `applicationServerKey`; absent when this server sends no Web Push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webpush_vapid_public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<PushRegistered>,
}

/// The device's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approved,
    Declined,
}

/// `POST /ms/commands/{id}/response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceResponse {
    pub result: Decision,
    /// Why the user declined (only with `declined`; `user_declined` when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<crate::approval::DeclineReason>,
    /// With number matching: the number the user picked among the command's
    /// `number_choices` (required to approve such a command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u8>,
    /// What the device returns to the client: a signature, a certificate, a public key…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub data: Option<Value>,
}

/// The answer to a device's response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ResponseAccepted {
    pub id: CommandId,
    pub status: CommandStatus,
    pub server_time: i64,
}

/// `POST /ms/enrol`: the token from the link, and how the device names itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Public data the client asked the device to send back (for example a public key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub data: Option<Value>,
}

/// The device's identity and signing secret, shown once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EnrolResponse {
    pub device_id: DeviceId,
    pub user_id: UserId,
    /// Base64 of the 256-bit HMAC key the device signs its requests with.
    pub device_secret: String,
    pub server_time: i64,
}

/// `POST /ms/rekey` answer: the device's secret under the server's current key. The device
/// stores it and signs with it from its next request on (its old secret keeps working until
/// then, so a lost answer costs nothing: ask again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RekeyResponse {
    /// Base64 of the device's new 256-bit signing key.
    pub device_secret: String,
    /// The server key it derives from.
    pub key_id: String,
    pub server_time: i64,
}

/// `POST /ms/lifesign` answer, and what clients read about a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeviceView {
    pub device_id: DeviceId,
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub enrolled_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<String>,
    /// How the device is woken when it is not long-polling, when it registered for push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushTransport>,
}

/// The body of a callback. `type` is `command.approved`, `command.declined`,
/// `command.cancelled` or `command.expired`: every command that ends sends exactly one, so a
/// receiver can close every command it opened. `data` is the command as `GET /command/{id}`
/// shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CallbackEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: String,
    pub data: CommandView,
}

/// Where a callback event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    Delivered,
    /// Out of retries, or its receiver answered 410 Gone: kept, and recoverable.
    Dead,
}

/// One attempt to deliver a callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CallbackAttempt {
    pub at: String,
    /// The receiver's HTTP status, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub duration_ms: i64,
    /// Why there was no answer, coarsely: `timed out`, `connection failed`, `TLS handshake
    /// failed`, `refused by the egress policy: …`. Never the receiver's body or a socket error
    /// text (they would tell an attacker what listens where).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A callback event and its delivery so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CallbackDelivery {
    /// The `webhook-id` header: the same on every attempt.
    pub id: String,
    pub command_id: CommandId,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub attempt_log: Vec<CallbackAttempt>,
}

/// `POST /command/callbacks/recover`: send again every dead callback of the client created in
/// `[since, until)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    /// RFC 3339.
    pub since: String,
    /// RFC 3339; now when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RecoverResult {
    /// How many dead callbacks were queued again.
    pub requeued: u64,
}

/// What the edge caches about a client to check its key without asking the backend each time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeClient {
    pub client_id: String,
    /// Lowercase hex SHA-256 of each active key (two during a rotation).
    pub key_hashes: Vec<String>,
}

/// RFC 3339 UTC with milliseconds, from unix milliseconds: `2026-11-22T12:00:00.000Z`. Beyond
/// the years 9999 BC–9999 AD (never a stored time) it gives the nearest of those bounds.
pub fn rfc3339(unix_ms: i64) -> String {
    use time::{macros::format_description, OffsetDateTime, PrimitiveDateTime};
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000).unwrap_or_else(|_| {
        if unix_ms < 0 {
            PrimitiveDateTime::MIN
        } else {
            PrimitiveDateTime::MAX
        }
        .assume_utc()
    });
    at.format(format).expect("a date within the supported years formats")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_pinned() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_348_800_000), "2026-11-22T12:00:00.000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59.999Z");
    }

    proptest::proptest! {
        /// What `rfc3339` writes, an RFC 3339 parser reads back as the same instant (to the
        /// millisecond), for any time from 1900 to 9999.
        #[test]
        fn rfc3339_reads_back_as_the_same_instant(ms in -2_208_988_800_000i64..253_402_300_799_999) {
            let text = rfc3339(ms);
            let parsed = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339).unwrap();
            proptest::prop_assert_eq!(parsed.unix_timestamp_nanos(), i128::from(ms) * 1_000_000, "{}", text);
            proptest::prop_assert_eq!(text.len(), 24);
        }
    }

    #[test]
    fn create_command_refuses_unknown_fields() {
        assert!(serde_json::from_str::<CreateCommand>(r#"{"user_id":"alice","timeout":5}"#).is_ok());
        assert!(serde_json::from_str::<CreateCommand>(r#"{"userId":"alice"}"#).is_err());
        assert!(serde_json::from_str::<CreateCommand>(r#"{"device_id":"dev_nope"}"#).is_err());
    }
}
