//! The enrolment QR code (`qr_svg`) of any text: an SVG when it fits, `None` and never a panic
//! when it is too long. Slow by nature (a few hundred renders a second under the sanitizer):
//! run it with `-max_len=8192` so inputs past every QR capacity come up too.
#![no_main]

use hermod_shared::enrolment::qr_svg;
use libfuzzer_sys::fuzz_target;

/// The most characters a QR code holds at level M (version 40, all digits).
const QR_MAX_CHARS: usize = 5596;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    match qr_svg(&s) {
        Some(svg) => {
            assert!(s.len() <= QR_MAX_CHARS, "{} bytes cannot fit a QR code", s.len());
            assert!(svg.starts_with("<?xml") && svg.contains("<svg"));
        }
        None => assert!(s.len() > 0, "the empty string fits a QR code"),
    }
});
