//! Where a client's callbacks may go, one rule for the config file and the admin API: an
//! absolute `http` or `https` URL naming a host, at most [`MAX_URL_LEN`] characters, with no
//! credentials in it (they belong in `callback-basic-auth`, which is never logged); basic auth
//! as `user:password`, at most [`MAX_BASIC_AUTH_LEN`] characters, no control characters. The
//! egress policy (`egress`) judges the address a tenant's URL names on top of this.

/// The longest callback URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// The longest `user:password` accepted.
pub const MAX_BASIC_AUTH_LEN: usize = 512;

pub const URL_RULE: &str =
    "must be an absolute http(s) URL naming a host, at most 2048 characters, with no user:password in it \
     (use callback-basic-auth)";
pub const BASIC_AUTH_RULE: &str = "must be user:password, at most 512 characters, without control characters";

/// The URL, parsed, when it may receive callbacks; otherwise why not ([`URL_RULE`]).
pub fn callback_url(url: &str) -> Result<url::Url, &'static str> {
    if url.len() > MAX_URL_LEN {
        return Err(URL_RULE);
    }
    let parsed = url::Url::parse(url).map_err(|_| URL_RULE)?;
    let named_host = parsed.host_str().is_some_and(|h| !h.is_empty());
    let credentials = !parsed.username().is_empty() || parsed.password().is_some();
    if !matches!(parsed.scheme(), "http" | "https") || !named_host || credentials {
        return Err(URL_RULE);
    }
    Ok(parsed)
}

/// Whether `user:password` may be sent with callbacks ([`BASIC_AUTH_RULE`]).
pub fn basic_auth(auth: &str) -> Result<(), &'static str> {
    if !auth.contains(':') || auth.len() > MAX_BASIC_AUTH_LEN || auth.chars().any(char::is_control) {
        return Err(BASIC_AUTH_RULE);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn http_and_https_urls_naming_a_host_are_accepted() {
        for ok in [
            "https://idm.example.com/ws/hermod",
            "http://10.0.0.5:8080/cb",
            "https://[2001:db8::1]/cb?x=1",
        ] {
            assert!(callback_url(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn other_schemes_relative_urls_credentials_and_long_urls_are_refused() {
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        for bad in [
            "ftp://example.com/cb",
            "file:///etc/passwd",
            "/relative/path",
            "https://",
            "mailto:ops@example.com",
            "https://user:secret@example.com/cb",
            "https://user@example.com/cb",
            long.as_str(),
        ] {
            assert_eq!(callback_url(bad).unwrap_err(), URL_RULE, "{bad}");
        }
    }

    #[test]
    fn basic_auth_needs_a_colon_and_no_control_characters() {
        assert!(basic_auth("hermod:s3cret").is_ok());
        for bad in ["no-colon", "a:b\nc", &format!("u:{}", "p".repeat(MAX_BASIC_AUTH_LEN))] {
            assert_eq!(basic_auth(bad).unwrap_err(), BASIC_AUTH_RULE, "{bad:?}");
        }
    }

    proptest! {
        /// Whatever the input, an accepted URL is http(s), names a host and carries no
        /// credentials, and the rule never panics.
        #[test]
        fn an_accepted_url_is_always_http_with_a_host(s in "\\PC{0,80}") {
            if let Ok(u) = callback_url(&s) {
                prop_assert!(matches!(u.scheme(), "http" | "https"));
                prop_assert!(u.host_str().is_some_and(|h| !h.is_empty()));
                prop_assert!(u.username().is_empty() && u.password().is_none());
            }
        }

        #[test]
        fn any_http_url_with_a_plain_host_and_path_is_accepted(
            host in "[a-z][a-z0-9-]{0,20}(\\.[a-z]{2,6}){1,2}",
            path in "(/[a-zA-Z0-9._~-]{0,12}){0,4}",
            tls in any::<bool>(),
        ) {
            let url = format!("{}://{host}{path}", if tls { "https" } else { "http" });
            prop_assert!(callback_url(&url).is_ok(), "{}", url);
        }
    }
}
