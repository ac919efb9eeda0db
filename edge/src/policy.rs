//! What the edge decides on its own, without I/O: which kind of route a request is, whether it
//! is well-formed and authentic enough to forward, and whether its caller is over its rate.
//! The answers are the same problem+json bodies the backend would give.

use hermod_shared::credential::ClientCredential;
pub use hermod_shared::ratelimit::RateDecision;
use hermod_shared::signing::{self, DeviceSecret, SignedHeaders};
use hermod_shared::wire::CreateCommand;
use hermod_shared::{CommandType, ErrorCode, Problem};
use std::collections::HashMap;

/// The largest body the edge forwards (the backend's default limit).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The vendor's path prefix, served as well as the bare paths.
pub const VENDOR_PREFIX: &str = "/hermod/rest";

/// What a request is, by its method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/command/...`: a client with an API key. `create` names the type of `POST /command/{type}`.
    Client { create: Option<String> },
    /// `/ms/enrol`: anonymous, the token authenticates.
    Enrol,
    /// `/ms/time`: answered by the edge.
    Time,
    /// Any other `/ms/...`: a signed device request.
    Device,
    /// Never reachable from outside: the backend's internal and operational routes.
    Blocked,
    /// Anything else (the OpenAPI document, the generate-client page, unknown paths).
    Public,
}

pub fn classify(method: &str, path: &str) -> Route {
    let path = path
        .strip_prefix(VENDOR_PREFIX)
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path);
    if path.starts_with("/edge/") || path == "/metrics" {
        return Route::Blocked;
    }
    if let Some(rest) = path.strip_prefix("/command/") {
        let segments: Vec<&str> = rest.split('/').collect();
        let create =
            (method == "POST" && segments.len() == 1 && segments[0] != "callbacks").then(|| segments[0].to_owned());
        return Route::Client { create };
    }
    match path {
        "/ms/enrol" => Route::Enrol,
        "/ms/time" => Route::Time,
        p if p.starts_with("/ms/") => Route::Device,
        _ => Route::Public,
    }
}

/// A mailbox poll the edge may answer itself: `GET /ms/mailbox` with only a well-formed
/// `cursor` and `wait` (at most 60 s). Anything else goes to the backend, which answers errors.
pub fn idle_poll(method: &str, path: &str, query: Option<&str>) -> Option<(i64, u32)> {
    let path = path
        .strip_prefix(VENDOR_PREFIX)
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path);
    if method != "GET" || path != "/ms/mailbox" {
        return None;
    }
    let (mut cursor, mut wait) = (0i64, 0u32);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=')? {
            ("cursor", v) => cursor = v.parse().ok().filter(|c| *c >= 0)?,
            ("wait", v) => wait = v.parse().ok().filter(|w| *w <= 60)?,
            _ => return None,
        }
    }
    Some((cursor, wait))
}

/// A refusal: status, problem body, and extra headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub problem: Problem,
    pub headers: Vec<(String, String)>,
}

impl Refusal {
    pub fn new(code: ErrorCode, detail: Option<String>) -> Self {
        let mut headers = Vec::new();
        if code == ErrorCode::InvalidCredentials {
            headers.push(("www-authenticate".to_owned(), "Basic realm=\"hermod\"".to_owned()));
        }
        Self {
            problem: Problem::new(code, detail),
            headers,
        }
    }

    pub fn body(&self) -> String {
        serde_json::to_string(&self.problem).expect("problems serialise")
    }
}

impl From<ErrorCode> for Refusal {
    fn from(code: ErrorCode) -> Self {
        Self::new(code, None)
    }
}

pub fn check_body_size(len: usize) -> Result<(), Refusal> {
    if len > MAX_BODY_BYTES {
        return Err(Refusal::new(
            ErrorCode::BodyTooLarge,
            Some(format!("the limit is {MAX_BODY_BYTES} bytes")),
        ));
    }
    Ok(())
}

/// The client credential of a request, from `X-API-Key` or `Authorization: Basic`.
pub fn client_credential(api_key: Option<&str>, authorization: Option<&str>) -> Result<ClientCredential, Refusal> {
    let parsed = match api_key {
        Some(token) => ClientCredential::from_api_key(token),
        None => authorization.and_then(ClientCredential::from_authorization),
    };
    parsed.ok_or_else(|| ErrorCode::InvalidCredentials.into())
}

