//! The signed internal channel from the edge Worker to the backend.
//!
//! The edge authenticates callers near them, then forwards the request with an assertion of
//! who the caller is, signed with a secret that only the edge and the backend hold, and bound
//! to the method, the path and query, the body and the time:
//!
//! ```text
//! Hermod-Edge-Assertion: v1,{unix seconds},{nonce},{caller},{base64 HMAC-SHA256}
//! signed: HERMOD-EDGE-V1\n{METHOD}\n{path?query}\n{seconds}\n{nonce}\n{caller}\n{hex sha256(body)}
//! ```
//!
//! `caller` is `client:{client id}`, `device:{device id}`, `anonymous` (enrolment, public
//! pages) or `edge` (the edge's own look-ups, never a forwarded request). A backend behind the edge refuses a request whose assertion is missing, forged,
//! stale or replayed.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const HEADER_ASSERTION: &str = "hermod-edge-assertion";
/// How far (seconds) an assertion's time may be from the backend's clock.
pub const WINDOW_SECS: i64 = 30;

/// Who the edge says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Client(String),
    Device(String),
    Anonymous,
    /// The edge itself (for example fetching a client's key hash to cache).
    Edge,
}

impl Caller {
    fn encode(&self) -> String {
        match self {
            Caller::Client(id) => format!("client:{id}"),
            Caller::Device(id) => format!("device:{id}"),
            Caller::Anonymous => "anonymous".to_owned(),
            Caller::Edge => "edge".to_owned(),
        }
    }

    fn decode(s: &str) -> Option<Self> {
        match s.split_once(':') {
            Some(("client", id)) if !id.is_empty() => Some(Caller::Client(id.to_owned())),
            Some(("device", id)) if !id.is_empty() => Some(Caller::Device(id.to_owned())),
            None if s == "anonymous" => Some(Caller::Anonymous),
            None if s == "edge" => Some(Caller::Edge),
            _ => None,
        }
    }
}

/// A verified assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    pub caller: Caller,
    pub timestamp: i64,
    pub nonce: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("edge assertion missing")]
    Missing,
    #[error("edge assertion malformed")]
    Malformed,
    #[error("edge assertion outside the time window")]
    Stale,
    #[error("edge assertion does not verify")]
    Forged,
    #[error("edge assertion replayed")]
    Replayed,
}

fn mac(secret: &[u8], method: &str, path: &str, ts: i64, nonce: &str, caller: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(
        format!(
            "HERMOD-EDGE-V1\n{}\n{path}\n{ts}\n{nonce}\n{caller}\n{}",
            method.to_ascii_uppercase(),
            crate::sha256_hex(body)
        )
        .as_bytes(),
    );
    mac
}

/// The header value the edge sends. `nonce` is fresh and random (16–64 of `[A-Za-z0-9_-]`).
pub fn sign(secret: &[u8], method: &str, path: &str, now: i64, nonce: &str, caller: &Caller, body: &[u8]) -> String {
    let caller = caller.encode();
    let tag = mac(secret, method, path, now, nonce, &caller, body)
        .finalize()
        .into_bytes();
    format!("v1,{now},{nonce},{caller},{}", STANDARD.encode(tag))
}

/// Checks an assertion against the backend clock `now`. Replays are the caller's to refuse by
/// remembering `nonce` for the window.
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
    now: i64,
) -> Result<Assertion, AssertionError> {
    let header = header.ok_or(AssertionError::Missing)?;
    let mut parts = header.splitn(5, ',');
    let (Some("v1"), Some(ts), Some(nonce), Some(caller), Some(tag)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AssertionError::Malformed);
    };
    let timestamp = crate::parse_unix_seconds(ts).ok_or(AssertionError::Malformed)?;
    let valid_nonce = (16..=64).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let decoded = Caller::decode(caller)
        .filter(|_| valid_nonce)
        .ok_or(AssertionError::Malformed)?;
    if timestamp.abs_diff(now) > WINDOW_SECS.unsigned_abs() {
        return Err(AssertionError::Stale);
    }
    let given = STANDARD.decode(tag).map_err(|_| AssertionError::Forged)?;
    mac(secret, method, path, timestamp, nonce, caller, body)
        .verify_slice(&given)
        .map_err(|_| AssertionError::Forged)?;
    Ok(Assertion {
        caller: decoded,
        timestamp,
        nonce: nonce.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"edge and backend share this";
    const NONCE: &str = "0123456789abcdef0123";

    fn signed(caller: &Caller) -> String {
        sign(SECRET, "post", "/command/ping", 1_000, NONCE, caller, b"{}")
    }

    #[test]
    fn round_trips_for_every_caller() {
        for caller in [
            Caller::Client("idm".into()),
            Caller::Device("dev_1".into()),
            Caller::Anonymous,
        ] {
            let header = signed(&caller);
            let a = verify(SECRET, Some(&header), "POST", "/command/ping", b"{}", 1_010).unwrap();
            assert_eq!(a.caller, caller);
            assert_eq!(a.nonce, NONCE);
        }
    }

    #[test]
    fn extreme_timestamps_are_refused_without_overflow() {
        let header = signed(&Caller::Anonymous);
        let rest = header.splitn(3, ',').nth(2).unwrap();
        for ts in ["-9223372036854775808", "9223372036854775807", "+1000", "0001000"] {
            let forged = format!("v1,{ts},{rest}");
            assert_eq!(
                verify(SECRET, Some(&forged), "POST", "/command/ping", b"{}", 1_000),
                Err(AssertionError::Malformed),
                "{ts}"
            );
        }
        // A valid spelling with the clock at either end of i64: stale, not a panic.
        for now in [i64::MIN, i64::MAX] {
            assert_eq!(
                verify(SECRET, Some(&header), "POST", "/command/ping", b"{}", now),
                Err(AssertionError::Stale)
            );
        }
    }

    #[test]
    fn refuses_missing_forged_tampered_and_stale() {
        let header = signed(&Caller::Client("idm".into()));
        let v = |h: Option<&str>, path: &str, body: &[u8], now: i64| verify(SECRET, h, "POST", path, body, now);
        assert_eq!(v(None, "/command/ping", b"{}", 1_000), Err(AssertionError::Missing));
        assert_eq!(
            v(Some("v1,garbage"), "/command/ping", b"{}", 1_000),
            Err(AssertionError::Malformed)
        );
        assert_eq!(
            v(Some(&header), "/command/sign", b"{}", 1_000),
            Err(AssertionError::Forged)
        );
        assert_eq!(
            v(Some(&header), "/command/ping", b"{ }", 1_000),
            Err(AssertionError::Forged)
        );
        assert_eq!(
            v(Some(&header), "/command/ping", b"{}", 1_031),
            Err(AssertionError::Stale)
        );
        assert_eq!(
            v(Some(&header), "/command/ping", b"{}", 969),
            Err(AssertionError::Stale)
        );
        let other_caller = header.replace("client:idm", "client:da");
        assert_eq!(
            v(Some(&other_caller), "/command/ping", b"{}", 1_000),
            Err(AssertionError::Forged)
        );
        let forged = sign(
            b"a guessed secret",
            "POST",
            "/command/ping",
            1_000,
            NONCE,
            &Caller::Anonymous,
            b"{}",
        );
        assert_eq!(
            v(Some(&forged), "/command/ping", b"{}", 1_000),
            Err(AssertionError::Forged)
        );
        let empty_tag = format!("v1,1000,{NONCE},anonymous,");
        assert_eq!(
            v(Some(&empty_tag), "/command/ping", b"{}", 1_000),
            Err(AssertionError::Forged)
        );
    }
}
