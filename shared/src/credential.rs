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