/// Checks a presented key against the client's active key hashes (two during a rotation), in
/// constant time (`ClientCredential::matching_key`).
pub fn key_matches(credential: &ClientCredential, key_hashes: &[String]) -> Result<(), Refusal> {
    credential
        .matching_key(key_hashes)
        .map(|_| ())
        .ok_or_else(|| ErrorCode::InvalidCredentials.into())
}

/// Checks the body of `POST /command/{type}` as the backend would.
pub fn check_create(command_type: &str, content_type: Option<&str>, body: &[u8]) -> Result<(), Refusal> {
    CommandType::parse(command_type)
        .map_err(|code| Refusal::new(code, Some(format!("{command_type:?} is not a command type"))))?;
    check_json::<CreateCommand>(content_type, body)
}

/// Checks that a body is JSON of the expected shape.
pub fn check_json<T: serde::de::DeserializeOwned>(content_type: Option<&str>, body: &[u8]) -> Result<(), Refusal> {
    let mime = content_type.unwrap_or("").split(';').next().unwrap_or("").trim();
    if !(mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")) {
        return Err(ErrorCode::UnsupportedMediaType.into());
    }
    serde_json::from_slice::<T>(body)
        .map(|_| ())
        .map_err(|e| Refusal::new(ErrorCode::MalformedJson, Some(e.to_string())))
}

/// Verifies a device's signature with its secret derived from a key of the server's ring (each
/// tried, newest first; the backend then holds the device to its own key). Replays are left to
/// the backend, which remembers nonces.
pub fn check_device(
    keys: &hermod_shared::keys::KeyRing,
    headers: [Option<&str>; 4],
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<SignedHeaders, Refusal> {
    let refuse = |e: signing::SignatureError| Refusal::new(e.into(), Some(e.to_string()));
    let [device, timestamp, nonce, signature] = headers;
    let signed = SignedHeaders::parse(device, timestamp, nonce, signature).map_err(refuse)?;
    let mut failure = signing::SignatureError::Mismatch;
    for key in keys.newest_first() {
        let secret: DeviceSecret = key.device_secret(&signed.device);
        match signing::verify(
            &secret,
            &signed,
            method,
            path_and_query,
            body,
            now_secs,
            signing::DEFAULT_WINDOW_SECS,
        ) {
            Ok(()) => return Ok(signed),
            Err(e @ signing::SignatureError::Mismatch) => failure = e,
            Err(e) => return Err(refuse(e)),
        }
    }
    Err(refuse(failure))
}

/// A rate: `limit` requests per `window_secs`, written `limit/window_secs` (e.g. `600/60`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u32,
    pub window_secs: u32,
}

impl Rate {
    pub fn parse(s: &str) -> Option<Self> {
        let (limit, window) = s.trim().split_once('/')?;
        let rate = Self {
            limit: limit.trim().parse().ok()?,
            window_secs: window.trim().parse().ok()?,
        };
        (rate.limit > 0 && rate.window_secs > 0).then_some(rate)
    }
}

/// Fixed-window counters per caller. State lives in the isolate: each edge location counts
/// on its own, so the limit holds per location (and exactly under `wrangler dev`).
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: HashMap<String, (i64, u32)>,
}

