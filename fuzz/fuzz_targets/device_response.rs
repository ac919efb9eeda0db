//! The device API: the answer body (`POST /ms/commands/{id}/response`), the enrolment body
//! (`POST /ms/enrol`), and the four signature headers checked with a fixed secret against a
//! fuzzed clock. Never a panic; a request signed with the right secret verifies at its own
//! time, and the same signature refuses another body.
//!
//! Input: `device \0 timestamp \0 nonce \0 signature \0 method \0 path \0 now \0 body`.
#![no_main]

use hermod_fuzz::{clock, fields, text};
use hermod_shared::signing::{self, DeviceSecret, NonceLedger, SignatureError, SignedHeaders};
use hermod_shared::wire::{DeviceResponse, EnrolRequest};
use libfuzzer_sys::fuzz_target;

const SERVER_KEY: &[u8] = b"hermod fuzz server key, fixed";
const WINDOW: i64 = signing::DEFAULT_WINDOW_SECS;

fuzz_target!(|data: &[u8]| {
    let f = fields(data, 8);
    let (device, timestamp, nonce, signature) = (text(f[0]), text(f[1]), text(f[2]), text(f[3]));
    let method = text(f[4]).unwrap_or_else(|| "POST".into());
    let path = text(f[5]).unwrap_or_else(|| "/ms/mailbox".into());
    let now = clock(f[6], 1_790_000_000);
    let body = f[7].unwrap_or_default();

    if let Ok(r) = serde_json::from_slice::<DeviceResponse>(body) {
        let json = serde_json::to_vec(&r).unwrap();
        let back: DeviceResponse = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.result, r.result);
    }
    if let Ok(e) = serde_json::from_slice::<EnrolRequest>(body) {
        let json = serde_json::to_vec(&e).unwrap();
        let back: EnrolRequest = serde_json::from_slice(&json).unwrap();
        assert_eq!((&back.token, &back.name), (&e.token, &e.name));
    }
    let _ = DeviceSecret::from_base64(signature.as_deref().unwrap_or_default());

    let parsed = SignedHeaders::parse(
        device.as_deref(),
        timestamp.as_deref(),
        nonce.as_deref(),
        signature.as_deref(),
    );
    let Ok(headers) = parsed else { return };
    let secret = DeviceSecret::derive(SERVER_KEY, &headers.device);
    let verdict = signing::verify(&secret, &headers, &method, &path, body, now, WINDOW);
    if verdict.is_ok() {
        assert!(headers.timestamp.abs_diff(now) <= WINDOW as u64);
        let mut ledger = NonceLedger::default();
        assert_eq!(ledger.record(&headers, now, WINDOW), Ok(()));
        assert_eq!(ledger.record(&headers, now, WINDOW), Err(SignatureError::Replayed));
    }

    // What the right secret signs verifies at its own time, and not with another body.
    let good = signing::sign(
        &secret,
        &headers.device,
        &method,
        &path,
        headers.timestamp,
        &headers.nonce,
        body,
    );
    assert_eq!(
        SignedHeaders::parse(
            Some(good.device.as_str()),
            Some(&good.timestamp.to_string()),
            Some(&good.nonce),
            Some(&good.signature)
        )
        .as_ref(),
        Ok(&good),
        "what sign() makes parses back"
    );
    assert_eq!(
        signing::verify(&secret, &good, &method, &path, body, headers.timestamp, WINDOW),
        Ok(())
    );
    let mut other = body.to_vec();
    other.push(b' ');
    assert_eq!(
        signing::verify(&secret, &good, &method, &path, &other, headers.timestamp, WINDOW),
        Err(SignatureError::Mismatch)
    );
});
