//! Enrolment: the deep link a device opens, the token in it, and the QR code made of a link
//! (`None`, never a panic, when it is too long). A link read back re-encodes to the same pair;
//! a token verifies only as the token issued for its command.
#![no_main]

use hermod_shared::enrolment::{deep_link, issue_token, parse_deep_link, qr_svg, verify_token};
use hermod_shared::CommandId;
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"hermod fuzz server key, fixed";
/// The most characters a QR code holds at level M (version 40, all digits).
const QR_MAX_CHARS: usize = 5596;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();

    if let Some((ms, token)) = parse_deep_link(s) {
        assert_eq!(parse_deep_link(&deep_link(&ms, &token)), Some((ms, token)));
    }
    if let Some(id) = verify_token(KEY, s) {
        assert_eq!(issue_token(KEY, &id), s.trim(), "only the issued token verifies");
    }
    let _ = verify_token(b"", s);

    // Any public URL round-trips through a link with a genuine token.
    let mut random = [0u8; 16];
    let n = data.len().min(16);
    random[..n].copy_from_slice(&data[..n]);
    let id = CommandId::from_random(random);
    let token = issue_token(KEY, &id);
    assert_eq!(verify_token(KEY, &token), Some(id.clone()));
    assert_eq!(verify_token(KEY, &format!(" {token}\n")), Some(id));
    let link = deep_link(s, &token);
    assert_eq!(parse_deep_link(&link), Some((s.to_owned(), token)));

    // The QR code: rendering is the slow part, so only inputs that start with 'Q' render.
    if data.first() == Some(&b'Q') {
        match qr_svg(s) {
            Some(svg) => assert!(svg.starts_with("<?xml") && s.len() <= QR_MAX_CHARS),
            None => assert!(s.len() > 0),
        }
    }
    if !s.is_empty() && data.first() == Some(&b'L') {
        let long = s.repeat(QR_MAX_CHARS / s.len() + 1);
        assert_eq!(qr_svg(&long), None, "{} characters cannot fit", long.len());
    }
});
