//! Device request signing: HMAC-SHA256 over the method, path, timestamp, nonce and body hash.
//!
//! A device proves every request with four headers. The string it signs is
//!
//! ```text
//! HERMOD-DEVICE-V1\n{device id}\n{METHOD}\n{path and query}\n{unix seconds}\n{nonce}\n{hex sha256(body)}
//! ```
//!
//! so a signature cannot be moved to another device, route, body or time. The server refuses a
//! timestamp outside its window (answering with its own time so the device can correct a
//! skewed clock) and a nonce it has seen within that window.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt;

use crate::command::DeviceId;
use crate::error::ErrorCode;

type HmacSha256 = Hmac<Sha256>;

pub const HEADER_DEVICE: &str = "hermod-device";
pub const HEADER_TIMESTAMP: &str = "hermod-timestamp";
pub const HEADER_NONCE: &str = "hermod-nonce";
pub const HEADER_SIGNATURE: &str = "hermod-signature";
/// Every answer carries the server's time in unix milliseconds under this header.
pub const HEADER_SERVER_TIME: &str = "hermod-server-time";

/// How far (seconds) a request's timestamp may be from the server's clock, either way.
pub const DEFAULT_WINDOW_SECS: i64 = 300;

/// A device's 256-bit signing secret. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceSecret([u8; 32]);

impl fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceSecret(<redacted>)")
    }
}

impl DeviceSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Derives the secret of `device` from the server key, so the server (and the edge, which
    /// holds the same key) can check a device's signature without storing a secret per device.
    pub fn derive(server_key: &[u8], device: &DeviceId) -> Self {
        let mut mac = HmacSha256::new_from_slice(server_key).expect("HMAC takes any key length");
        mac.update(b"hermod/device-secret/v1\n");
        mac.update(device.as_str().as_bytes());
        Self(mac.finalize().into_bytes().into())
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    pub fn from_base64(s: &str) -> Option<Self> {
        let bytes = STANDARD.decode(s.trim()).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    fn mac(&self, canonical: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(canonical.as_bytes());
        mac
    }
}

/// Why a signed request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature headers missing or malformed")]
    Malformed,
    #[error("request timestamp is too old")]
    Stale,
    #[error("request timestamp is in the future")]
    Future,
    #[error("signature does not verify")]
    Mismatch,
    #[error("nonce already used")]
    Replayed,
}

impl From<SignatureError> for ErrorCode {
    fn from(e: SignatureError) -> Self {
        match e {
            SignatureError::Malformed | SignatureError::Mismatch => ErrorCode::InvalidSignature,
            SignatureError::Stale | SignatureError::Future => ErrorCode::StaleRequest,
            SignatureError::Replayed => ErrorCode::ReplayedRequest,
        }
    }
}

/// The four signature headers of a device request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub device: DeviceId,
    pub timestamp: i64,
    pub nonce: String,
    pub signature: String,
}

impl SignedHeaders {
    /// Parses the header values; any of them missing or malformed is [`SignatureError::Malformed`].
    pub fn parse(
        device: Option<&str>,
        timestamp: Option<&str>,
        nonce: Option<&str>,
        signature: Option<&str>,
    ) -> Result<Self, SignatureError> {
        let device = device.and_then(DeviceId::parse).ok_or(SignatureError::Malformed)?;
        let timestamp = timestamp
            .and_then(crate::parse_unix_seconds)
            .ok_or(SignatureError::Malformed)?;
        let nonce = nonce.filter(|n| valid_nonce(n)).ok_or(SignatureError::Malformed)?;
        let signature = signature
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .ok_or(SignatureError::Malformed)?;
        Ok(Self {
            device,
            timestamp,
            nonce: nonce.to_owned(),
            signature: signature.to_owned(),
        })
    }
}

