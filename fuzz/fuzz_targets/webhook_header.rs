//! Callback signatures (Standard Webhooks) as a receiver checks them: fuzzed `webhook-id`,
//! `webhook-timestamp`, `webhook-signature` and payload against fixed secrets and a clock in
//! the range of real clocks; and `WebhookSecret::parse` (config and admin input).
//!
//! Input: `secret \0 msg id \0 timestamp \0 signature header \0 now \0 payload`.
#![no_main]

use hermod_fuzz::{clock, fields, text};
use hermod_shared::webhook::{self, signature_header, WebhookError, WebhookSecret};
use libfuzzer_sys::fuzz_target;

/// The Standard Webhooks specification's example secret.
const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOLERANCE: i64 = webhook::TOLERANCE_SECS;

fuzz_target!(|data: &[u8]| {
    let f = fields(data, 6);
    let secret_text = text(f[0]).unwrap_or_default();
    let msg_id = text(f[1]).unwrap_or_default();
    let timestamp = text(f[2]).unwrap_or_default();
    let header = text(f[3]).unwrap_or_default();
    // A receiver's clock: 0 to about year 2500 (the function subtracts the tolerance from it).
    let now = clock(f[4], 1_614_265_330).rem_euclid(16_725_225_600);
    let payload = f[5].unwrap_or_default();

    if let Some(s) = WebhookSecret::parse(&secret_text) {
        assert_eq!(WebhookSecret::parse(&s.expose()), Some(s.clone()), "a secret has one form");
        assert_eq!(s.expose(), secret_text.trim());
    }

    let spec = WebhookSecret::parse(SPEC_SECRET).unwrap();
    let other = WebhookSecret::from_bytes([7; 32]);
    let secrets = [spec.clone(), other.clone()];
    let verdict = webhook::verify(&secrets, &msg_id, &timestamp, &header, payload, now, TOLERANCE);
    if verdict.is_ok() {
        let ts: i64 = timestamp.trim().parse().unwrap();
        assert!(ts.abs_diff(now) <= TOLERANCE as u64);
    }
    let _ = webhook::verify(&[], &msg_id, &timestamp, &header, payload, now, TOLERANCE);

    // A header signed by either secret (a rotation) verifies at its time; another payload not.
    let real_clock = timestamp.trim().parse::<i64>().ok().filter(|ts| (0..16_725_225_600).contains(ts));
    if let Some(ts) = real_clock {
        let signed = signature_header(&[other, spec.clone()], &msg_id, ts, payload);
        assert_eq!(
            webhook::verify(&[spec.clone()], &msg_id, &timestamp, &signed, payload, ts, TOLERANCE),
            Ok(())
        );
        let mut tampered = payload.to_vec();
        tampered.push(b'!');
        assert_eq!(
            webhook::verify(&[spec], &msg_id, &timestamp, &signed, &tampered, ts, TOLERANCE),
            Err(WebhookError::NoMatch)
        );
    }
});
