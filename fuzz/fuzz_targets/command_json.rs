//! The client API's request bodies (`POST /command/{type}`, `POST /command/callbacks/recover`)
//! and the ids and type names that come in paths: must never panic; what parses re-serialises
//! and parses back to the same value (the payload only has to parse back: serde_json floats
//! need not round-trip bit for bit).
#![no_main]

use hermod_shared::wire::{CreateCommand, RecoverRequest};
use hermod_shared::{CommandId, CommandType, DeviceId, UserId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = serde_json::from_slice::<CreateCommand>(data) {
        let json = serde_json::to_vec(&c).expect("a parsed CreateCommand serialises");
        let back: CreateCommand = serde_json::from_slice(&json).expect("its own JSON parses back");
        assert_eq!(
            (&back.device_id, &back.user_id, back.timeout, back.lifespan),
            (&c.device_id, &c.user_id, c.timeout, c.lifespan)
        );
        assert_eq!(back.payload.is_some(), c.payload.is_some());
    }
    if let Ok(r) = serde_json::from_slice::<RecoverRequest>(data) {
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(serde_json::from_slice::<RecoverRequest>(&json).unwrap(), r);
    }

    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();
    if let Ok(t) = CommandType::parse(s) {
        assert_eq!(t.as_str(), s, "a type name has one spelling");
        assert_eq!(CommandType::parse(t.as_str()), Ok(t.clone()));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<CommandType>(&json).unwrap(), t);
    }
    if let Some(id) = CommandId::parse(s) {
        assert_eq!(id.as_str(), s);
        assert_eq!(s.len(), 36);
    }
    if let Some(id) = DeviceId::parse(s) {
        assert_eq!(id.as_str(), s);
        assert_eq!(s.len(), 36);
    }
    if let Some(u) = UserId::parse(s) {
        assert_eq!(u.as_str(), s);
        assert!(!s.is_empty() && s.len() <= 128 && s.trim() == s);
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(serde_json::from_str::<UserId>(&json).unwrap(), u);
    }
});
