//! A claim's QR frame (`POST /ms/claim`), as a device scanned it: checked against a command's
//! fixed token and secret at a fuzzed clock and age. Never a panic; a frame is accepted only
//! if it is the command's own frame for a `t` within the age, and the command's own current
//! frame is always accepted.
//!
//! Input: `frame \0 now-offset-ms \0 max-age`.
#![no_main]

use hermod_fuzz::{clock, fields, text};
use hermod_shared::approval::{current_qr_frame, frame_token, qr_frame, verify_frame, QR_PREFIX};
use hermod_shared::wire::ClaimRequest;
use libfuzzer_sys::fuzz_target;

const TOKEN: &str = "67df3917-fa0d-44e5-b327-edcc928297f8";
const SECRET: &str = "d28db9a7-4cde-429e-a983-359be676944c";
const CREATED: i64 = 1_790_000_000_000;

fuzz_target!(|data: &[u8]| {
    let f = fields(data, 3);
    let frame = text(f[0]).unwrap_or_default();
    // Within a command's life (30 days at most) and a little past it.
    let now = CREATED + clock(f[1], 3_500).rem_euclid(40 * 86_400_000);
    let max_age = clock(f[2], 5).clamp(0, 60) as u64;

    let _ = frame_token(&frame);
    if let Ok(c) = serde_json::from_slice::<ClaimRequest>(f[0].unwrap_or_default()) {
        let _ = verify_frame(&c.frame, TOKEN, SECRET, CREATED, now, max_age);
    }
    if verify_frame(&frame, TOKEN, SECRET, CREATED, now, max_age).is_ok() {
        let t: u64 = frame.split('.').nth(2).unwrap().parse().unwrap();
        assert_eq!(frame, qr_frame(QR_PREFIX, TOKEN, SECRET, t), "only the command's own frames");
        assert_eq!(frame_token(&frame), Some(TOKEN));
    }
    {
        let current = current_qr_frame(TOKEN, SECRET, CREATED, now);
        assert!(verify_frame(&current, TOKEN, SECRET, CREATED, now, max_age).is_ok());
    }
});
