//! The server key ring's text form (`server-key-file`: `<id> <base64>` a line, `#` comments):
//! never a panic; what parses writes back to text that parses to the same keys in the same
//! order, the last one current.
#![no_main]

use hermod_shared::keys::{KeyRing, ServerKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(ring) = KeyRing::parse(&text) else { return };
    let lines: Vec<String> = ring.newest_first().map(ServerKey::to_line).collect();
    let again = KeyRing::parse(&ring.to_text()).expect("a ring's own text parses");
    assert_eq!(again.newest_first().map(ServerKey::to_line).collect::<Vec<_>>(), lines);
    assert_eq!(again.current().id(), ring.current().id());
    for key in ring.newest_first() {
        assert!(ring.get(key.id()).is_some());
        assert!((1..=16).contains(&key.id().len()));
    }
});
