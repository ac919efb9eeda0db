//! Waking devices by push, as pure rules: what a push carries (a wake hint, nothing of the
//! command), what a device may register, and what each answer of a push service means.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hermod_shared::ErrorCode;

use super::command::Refusal;

/// The whole content of every push: "wake up and poll your mailbox". No command id, type,
/// text, user or client: the push service learns nothing but that the device has mail.
pub const WAKE_PAYLOAD: &str = r#"{"hermod":"wake"}"#;
/// The Web Push `Topic`: a newer push replaces an undelivered older one (a burst wakes once).
pub const TOPIC: &str = "hermod-wake";
/// Longest accepted push endpoint URL.
pub const MAX_ENDPOINT: usize = 1024;

/// A device's Web Push subscription, checked: its endpoint and decoded keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebPushKeys {
    /// The uncompressed P-256 point (65 bytes, `0x04` first).
    pub p256dh: Vec<u8>,
    /// The 16-byte authentication secret.
    pub auth: Vec<u8>,
}

fn decode(field: &'static str, value: &str) -> Result<Vec<u8>, Refusal> {
    URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| Refusal::new(ErrorCode::InvalidRequest, field))
}

/// Checks a Web Push registration's shape: an absolute `https` (or `http`) endpoint of at most
/// 1,024 characters, `p256dh` an uncompressed P-256 point and `auth` 16 bytes, both base64url.
/// Whether the point is on the curve, and whether the endpoint's address may be reached, are
/// judged where the crypto and the egress policy live.
pub fn web_push(endpoint: &str, p256dh: &str, auth: &str) -> Result<WebPushKeys, Refusal> {
    let scheme_ok = endpoint.starts_with("https://") || endpoint.starts_with("http://");
    if !scheme_ok || endpoint.len() > MAX_ENDPOINT || endpoint.chars().any(|c| c.is_control() || c == ' ') {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "endpoint must be an absolute https URL of at most 1024 characters",
        ));
    }
    let key = decode("keys.p256dh must be base64url", p256dh)?;
    if key.len() != 65 || key[0] != 4 {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "keys.p256dh must be an uncompressed P-256 public key (65 bytes)",
        ));
    }
    let secret = decode("keys.auth must be base64url", auth)?;
    if secret.len() != 16 {
        return Err(Refusal::new(ErrorCode::InvalidRequest, "keys.auth must be 16 bytes"));
    }
    Ok(WebPushKeys {
        p256dh: key,
        auth: secret,
    })
}

/// Whether a configured VAPID private key has the right shape (32 bytes, base64url).
pub fn vapid_key_ok(key: &str) -> bool {
    URL_SAFE_NO_PAD
        .decode(key.trim_end_matches('='))
        .is_ok_and(|k| k.len() == 32)
}

/// What a push service's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted (RFC 8030: 201).
    Sent,
    /// The subscription is gone (404, 410): remove the registration.
    Dead,
    /// Try again after this many seconds (429 or 5xx, within the attempts).
    Retry(u64),
    /// Refused for good (another 4xx), or out of attempts.
    Failed,
}

/// Attempts per push, the first included.
pub const MAX_ATTEMPTS: u32 = 4;
/// The longest wait a `Retry-After` may ask for.
pub const MAX_RETRY_AFTER: u64 = 300;

/// Judges an answer to attempt `attempt` (1-based): `Retry-After` (seconds) is honoured up to
/// five minutes; without it the waits are 1, 4 and 16 s.
pub fn verdict(status: u16, retry_after: Option<&str>, attempt: u32) -> Verdict {
    match status {
        200..=299 => Verdict::Sent,
        404 | 410 => Verdict::Dead,
        429 | 500..=599 if attempt < MAX_ATTEMPTS => {
            let asked = retry_after.and_then(|v| v.trim().parse::<u64>().ok());
            Verdict::Retry(asked.unwrap_or(4u64.pow(attempt - 1)).min(MAX_RETRY_AFTER))
        }
        _ => Verdict::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P256DH: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

    #[test]
    fn registrations_take_a_url_a_p256_point_and_a_16_byte_secret() {
        let keys = web_push("https://push.example/sub/1", P256DH, AUTH).unwrap();
        assert_eq!((keys.p256dh.len(), keys.auth.len()), (65, 16));
        for (endpoint, p256dh, auth) in [
            ("ftp://push.example/1", P256DH, AUTH),
            ("push.example/1", P256DH, AUTH),
            ("https://push.example/a b", P256DH, AUTH),
            ("https://push.example/1", "not base64!", AUTH),
            ("https://push.example/1", AUTH, AUTH),
            ("https://push.example/1", P256DH, P256DH),
        ] {
            assert!(web_push(endpoint, p256dh, auth).is_err(), "{endpoint} {p256dh} {auth}");
        }
        let long = format!("https://push.example/{}", "a".repeat(MAX_ENDPOINT));
        assert!(web_push(&long, P256DH, AUTH).is_err());
    }

    #[test]
    fn the_wake_payload_names_nothing() {
        let v: serde_json::Value = serde_json::from_str(WAKE_PAYLOAD).unwrap();
        assert_eq!(v, serde_json::json!({ "hermod": "wake" }));
    }

    #[test]
    fn answers_of_a_push_service() {
        assert_eq!(verdict(201, None, 1), Verdict::Sent);
        assert_eq!(verdict(410, None, 1), Verdict::Dead);
        assert_eq!(verdict(404, None, 3), Verdict::Dead);
        assert_eq!(verdict(429, Some("7"), 1), Verdict::Retry(7));
        assert_eq!(verdict(429, Some("99999"), 1), Verdict::Retry(MAX_RETRY_AFTER));
        assert_eq!(verdict(503, None, 1), Verdict::Retry(1));
        assert_eq!(verdict(503, None, 2), Verdict::Retry(4));
        assert_eq!(verdict(503, None, 3), Verdict::Retry(16));
        assert_eq!(verdict(503, None, MAX_ATTEMPTS), Verdict::Failed);
        assert_eq!(verdict(400, None, 1), Verdict::Failed);
        assert_eq!(verdict(413, None, 1), Verdict::Failed);
        assert!(vapid_key_ok("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
        assert!(!vapid_key_ok("AAAA"));
    }

    proptest! {
        /// A push is retried at most MAX_ATTEMPTS times in all, never waiting more than 5 min.
        #[test]
        fn retries_are_bounded(status in 100u16..600, attempt in 1u32..10, after in proptest::option::of(0u64..1_000_000)) {
            let after = after.map(|a| a.to_string());
            match verdict(status, after.as_deref(), attempt) {
                Verdict::Retry(wait) => {
                    prop_assert!(attempt < MAX_ATTEMPTS);
                    prop_assert!(wait <= MAX_RETRY_AFTER);
                    prop_assert!(status == 429 || status >= 500);
                }
                Verdict::Sent => prop_assert!((200..300).contains(&status)),
                Verdict::Dead => prop_assert!(status == 404 || status == 410),
                Verdict::Failed => {}
            }
        }
    }
}
