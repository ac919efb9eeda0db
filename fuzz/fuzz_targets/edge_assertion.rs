//! The edge's signed assertion as the backend checks it: fuzzed `Hermod-Edge-Assertion`,
//! method, path, body and clock (any i64, extremes included). Never a panic; what verifies is
//! inside the window; what the edge signs verifies at its time for the same request only.
//!
//! Input: `header \0 method \0 path \0 now \0 body`.
#![no_main]

use hermod_fuzz::{clock, fields, text};
use hermod_shared::edge::{self, AssertionError, Caller, WINDOW_SECS};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"edge and backend share this secret";

fuzz_target!(|data: &[u8]| {
    let f = fields(data, 5);
    let header = text(f[0]).unwrap_or_default();
    let method = text(f[1]).unwrap_or_else(|| "POST".into());
    let path = text(f[2]).unwrap_or_else(|| "/command/ping".into());
    let now = clock(f[3], 1_790_000_000);
    let body = f[4].unwrap_or_default();

    match edge::verify(SECRET, Some(&header), &method, &path, body, now) {
        Ok(a) => {
            assert!(a.timestamp.abs_diff(now) <= WINDOW_SECS as u64);
            assert!((16..=64).contains(&a.nonce.len()));
        }
        Err(AssertionError::Missing) => panic!("a header was given"),
        Err(_) => {}
    }
    assert_eq!(
        edge::verify(SECRET, None, &method, &path, body, now),
        Err(AssertionError::Missing)
    );

    // Sign as the edge does, from parts of the fuzzed header: it verifies at its own time.
    let mut parts = header.splitn(5, ',');
    let _ = parts.next();
    let (Some(ts), Some(nonce), Some(caller)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let Some(ts) = hermod_shared::parse_unix_seconds(ts) else { return };
    let nonce_ok = (16..=64).contains(&nonce.len())
        && nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !nonce_ok {
        return;
    }
    let caller = match caller.split_once(':') {
        // A caller id holding ',' cannot travel in this comma-separated header; not tested here.
        Some(("client", id)) if !id.is_empty() && !id.contains(',') => Caller::Client(id.into()),
        Some(("device", id)) if !id.is_empty() && !id.contains(',') => Caller::Device(id.into()),
        _ if caller == "edge" => Caller::Edge,
        _ => Caller::Anonymous,
    };
    let signed = edge::sign(SECRET, &method, &path, ts, nonce, &caller, body);
    let a = edge::verify(SECRET, Some(&signed), &method, &path, body, ts).expect("a fresh assertion verifies");
    assert_eq!((a.caller, a.timestamp, a.nonce.as_str()), (caller, ts, nonce));
    let mut other = body.to_vec();
    other.push(b'!');
    assert_eq!(
        edge::verify(SECRET, Some(&signed), &method, &path, &other, ts),
        Err(AssertionError::Forged)
    );
    assert_eq!(
        edge::verify(SECRET, Some(&signed), &method, &path, body, now).is_ok(),
        ts.abs_diff(now) <= WINDOW_SECS as u64
    );
});