/// A nonce is 16–64 characters of `[A-Za-z0-9_-]`.
fn valid_nonce(n: &str) -> bool {
    (16..=64).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn canonical(device: &DeviceId, method: &str, path: &str, timestamp: i64, nonce: &str, body: &[u8]) -> String {
    format!(
        "HERMOD-DEVICE-V1\n{}\n{}\n{}\n{}\n{}\n{}",
        device.as_str(),
        method.to_ascii_uppercase(),
        path,
        timestamp,
        nonce,
        crate::sha256_hex(body)
    )
}

/// Signs a request as `device`. `nonce` must be fresh and random (16–64 URL-safe characters).
pub fn sign(
    secret: &DeviceSecret,
    device: &DeviceId,
    method: &str,
    path: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> SignedHeaders {
    let mac = secret.mac(&canonical(device, method, path, timestamp, nonce, body));
    SignedHeaders {
        device: device.clone(),
        timestamp,
        nonce: nonce.to_owned(),
        signature: STANDARD.encode(mac.finalize().into_bytes()),
    }
}

/// Checks a signed request against the server clock `now` (unix seconds). Replays are the
/// caller's to refuse, with a [`NonceLedger`] or a store that remembers nonces for the window.
pub fn verify(
    secret: &DeviceSecret,
    headers: &SignedHeaders,
    method: &str,
    path: &str,
    body: &[u8],
    now: i64,
    window_secs: i64,
) -> Result<(), SignatureError> {
    if headers.timestamp < now.saturating_sub(window_secs) {
        return Err(SignatureError::Stale);
    }
    if headers.timestamp > now.saturating_add(window_secs) {
        return Err(SignatureError::Future);
    }
    if !valid_nonce(&headers.nonce) {
        return Err(SignatureError::Malformed);
    }
    let given = STANDARD
        .decode(&headers.signature)
        .map_err(|_| SignatureError::Mismatch)?;
    let mac = secret.mac(&canonical(
        &headers.device,
        method,
        path,
        headers.timestamp,
        &headers.nonce,
        body,
    ));
    // verify_slice compares in constant time and refuses a signature of another length.
    mac.verify_slice(&given).map_err(|_| SignatureError::Mismatch)
}

/// Remembers the nonces seen within the window, in memory. Entries older than the window are
/// pruned: a request that old is refused as stale before its nonce is looked at.
#[derive(Debug, Default)]
pub struct NonceLedger {
    seen: HashMap<(DeviceId, String), i64>,
}

impl NonceLedger {
    /// Records the nonce of an already verified request, or refuses it as a replay.
    pub fn record(&mut self, headers: &SignedHeaders, now: i64, window_secs: i64) -> Result<(), SignatureError> {
        self.seen.retain(|_, ts| *ts >= now.saturating_sub(window_secs));
        let key = (headers.device.clone(), headers.nonce.clone());
        if self.seen.contains_key(&key) {
            return Err(SignatureError::Replayed);
        }
        self.seen.insert(key, headers.timestamp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000;

    fn device() -> DeviceId {
        DeviceId::parse("dev_00112233445566778899aabbccddeeff").unwrap()
    }

    fn secret() -> DeviceSecret {
        DeviceSecret::derive(b"server key for tests", &device())
    }

    fn signed(body: &[u8]) -> SignedHeaders {
        sign(
            &secret(),
            &device(),
            "post",
            "/ms/mailbox?cursor=3",
            NOW,
            "nonce-0123456789abcdef",
            body,
        )
    }

    #[test]
    fn pinned_vector() {
        // Computed independently (Python hmac/hashlib). Pinned so that a change of the canonical string or the derivation breaks this test
        // before it breaks every enrolled device.
        assert_eq!(secret().to_base64(), "vFcH7StT+tAdMALOrXIf2WoU5UxQx4JsG8/vbeJOltM=");
        assert_eq!(signed(b"{}").signature, "ltkps26lvgoyvCKu2prRSBiv6R91bVWshhRYcRelU8A=");
        assert_eq!(signed(b"").signature, "PIBiN1ilDllJDGjSWS0C+cw5qv/Z26ZrwnI2tN/vMFE=");
    }

    #[test]
    fn a_good_signature_verifies_within_the_window() {
        let h = signed(b"{}");
        for now in [NOW, NOW - 300, NOW + 300] {
            assert_eq!(
                verify(&secret(), &h, "POST", "/ms/mailbox?cursor=3", b"{}", now, 300),
                Ok(())
            );
        }
    }

    #[test]
    fn tampering_is_refused() {
        let h = signed(b"{}");
        let v = |h: &SignedHeaders, method, path, body: &[u8]| verify(&secret(), h, method, path, body, NOW, 300);
        assert_eq!(
            v(&h, "GET", "/ms/mailbox?cursor=3", b"{}"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v(&h, "POST", "/ms/mailbox?cursor=4", b"{}"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v(&h, "POST", "/ms/mailbox?cursor=3", b"{ }"),
            Err(SignatureError::Mismatch)
        );
        let other = DeviceSecret::derive(b"another server", &device());
        assert_eq!(
            verify(&other, &h, "POST", "/ms/mailbox?cursor=3", b"{}", NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn empty_and_truncated_signatures_are_refused() {
        let mut h = signed(b"{}");
        let full = h.signature.clone();
        for sig in ["", "AA==", &full[..full.len() - 4], "not base64 at all!"] {
            h.signature = sig.to_owned();
            assert_eq!(
                verify(&secret(), &h, "POST", "/ms/mailbox?cursor=3", b"{}", NOW, 300),
                Err(SignatureError::Mismatch),
                "{sig:?}"
            );
        }
        assert_eq!(
            SignedHeaders::parse(
                Some(device().as_str()),
                Some("1"),
                Some("nonce-0123456789abcdef"),
                Some("")
            ),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let h = signed(b"{}");
        assert_eq!(
            verify(&secret(), &h, "POST", "/ms/mailbox?cursor=3", b"{}", NOW + 301, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(&secret(), &h, "POST", "/ms/mailbox?cursor=3", b"{}", NOW - 301, 300),
            Err(SignatureError::Future)
        );
    }

    #[test]
    fn replayed_nonces_are_refused() {
        let mut ledger = NonceLedger::default();
        let h = signed(b"{}");
        assert_eq!(ledger.record(&h, NOW, 300), Ok(()));
        assert_eq!(ledger.record(&h, NOW + 10, 300), Err(SignatureError::Replayed));
        let fresh = sign(
            &secret(),
            &device(),
            "POST",
            "/ms/mailbox?cursor=3",
            NOW,
            "nonce-fedcba9876543210",
            b"{}",
        );
        assert_eq!(ledger.record(&fresh, NOW, 300), Ok(()));
    }

    #[test]
    fn header_parsing() {
        let dev = device();
        let dev = dev.as_str();
        let ok = SignedHeaders::parse(Some(dev), Some("17"), Some("nonce-0123456789abcdef"), Some("c2ln"));
        assert!(ok.is_ok());
        let cases = [
            (None, Some("17"), Some("nonce-0123456789abcdef"), Some("c2ln")),
            (
                Some("dev_bad"),
                Some("17"),
                Some("nonce-0123456789abcdef"),
                Some("c2ln"),
            ),
            (
                Some(dev),
                Some("seventeen"),
                Some("nonce-0123456789abcdef"),
                Some("c2ln"),
            ),
            (Some(dev), Some("17"), Some("short"), Some("c2ln")),
            (Some(dev), Some("17"), Some("nonce with spaces 123"), Some("c2ln")),
            (Some(dev), Some("17"), Some("nonce-0123456789abcdef"), None),
        ];
        for (d, t, n, s) in cases {
            assert_eq!(SignedHeaders::parse(d, t, n, s), Err(SignatureError::Malformed));
        }
    }

    #[test]
    fn secrets_do_not_debug_print() {
        assert_eq!(format!("{:?}", secret()), "DeviceSecret(<redacted>)");
    }
}
