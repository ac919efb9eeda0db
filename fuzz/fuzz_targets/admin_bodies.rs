//! Every request body of the admin API (`shared/src/admin.rs`): must never panic; what parses
//! re-serialises and parses back to the same value (absent and `null` stay apart in a PATCH).
#![no_main]

use hermod_shared::admin::{
    callback_warnings, valid_name, CreateClient, CreateGroup, CreateTenant, Quotas, UpdateClient,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + Debug>(data: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(data).ok()?;
    let json = serde_json::to_vec(&v).expect("a parsed body serialises");
    let back: T = serde_json::from_slice(&json).expect("its own JSON parses back");
    assert_eq!(back, v);
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    if let Some(t) = round_trip::<CreateTenant>(data) {
        let _ = valid_name(&t.id);
    }
    round_trip::<Quotas>(data);
    if let Some(g) = round_trip::<CreateGroup>(data) {
        let _ = valid_name(&g.name);
    }
    if let Some(c) = round_trip::<CreateClient>(data) {
        let _ = valid_name(&c.name) && valid_name(&c.group);
        let _ = callback_warnings(c.callback_url.as_deref(), c.callback_basic_auth.is_some());
    }
    if let Some(u) = round_trip::<UpdateClient>(data) {
        let url = u.callback_url.clone().flatten();
        let _ = callback_warnings(url.as_deref(), matches!(u.callback_basic_auth, Some(Some(_))));
    }

    let s = String::from_utf8_lossy(data);
    if valid_name(&s) {
        assert!(!s.is_empty() && s.len() <= hermod_shared::admin::NAME_MAX);
        assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'));
    }
    let _ = callback_warnings(Some(&s), true);
});