impl RateLimiter {
    pub fn check(&mut self, key: &str, rate: Rate, now_ms: i64) -> RateDecision {
        let window_ms = i64::from(rate.window_secs) * 1000;
        let start = now_ms - now_ms.rem_euclid(window_ms);
        if self.windows.len() > 100_000 {
            self.windows.retain(|_, (s, _)| *s == start);
        }
        let entry = self.windows.entry(key.to_owned()).or_insert((start, 0));
        if entry.0 != start {
            *entry = (start, 0);
        }
        let reset_secs = ((start + window_ms - now_ms) as f64 / 1000.0).ceil() as i64;
        if entry.1 >= rate.limit {
            return RateDecision {
                allowed: false,
                limit: rate.limit,
                remaining: 0,
                reset_secs,
            };
        }
        entry.1 += 1;
        RateDecision {
            allowed: true,
            limit: rate.limit,
            remaining: rate.limit - entry.1,
            reset_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            classify("POST", "/command/authenticate"),
            Route::Client {
                create: Some("authenticate".into())
            }
        );
        assert_eq!(
            classify("POST", "/hermod/rest/command/sign"),
            Route::Client {
                create: Some("sign".into())
            }
        );
        assert_eq!(classify("GET", "/command/cmd_1"), Route::Client { create: None });
        assert_eq!(
            classify("POST", "/command/callbacks/recover"),
            Route::Client { create: None }
        );
        assert_eq!(classify("POST", "/ms/enrol"), Route::Enrol);
        assert_eq!(classify("GET", "/hermod/rest/ms/time"), Route::Time);
        assert_eq!(classify("GET", "/ms/mailbox"), Route::Device);
        assert_eq!(classify("GET", "/edge/clients/idm"), Route::Blocked);
        assert_eq!(classify("GET", "/hermod/rest/edge/clients/idm"), Route::Blocked);
        assert_eq!(classify("GET", "/metrics"), Route::Blocked);
        assert_eq!(classify("GET", "/openapi.json"), Route::Public);
    }

    #[test]
    fn idle_polls() {
        assert_eq!(idle_poll("GET", "/ms/mailbox", Some("cursor=3&wait=30")), Some((3, 30)));
        assert_eq!(idle_poll("GET", "/hermod/rest/ms/mailbox", None), Some((0, 0)));
        assert_eq!(idle_poll("GET", "/ms/mailbox", Some("wait=61")), None);
        assert_eq!(idle_poll("GET", "/ms/mailbox", Some("cursor=-1")), None);
        assert_eq!(idle_poll("GET", "/ms/mailbox", Some("other=1")), None);
        assert_eq!(idle_poll("POST", "/ms/lifesign", None), None);
    }

    #[test]
    fn credentials_and_keys() {
        let c = client_credential(Some("aWRtOjQ0NjAyMDEzNGVlOA=="), None).unwrap();
        let right = hermod_shared::sha256_hex(b"446020134ee8");
        let other = hermod_shared::sha256_hex(b"other");
        assert!(key_matches(&c, std::slice::from_ref(&right)).is_ok());
        assert!(
            key_matches(&c, &[other.clone(), right]).is_ok(),
            "either key of a rotation"
        );
        assert!(key_matches(&c, &[other]).is_err());
        assert!(key_matches(&c, &[]).is_err());
        assert!(client_credential(None, None).is_err());
        assert!(client_credential(None, Some("Basic aWRtOjQ0NjAyMDEzNGVlOA==")).is_ok());
    }

    #[test]
    fn create_bodies_are_checked_as_the_backend_does() {
        assert!(check_create("ping", Some("application/json"), br#"{"user_id":"a"}"#).is_ok());
        let e = check_create("authenticat", Some("application/json"), b"{}").unwrap_err();
        assert_eq!(e.problem.code, ErrorCode::UnknownCommandType);
        let e = check_create("ping", Some("application/json"), b"{\"user_id\":").unwrap_err();
        assert_eq!(e.problem.code, ErrorCode::MalformedJson);
        let e = check_create("ping", Some("text/plain"), b"{}").unwrap_err();
        assert_eq!(e.problem.code, ErrorCode::UnsupportedMediaType);
        assert_eq!(check_body_size(MAX_BODY_BYTES + 1).unwrap_err().problem.status, 413);
    }

    #[test]
    fn rate_limits_by_fixed_window() {
        let rate = Rate::parse("2/10").unwrap();
        let mut l = RateLimiter::default();
        assert!(l.check("k", rate, 10_000).allowed);
        let second = l.check("k", rate, 11_000);
        assert_eq!((second.allowed, second.remaining), (true, 0));
        let third = l.check("k", rate, 12_500);
        assert!(!third.allowed);
        assert_eq!(third.reset_secs, 8);
        assert!(third
            .headers(rate.window_secs)
            .contains(&("retry-after".to_owned(), "8".to_owned())));
        assert!(l.check("other", rate, 12_500).allowed, "callers are counted apart");
        assert!(l.check("k", rate, 20_000).allowed, "a new window");
        assert_eq!(Rate::parse("0/10"), None);
        assert_eq!(Rate::parse("ten"), None);
    }
}
