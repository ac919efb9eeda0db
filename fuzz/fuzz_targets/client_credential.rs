//! The client credential from `X-API-Key` and `Authorization: Basic`: never a panic; what
//! parses names a non-empty client id without ':' and a non-empty key, and re-encodes to a
//! token that parses back to it.
#![no_main]

use hermod_shared::credential::ClientCredential;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();
    for c in [ClientCredential::from_api_key(s), ClientCredential::from_authorization(s)]
        .into_iter()
        .flatten()
    {
        assert!(!c.client_id.is_empty() && !c.key.is_empty() && !c.client_id.contains(':'));
        assert_eq!(ClientCredential::from_api_key(&c.token()).as_ref(), Some(&c));
        assert_eq!(
            ClientCredential::from_authorization(&format!("Basic {}", c.token())).as_ref(),
            Some(&c)
        );
        let right = hermod_shared::sha256_hex(c.key.as_bytes());
        assert_eq!(c.matching_key(&["0".repeat(64), right]), Some(1));
        assert_eq!(c.matching_key::<&str>(&[]), None);
    }
});
