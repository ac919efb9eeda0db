//! Callback signatures in the Standard Webhooks v1 format (symmetric, HMAC-SHA256).
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the `webhook-signature`
//! header is a space-separated list of `v1,<base64>` so that during a secret rotation both the
//! old and the new secret sign, and a receiver accepts if any signature matches.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// The spec's tolerance for a receiver: five minutes either way.
pub const TOLERANCE_SECS: i64 = 300;

/// A signing secret, written `whsec_<base64>` (24–64 random bytes). `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    pub const PREFIX: &'static str = "whsec_";

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes.to_vec())
    }

    pub fn parse(s: &str) -> Option<Self> {
        let bytes = STANDARD.decode(s.trim().strip_prefix(Self::PREFIX)?).ok()?;
        (24..=64).contains(&bytes.len()).then_some(Self(bytes))
    }

    /// The `whsec_…` form, to show its owner once.
    pub fn expose(&self) -> String {
        format!("{}{}", Self::PREFIX, STANDARD.encode(&self.0))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        mac
    }

    /// One `v1,<base64>` signature.
    pub fn sign(&self, msg_id: &str, timestamp: i64, payload: &[u8]) -> String {
        format!(
            "v1,{}",
            STANDARD.encode(self.mac(msg_id, timestamp, payload).finalize().into_bytes())
        )
    }
}

/// The `webhook-signature` header value: one signature per active secret.
pub fn signature_header(secrets: &[WebhookSecret], msg_id: &str, timestamp: i64, payload: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| s.sign(msg_id, timestamp, payload))
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook-timestamp missing or not an integer")]
    MalformedTimestamp,
    #[error("webhook-timestamp too old")]
    Stale,
    #[error("webhook-timestamp in the future")]
    Future,
    #[error("no signature matches")]
    NoMatch,
}

/// What a receiver does: checks the timestamp against `now` and accepts if any `v1` signature
/// in the header matches any of `secrets`.
pub fn verify(
    secrets: &[WebhookSecret],
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    payload: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), WebhookError> {
    let ts: i64 = timestamp.trim().parse().map_err(|_| WebhookError::MalformedTimestamp)?;
    if ts < now - tolerance_secs {
        return Err(WebhookError::Stale);
    }
    if ts > now + tolerance_secs {
        return Err(WebhookError::Future);
    }
    let candidates = signature_header
        .split(' ')
        .filter_map(|part| part.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok());
    for given in candidates {
        // verify_slice: constant time, and an empty or short signature never matches.
        if secrets
            .iter()
            .any(|s| s.mac(msg_id, ts, payload).verify_slice(&given).is_ok())
        {
            return Ok(());
        }
    }
    Err(WebhookError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks specification's own example.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret() -> WebhookSecret {
        WebhookSecret::parse(SPEC_SECRET).unwrap()
    }

    #[test]
    fn matches_the_spec_vector() {
        assert_eq!(secret().sign(SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
        assert_eq!(secret().expose(), SPEC_SECRET);
        assert_eq!(
            verify(&[secret()], SPEC_ID, "1614265330", SPEC_SIG, SPEC_BODY, SPEC_TS, 300),
            Ok(())
        );
    }

    #[test]
    fn wrong_secret_empty_and_truncated_signatures_fail() {
        let other = WebhookSecret::from_bytes([7; 32]);
        let v =
            |secrets: &[WebhookSecret], sig: &str| verify(secrets, SPEC_ID, "1614265330", sig, SPEC_BODY, SPEC_TS, 300);
        assert_eq!(v(std::slice::from_ref(&other), SPEC_SIG), Err(WebhookError::NoMatch));
        assert_eq!(v(&[secret()], "v1,"), Err(WebhookError::NoMatch));
        assert_eq!(v(&[secret()], ""), Err(WebhookError::NoMatch));
        assert_eq!(v(&[secret()], &SPEC_SIG[..20]), Err(WebhookError::NoMatch));
        assert_eq!(
            v(&[secret()], "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            Err(WebhookError::NoMatch)
        );
        // A tampered body.
        assert_eq!(
            verify(
                &[secret()],
                SPEC_ID,
                "1614265330",
                SPEC_SIG,
                br#"{"test": 2432232315}"#,
                SPEC_TS,
                300
            ),
            Err(WebhookError::NoMatch)
        );
    }

    #[test]
    fn stale_future_and_malformed_timestamps_fail() {
        assert_eq!(
            verify(
                &[secret()],
                SPEC_ID,
                "1614265330",
                SPEC_SIG,
                SPEC_BODY,
                SPEC_TS + 301,
                300
            ),
            Err(WebhookError::Stale)
        );
        assert_eq!(
            verify(
                &[secret()],
                SPEC_ID,
                "1614265330",
                SPEC_SIG,
                SPEC_BODY,
                SPEC_TS - 301,
                300
            ),
            Err(WebhookError::Future)
        );
        assert_eq!(
            verify(&[secret()], SPEC_ID, "soon", SPEC_SIG, SPEC_BODY, SPEC_TS, 300),
            Err(WebhookError::MalformedTimestamp)
        );
    }

    #[test]
    fn rotation_sends_both_and_either_verifies() {
        let new = WebhookSecret::from_bytes([9; 32]);
        let header = signature_header(&[secret(), new.clone()], SPEC_ID, SPEC_TS, SPEC_BODY);
        assert!(header.starts_with(SPEC_SIG) && header.contains(' '));
        assert_eq!(
            verify(&[new], SPEC_ID, "1614265330", &header, SPEC_BODY, SPEC_TS, 300),
            Ok(())
        );
        assert_eq!(
            verify(&[secret()], SPEC_ID, "1614265330", &header, SPEC_BODY, SPEC_TS, 300),
            Ok(())
        );
    }

    #[test]
    fn secret_parsing() {
        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_none());
        assert!(WebhookSecret::parse("whsec_c2hvcnQ=").is_none());
        assert_eq!(format!("{:?}", secret()), "WebhookSecret(<redacted>)");
    }
}
