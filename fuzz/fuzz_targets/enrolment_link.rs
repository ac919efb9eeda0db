//! Enrolment: the deep link a device opens and the token in it, checked with a single key
//! (`verify_token`) and with a key ring (`KeyRing::verify_token`). A link read back re-encodes
//! to the same pair; a token verifies only as the token issued for its command. (The QR code
//! of a link is not parsed input; property tests in `shared/src/enrolment.rs` cover it.)
#![no_main]

use hermod_shared::enrolment::{deep_link, issue_token, parse_deep_link, verify_token};
use hermod_shared::keys::KeyRing;
use hermod_shared::CommandId;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// The single key; the ring's `legacy` key is the same, so a legacy token verifies both ways.
const KEY: &[u8] = b"hermod fuzz server key, fixed!!!";
/// A ring with a pre-versioning key and a current one (base64 of 32 bytes each).
const RING: &str = "legacy aGVybW9kIGZ1enogc2VydmVyIGtleSwgZml4ZWQhISE=\nk2 MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n";

fn ring() -> &'static KeyRing {
    static RING_CELL: OnceLock<KeyRing> = OnceLock::new();
    RING_CELL.get_or_init(|| KeyRing::parse(RING).expect("the fixed ring parses"))
}

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
    if let Some((id, key)) = ring().verify_token(s) {
        assert_eq!(key.issue_token(&id), s.trim(), "only the issued token verifies");
    }

    // Any text round-trips through a link, as the public URL and as the token.
    assert_eq!(parse_deep_link(&deep_link(s, s)), Some((s.to_owned(), s.to_owned())));

    // Any public URL round-trips through a link with a genuine token. Issuing tokens costs
    // HKDF and HMACs: done for one input length in four only, to keep the target fast.
    if data.len() % 4 != 0 {
        return;
    }
    let mut random = [0u8; 16];
    let n = data.len().min(16);
    random[..n].copy_from_slice(&data[..n]);
    let id = CommandId::from_random(random);
    let token = issue_token(KEY, &id);
    assert_eq!(verify_token(KEY, &token), Some(id.clone()));
    assert_eq!(verify_token(KEY, &format!(" {token}\n")), Some(id.clone()));
    for key in ring().newest_first() {
        let t = key.issue_token(&id);
        let (got, by) = ring().verify_token(&t).expect("a token of the ring verifies");
        assert_eq!((got, by.id()), (id.clone(), key.id()));
    }
    let link = deep_link(s, &token);
    assert_eq!(parse_deep_link(&link), Some((s.to_owned(), token)));
});
