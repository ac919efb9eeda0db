//! Error codes and the one problem+json shape (RFC 9457) that every front door answers with.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable reason for a 4xx or 5xx answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    MalformedJson,
    InvalidRequest,
    UnsupportedMediaType,
    UnknownCommandType,
    InvalidLifetimes,
    BodyTooLarge,
    InvalidCredentials,
    InvalidSignature,
    StaleRequest,
    ReplayedRequest,
    InvalidEnrolmentToken,
    InvalidEdgeAssertion,
    CommandNotFound,
    DeviceNotFound,
    UserHasNoDevice,
    NotAddressedToDevice,
    AlreadyAnswered,
    CommandCancelled,
    CommandExpired,
    IdempotencyConflict,
    /// A claim's QR frame is not a frame of Hermod's, or its code was not made by the command's
    /// secret.
    InvalidQrFrame,
    /// A genuine QR frame, older than `commands.qr-max-age` (a screenshot, a relayed image).
    QrFrameStale,
    /// No command of the device's group waiting to be claimed has this frame's token.
    QrFrameUnknown,
    /// Another device claimed the command first.
    AlreadyClaimed,
    NotFound,
    MethodNotAllowed,
    RateLimited,
    QuotaExceeded,
    Forbidden,
    Conflict,
    /// Hermod cannot serve this now (its database is unreachable, or a cap of long-polls is
    /// reached): retry after `Retry-After`.
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            MalformedJson | InvalidRequest | UnknownCommandType | InvalidLifetimes | InvalidQrFrame | QrFrameStale => {
                400
            }
            InvalidCredentials
            | InvalidSignature
            | StaleRequest
            | ReplayedRequest
            | InvalidEnrolmentToken
            | InvalidEdgeAssertion => 401,
            NotAddressedToDevice | Forbidden => 403,
            CommandNotFound | DeviceNotFound | UserHasNoDevice | QrFrameUnknown | NotFound => 404,
            MethodNotAllowed => 405,
            AlreadyAnswered | CommandCancelled | AlreadyClaimed | Conflict => 409,
            CommandExpired => 410,
            BodyTooLarge => 413,
            UnsupportedMediaType => 415,
            IdempotencyConflict => 422,
            RateLimited | QuotaExceeded => 429,
            Internal => 500,
            Unavailable => 503,
        }
    }

    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MalformedJson => "malformed_json",
            InvalidRequest => "invalid_request",
            UnsupportedMediaType => "unsupported_media_type",
            UnknownCommandType => "unknown_command_type",
            InvalidLifetimes => "invalid_lifetimes",
            BodyTooLarge => "body_too_large",
            InvalidCredentials => "invalid_credentials",
            InvalidSignature => "invalid_signature",
            StaleRequest => "stale_request",
            ReplayedRequest => "replayed_request",
            InvalidEnrolmentToken => "invalid_enrolment_token",
            InvalidEdgeAssertion => "invalid_edge_assertion",
            CommandNotFound => "command_not_found",
            DeviceNotFound => "device_not_found",
            UserHasNoDevice => "user_has_no_device",
            NotAddressedToDevice => "not_addressed_to_device",
            AlreadyAnswered => "already_answered",
            CommandCancelled => "command_cancelled",
            CommandExpired => "command_expired",
            IdempotencyConflict => "idempotency_conflict",
            InvalidQrFrame => "invalid_qr_frame",
            QrFrameStale => "qr_frame_stale",
            QrFrameUnknown => "qr_frame_unknown",
            AlreadyClaimed => "already_claimed",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            RateLimited => "rate_limited",
            QuotaExceeded => "quota_exceeded",
            Forbidden => "forbidden",
            Conflict => "conflict",
            Internal => "internal",
            Unavailable => "unavailable",
        }
    }

    /// A short human title; `detail` in a [`Problem`] says what exactly was wrong.
    pub fn title(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MalformedJson => "The request body is not valid JSON for this operation",
            InvalidRequest => "The request is invalid",
            UnsupportedMediaType => "The request body must be application/json",
            UnknownCommandType => "Unknown command type",
            InvalidLifetimes => "timeout must be positive and shorter than lifespan",
            BodyTooLarge => "The request body is too large",
            InvalidCredentials => "Missing or invalid credentials",
            InvalidSignature => "Missing or invalid request signature",
            StaleRequest => "The request timestamp is too far from the server's time",
            ReplayedRequest => "This nonce was already used",
            InvalidEnrolmentToken => "The enrolment token is invalid, used or expired",
            InvalidEdgeAssertion => "This backend only answers requests forwarded by its edge",
            CommandNotFound => "No such command",
            DeviceNotFound => "No such device",
            UserHasNoDevice => "The user has no enrolled device",
            NotAddressedToDevice => "The command is not addressed to this device",
            AlreadyAnswered => "The command was already answered",
            CommandCancelled => "The command was cancelled",
            CommandExpired => "The command expired",
            IdempotencyConflict => "The Idempotency-Key was used with a different request",
            InvalidQrFrame => "This is not a genuine QR frame of the command",
            QrFrameStale => "The QR frame is too old: scan the code on the screen again",
            QrFrameUnknown => "No command waiting to be claimed has this QR code",
            AlreadyClaimed => "Another device claimed this command first",
            NotFound => "Not found",
            MethodNotAllowed => "Method not allowed",
            RateLimited => "Too many requests",
            QuotaExceeded => "The tenant's quota is used up",
            Forbidden => "These credentials may not do this",
            Conflict => "This conflicts with what exists",
            Internal => "Internal server error",
            Unavailable => "Temporarily unavailable: retry after Retry-After",
        }
    }
}

/// `application/problem+json` body. Never carries secrets, stack traces or database messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub code: ErrorCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Problem {
    pub const CONTENT_TYPE: &'static str = "application/problem+json";

    pub fn new(code: ErrorCode, detail: Option<String>) -> Self {
        Self {
            type_uri: format!("urn:hermod:problem:{}", code.as_str()),
            title: code.title().to_owned(),
            status: code.status(),
            code,
            detail,
        }
    }
}

impl From<ErrorCode> for Problem {
    fn from(code: ErrorCode) -> Self {
        Self::new(code, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_shape_is_stable() {
        let p = Problem::new(ErrorCode::InvalidLifetimes, Some("timeout 60 >= lifespan 60".into()));
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "urn:hermod:problem:invalid_lifetimes",
                "title": "timeout must be positive and shorter than lifespan",
                "status": 400,
                "code": "invalid_lifetimes",
                "detail": "timeout 60 >= lifespan 60"
            })
        );
    }

    #[test]
    fn serde_name_matches_as_str() {
        for code in [
            ErrorCode::MalformedJson,
            ErrorCode::UserHasNoDevice,
            ErrorCode::QuotaExceeded,
            ErrorCode::Internal,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
