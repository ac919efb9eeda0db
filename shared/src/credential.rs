//! The client credential: `base64(clientId:key)`, sent as `X-API-Key` or HTTP Basic auth.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::fmt;

/// A client id and its key, parsed from a request. `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredential {
    pub client_id: String,
    pub key: String,
}

impl fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredential")
            .field("client_id", &self.client_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ClientCredential {
    /// Longest accepted token, so a hostile header cannot make us decode megabytes.
    const MAX_TOKEN_LEN: usize = 1024;

    /// Parses the value of an `X-API-Key` header: `base64(clientId:key)`.
    pub fn from_api_key(token: &str) -> Option<Self> {
        let token = token.trim();
        if token.is_empty() || token.len() > Self::MAX_TOKEN_LEN {
            return None;
        }
        let decoded = STANDARD.decode(token).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (id, key) = text.split_once(':')?;
        (!id.is_empty() && !key.is_empty()).then(|| Self {
            client_id: id.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Parses an `Authorization` header value of the `Basic` scheme.
    pub fn from_authorization(value: &str) -> Option<Self> {
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("basic")
            .then(|| Self::from_api_key(token))
            .flatten()
    }

    /// The token a client sends: `base64(clientId:key)`.
    pub fn token(&self) -> String {
        STANDARD.encode(format!("{}:{}", self.client_id, self.key))
    }

    /// Which of a client's stored key hashes (lowercase hex SHA-256; two during a rotation) the
    /// presented key matches. Every hash is compared in constant time, and a dummy when there
    /// are none, so timing tells nothing about the client or its keys.
    pub fn matching_key<S: AsRef<str>>(&self, key_hashes: &[S]) -> Option<usize> {
        use subtle::ConstantTimeEq;
        let presented = crate::sha256_hex(self.key.as_bytes());
        let mut found = None;
        for (i, stored) in key_hashes.iter().enumerate() {
            if bool::from(presented.as_bytes().ct_eq(stored.as_ref().as_bytes())) {
                found = Some(i);
            }
        }
        if key_hashes.is_empty() {
            let _ = presented.as_bytes().ct_eq("0".repeat(64).as_bytes());
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_header_forms() {
        // base64("idm:446020134ee8")
        let c = ClientCredential::from_api_key("aWRtOjQ0NjAyMDEzNGVlOA==").unwrap();
        assert_eq!(c.client_id, "idm");
        assert_eq!(c.key, "446020134ee8");
        assert_eq!(c.token(), "aWRtOjQ0NjAyMDEzNGVlOA==");
        assert_eq!(
            ClientCredential::from_authorization("Basic aWRtOjQ0NjAyMDEzNGVlOA=="),
            Some(c.clone())
        );
        assert_eq!(
            ClientCredential::from_authorization("basic aWRtOjQ0NjAyMDEzNGVlOA=="),
            Some(c)
        );
    }

    #[test]
    fn a_key_matches_any_of_its_hashes_and_nothing_else() {
        let c = ClientCredential {
            client_id: "idm".into(),
            key: "446020134ee8".into(),
        };
        let right = crate::sha256_hex(b"446020134ee8");
        let other = crate::sha256_hex(b"other");
        assert_eq!(c.matching_key(&[&other, &right]), Some(1));
        assert_eq!(c.matching_key(&[&other]), None);
        assert_eq!(c.matching_key::<&str>(&[]), None);
    }

    #[test]
    fn refuses_malformed_tokens() {
        for bad in [
            "",
            "   ",
            "not base64!",
            "aWRt",     /* "idm", no colon */
            "OmtleQ==", /* ":key" */
            "aWRtOg==", /* "idm:" */
        ] {
            assert_eq!(ClientCredential::from_api_key(bad), None, "{bad:?}");
        }
        assert_eq!(
            ClientCredential::from_authorization("Bearer aWRtOjQ0NjAyMDEzNGVlOA=="),
            None
        );
        assert_eq!(ClientCredential::from_api_key(&"A".repeat(2000)), None);
    }

    #[test]
    fn debug_hides_the_key() {
        let c = ClientCredential {
            client_id: "idm".into(),
            key: "s3cret".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
