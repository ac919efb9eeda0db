//! Protocol timestamps (one spelling per instant) and nonces (16-64 of `[A-Za-z0-9_-]`), as
//! the signature headers read them.
#![no_main]

use hermod_shared::parse_unix_seconds;
use hermod_shared::signing::{SignatureError, SignedHeaders};
use libfuzzer_sys::fuzz_target;

const DEVICE: &str = "dev_00112233445566778899aabbccddeeff";
const NONCE: &str = "nonce-0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();

    let ts = parse_unix_seconds(s);
    if let Some(v) = ts {
        assert_eq!(v.to_string(), s, "a parsed timestamp re-formats to the same string");
        assert!((0..1_000_000_000_000).contains(&v));
    }
    // Every value's own spelling parses back to it.
    if let Ok(v) = s.parse::<i64>() {
        let canonical = v.to_string();
        if (0..1_000_000_000_000).contains(&v) {
            assert_eq!(parse_unix_seconds(&canonical), Some(v));
        } else {
            assert_eq!(parse_unix_seconds(&canonical), None);
        }
    }

    let as_timestamp = SignedHeaders::parse(Some(DEVICE), Some(s), Some(NONCE), Some("c2ln"));
    match ts {
        Some(v) => assert_eq!(as_timestamp.map(|h| h.timestamp), Ok(v)),
        None => assert_eq!(as_timestamp, Err(SignatureError::Malformed)),
    }

    let as_nonce = SignedHeaders::parse(Some(DEVICE), Some("1790000000"), Some(s), Some("c2ln"));
    let valid = (16..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match as_nonce {
        Ok(h) => {
            assert!(valid, "nonce {s:?} accepted");
            assert_eq!(h.nonce, s);
        }
        Err(e) => {
            assert!(!valid, "nonce {s:?} refused");
            assert_eq!(e, SignatureError::Malformed);
        }
    }
});
