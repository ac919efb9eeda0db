//! The Worker: `fetch` → checks by route → forward to the backend with a signed assertion.

use hermod_shared::edge::{self, Caller};
use hermod_shared::signing::{HEADER_DEVICE, HEADER_NONCE, HEADER_SERVER_TIME, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use hermod_shared::wire::{EdgeClient, EnrolRequest, MailboxPage};
use hermod_shared::ErrorCode;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use worker::*;

use crate::policy::{self, Rate, RateDecision, RateLimiter, Refusal, Route};

/// Binding and variable names, as in `wrangler.toml`.
const KV_CACHE: &str = "HERMOD_EDGE_CACHE";
const VAR_BACKEND_URL: &str = "BACKEND_URL";
const SECRET_EDGE: &str = "EDGE_SECRET";
const SECRET_SERVER_KEY: &str = "SERVER_KEY";
/// The server's key ring in its text form (`<id> <base64>` a line), as the backend's
/// `server-key-file`; `SERVER_KEY` joins it as the legacy key.
const SECRET_SERVER_KEYS: &str = "SERVER_KEYS";
const VAR_CLIENT_CACHE_TTL: &str = "CLIENT_CACHE_TTL_SECS";
const VAR_RATE_CLIENT: &str = "RATE_LIMIT_CLIENT";
const VAR_RATE_DEVICE: &str = "RATE_LIMIT_DEVICE";
const DO_MAILBOX: &str = "MAILBOX";
/// Set by a backend behind the edge: the devices whose mailbox a request changed. Not passed on.
const HEADER_MAILBOX_DEVICES: &str = "hermod-mailbox-devices";
/// How often the edge asks the backend whether an idle device's mailbox is still empty (and
/// tells it the device is alive), without holding a wait there (`RECONCILE_EVERY_SECS`).
const DEFAULT_RECONCILE_EVERY_SECS: u64 = 300;
const VAR_RECONCILE_EVERY: &str = "RECONCILE_EVERY_SECS";

/// A key that matches no cached hash makes the edge ask the backend again when the cached entry
/// is at least this old (a newly issued key works at once; wrong keys cost one look-up a second).
const MISMATCH_REFRESH_MS: i64 = 1000;

/// How long a cached client key hash is trusted by default: a revoked key stops working at
/// the edge within this bound (at the backend at once).
const DEFAULT_CLIENT_CACHE_TTL_SECS: i64 = 30;
const DEFAULT_RATE_CLIENT: Rate = Rate {
    limit: 1200,
    window_secs: 60,
};
const DEFAULT_RATE_DEVICE: Rate = Rate {
    limit: 120,
    window_secs: 60,
};
/// Requests per client address before anything is checked (`RATE_LIMIT_IP`).
const DEFAULT_RATE_IP: Rate = Rate {
    limit: 6000,
    window_secs: 60,
};
/// Back-end look-ups of client ids the cache does not know, per client address
/// (`RATE_LIMIT_LOOKUP`): a stream of made-up ids costs the backend this much at most.
const DEFAULT_RATE_LOOKUP: Rate = Rate {
    limit: 30,
    window_secs: 60,
};
const VAR_RATE_IP: &str = "RATE_LIMIT_IP";
const VAR_RATE_LOOKUP: &str = "RATE_LIMIT_LOOKUP";

/// Request headers passed on to the backend; everything else stays at the edge.
const FORWARDED_REQUEST_HEADERS: [&str; 10] = [
    "content-type",
    "accept",
    "x-api-key",
    "authorization",
    "idempotency-key",
    HEADER_DEVICE,
    HEADER_TIMESTAMP,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    "user-agent",
];
const FORWARDED_RESPONSE_HEADERS: [&str; 12] = [
    HEADER_MAILBOX_DEVICES,
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "ratelimit-policy",
    "retry-after",
    "content-type",
    "location",
    "www-authenticate",
    "idempotent-replayed",
    "cache-control",
    HEADER_SERVER_TIME,
];

thread_local! {
    static LIMITER: RefCell<RateLimiter> = RefCell::new(RateLimiter::default());
}

#[derive(Serialize, Deserialize)]
struct CachedClient {
    /// The active keys' hashes; empty for an unknown or disabled client.
    key_hashes: Vec<String>,
    fetched_at_ms: i64,
}

fn now_ms() -> i64 {
    Date::now().as_millis() as i64
}

fn setting(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .map(|s| s.to_string())
        .or_else(|_| env.var(name).map(|v| v.to_string()))
        .ok()
}

fn problem(refusal: &Refusal) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", hermod_shared::Problem::CONTENT_TYPE)?;
    headers.set(HEADER_SERVER_TIME, &now_ms().to_string())?;
    for (name, value) in &refusal.headers {
        headers.set(name, value)?;
    }
    Ok(Response::from_bytes(refusal.body().into_bytes())?
        .with_status(refusal.problem.status)
        .with_headers(headers))
}

fn nonce() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::RustError(e.to_string()))?;
    Ok(hex::encode(bytes))
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, ctx: Context) -> Result<Response> {
    let url = req.url()?;
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let method = req.method().to_string();
    let request_headers = req.headers().clone();
    let header = |name: &str| request_headers.get(name).ok().flatten();
    // The caller's address as Cloudflare (and `wrangler dev`) gives it.
    let client_ip = header("cf-connecting-ip").unwrap_or_else(|| "unknown".to_owned());
    let content_type = header("content-type");
    if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        if let Err(r) = policy::check_body_size(len) {
            return problem(&r);
        }
    }
    let body = req.bytes().await.unwrap_or_default();
    if let Err(r) = policy::check_body_size(body.len()) {
        return problem(&r);
    }

    let mut rate_headers = Vec::new();
    let caller = match policy::classify(&method, url.path()) {
        Route::Blocked => return problem(&ErrorCode::NotFound.into()),
        Route::Time => {
            let headers = Headers::new();
            headers.set(HEADER_SERVER_TIME, &now_ms().to_string())?;
            return Ok(Response::from_json(&serde_json::json!({ "server_time": now_ms() }))?.with_headers(headers));
        }
        Route::Public => Caller::Anonymous,
        Route::Enrol => {
            if let Err(r) = policy::check_json::<EnrolRequest>(content_type.as_deref(), &body) {
                return problem(&r);
            }
            Caller::Anonymous
        }
        Route::Client { create } => {
            if let Some(refused) = pre_auth_limit(&env, &client_ip) {
                return problem(&refused);
            }
            let credential =
                match policy::client_credential(header("x-api-key").as_deref(), header("authorization").as_deref()) {
                    Ok(c) => c,
                    Err(r) => return problem(&r),
                };
            // Before the key is checked, the id too has a budget (twice its rate once checked).
            let preauth = setting(&env, VAR_RATE_CLIENT)
                .and_then(|s| Rate::parse(&s))
                .unwrap_or(DEFAULT_RATE_CLIENT);
            let preauth = Rate {
                limit: preauth.limit.saturating_mul(2),
                ..preauth
            };
            let decision = limit(&format!("pre:client:{}", credential.client_id), preauth);
            if !decision.allowed {
                return problem(&Refusal {
                    headers: decision.headers(preauth.window_secs),
                    ..ErrorCode::RateLimited.into()
                });
            }
            let mut client = match client_keys(&env, &credential.client_id, false, &client_ip).await {
                Ok(Some(c)) => c,
                Ok(None) => return problem(&lookup_refused()),
                Err(e) => {
                    console_error!("client look-up failed: {e}");
                    return problem(&ErrorCode::Internal.into());
                }
            };
            // A key the cache does not know may be newly issued: ask the backend again, at
            // most once a second per client, so wrong keys cannot flood it.
            if policy::key_matches(&credential, &client.key_hashes).is_err()
                && now_ms() - client.fetched_at_ms >= MISMATCH_REFRESH_MS
            {
                match client_keys(&env, &credential.client_id, true, &client_ip).await {
                    Ok(Some(c)) => client = c,
                    Ok(None) => return problem(&lookup_refused()),
                    Err(e) => {
                        console_error!("client look-up failed: {e}");
                        return problem(&ErrorCode::Internal.into());
                    }
                }
            }
            if let Err(r) = policy::key_matches(&credential, &client.key_hashes) {
                return problem(&r);
            }
            let rate = setting(&env, VAR_RATE_CLIENT)
                .and_then(|s| Rate::parse(&s))
                .unwrap_or(DEFAULT_RATE_CLIENT);
            let decision = limit(&format!("client:{}", credential.client_id), rate);
            rate_headers = decision.headers(rate.window_secs);
            if !decision.allowed {
                return problem(&Refusal {
                    headers: rate_headers,
                    ..ErrorCode::RateLimited.into()
                });
            }
            if let Some(command_type) = create {
                if let Err(r) = policy::check_create(&command_type, content_type.as_deref(), &body) {
                    return problem(&r);
                }
            }
            Caller::Client(credential.client_id)
        }
        Route::Device => {
            if let Some(refused) = pre_auth_limit(&env, &client_ip) {
                return problem(&refused);
            }
            let keys = server_keys(&env)?;
            let headers = [
                header(HEADER_DEVICE),
                header(HEADER_TIMESTAMP),
                header(HEADER_NONCE),
                header(HEADER_SIGNATURE),
            ];
            let headers = headers.each_ref().map(|h| h.as_deref());
            let signed = match policy::check_device(&keys, headers, &method, &path_and_query, &body, now_ms() / 1000) {
                Ok(s) => s,
                Err(r) => return problem(&r),
            };
            // A nonce seen within the window is a replay: refused here, before it spends the
            // device's rate budget (a replaying attacker cannot lock the device out).
            let forget_at = (signed.timestamp + hermod_shared::signing::DEFAULT_WINDOW_SECS + 1) * 1000;
            let mut fresh = mailbox(&env, signed.device.as_str())?
                .fetch_with_request(Request::new_with_init(
                    &format!("https://mailbox/nonce?nonce={}&until={forget_at}", signed.nonce),
                    RequestInit::new().with_method(Method::Post),
                )?)
                .await?;
            let fresh: serde_json::Value = fresh.json().await?;
            if fresh["fresh"] != true {
                return problem(&Refusal::new(
                    ErrorCode::ReplayedRequest,
                    Some("this nonce was already used".into()),
                ));
            }
            let rate = setting(&env, VAR_RATE_DEVICE)
                .and_then(|s| Rate::parse(&s))
                .unwrap_or(DEFAULT_RATE_DEVICE);
            let decision = limit(&format!("device:{}", signed.device), rate);
            rate_headers = decision.headers(rate.window_secs);
            if !decision.allowed {
                return problem(&Refusal {
                    headers: rate_headers,
                    ..ErrorCode::RateLimited.into()
                });
            }
            Caller::Device(signed.device.to_string())
        }
    };

    // A device's poll: held and answered here while its mailbox is known to be empty.
    let mut poll_version = None;
    if let (Caller::Device(device), Some((cursor, wait))) =
        (&caller, policy::idle_poll(&method, url.path(), url.query()))
    {
        let reconcile_every = setting(&env, VAR_RECONCILE_EVERY)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(DEFAULT_RECONCILE_EVERY_SECS)
            * 1000;
        let wait_at_edge = |timeout_ms: u64| {
            let (env, device) = (&env, device.clone());
            async move {
                let mut verdict = mailbox(env, &device)?
                    .fetch_with_str(&format!(
                        "https://mailbox/wait?cursor={cursor}&timeout_ms={timeout_ms}&reconcile_every_ms={reconcile_every}"
                    ))
                    .await?;
                verdict.json::<serde_json::Value>().await
            }
        };
        let mut verdict = wait_at_edge(u64::from(wait) * 1000).await?;
        if verdict["verdict"] == "reconcile" {
            // Ask the backend, without a wait there, whether anything is pending.
            let mut answer = forward(
                &env,
                &Headers::new(),
                "GET",
                &format!("/edge/mailboxes/{device}?cursor={cursor}"),
                &[],
                &Caller::Edge,
            )
            .await?;
            let pending = answer.status_code() != 200
                || answer
                    .json::<serde_json::Value>()
                    .await
                    .map_or(true, |v| v["pending"] != false);
            if !pending {
                mailbox(&env, device)?
                    .fetch_with_request(Request::new_with_init(
                        "https://mailbox/checked",
                        RequestInit::new().with_method(Method::Post),
                    )?)
                    .await?;
                verdict = wait_at_edge(u64::from(wait) * 1000).await?;
            } else {
                verdict = serde_json::json!({ "verdict": "forward", "version": verdict["version"] });
            }
        }
        if verdict["verdict"] == "empty" {
            let page = MailboxPage {
                items: Vec::new(),
                cursor,
                server_time: now_ms(),
            };
            let headers = Headers::new();
            headers.set(HEADER_SERVER_TIME, &now_ms().to_string())?;
            for (name, value) in &rate_headers {
                headers.set(name, value)?;
            }
            return Ok(Response::from_json(&page)?.with_headers(headers));
        }
        poll_version = verdict["version"].as_u64();
    }

    let mut response = forward(&env, &request_headers, &method, &path_and_query, &body, &caller).await?;
    // A command was created or cancelled: wake the idle polls of the devices it concerns, all
    // at once. The client's answer does not wait for them: each mailbox's object is signalled
    // as this answer leaves and settles after it (`wait_until`), so a user with 30 devices
    // costs the client no more than a user with one. Waiting polls are released when the
    // signal lands, a millisecond or so later; a `wait=0` poll that reached the object before
    // its signal can be answered empty once, and the next poll gets the command (nothing is
    // lost: the object forwards once signalled). A device learns of a command through its
    // long-poll or a push, not by racing its client's answer.
    if let Some(devices) = response.headers().get(HEADER_MAILBOX_DEVICES)? {
        response.headers_mut().delete(HEADER_MAILBOX_DEVICES)?;
        let mut bumps = Vec::new();
        for device in devices.split(',').filter(|d| !d.is_empty()) {
            let bump = Request::new_with_init("https://mailbox/bump", RequestInit::new().with_method(Method::Post))?;
            let stub = mailbox(&env, device)?;
            bumps.push(async move { stub.fetch_with_request(bump).await });
        }
        ctx.wait_until(async move {
            for result in futures_util::future::join_all(bumps).await {
                if let Err(e) = result {
                    console_error!("signalling a mailbox failed: {e}");
                }
            }
        });
    }
    // The backend found the mailbox empty: remember it, unless something arrived meanwhile.
    if let (Some(version), 200) = (poll_version, response.status_code()) {
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        if let Ok(page) = serde_json::from_slice::<MailboxPage>(&bytes) {
            if let (true, Caller::Device(device)) = (page.items.is_empty(), &caller) {
                mailbox(&env, device)?
                    .fetch_with_request(Request::new_with_init(
                        &format!("https://mailbox/empty?version={version}&cursor={}", page.cursor),
                        RequestInit::new().with_method(Method::Post),
                    )?)
                    .await?;
            }
        }
        response = Response::from_bytes(bytes)?.with_headers(headers);
    }
    // A tenant quota the backend reported wins over the edge's own per-key rate.
    if !response.headers().has("ratelimit-limit")? {
        for (name, value) in rate_headers {
            response.headers_mut().set(&name, &value)?;
        }
    }
    Ok(response)
}

fn mailbox(env: &Env, device: &str) -> Result<Stub> {
    env.durable_object(DO_MAILBOX)?.id_from_name(device)?.get_stub()
}

fn limit(key: &str, rate: Rate) -> RateDecision {
    LIMITER.with(|l| l.borrow_mut().check(key, rate, now_ms()))
}

fn server_keys(env: &Env) -> Result<hermod_shared::keys::KeyRing> {
    use base64::Engine;
    use hermod_shared::keys::{KeyRing, ServerKey, LEGACY_KEY_ID};
    let legacy = match setting(env, SECRET_SERVER_KEY) {
        Some(b64) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|k| ServerKey::new(LEGACY_KEY_ID, k).ok())
                .ok_or_else(|| Error::RustError("SERVER_KEY is not base64 of at least 32 bytes".into()))?,
        ),
        None => None,
    };
    match (setting(env, SECRET_SERVER_KEYS), legacy) {
        (Some(text), legacy) => {
            let ring = KeyRing::parse(&text).map_err(|e| Error::RustError(format!("SERVER_KEYS: {e}")))?;
            Ok(match legacy {
                Some(key) => ring.with_older(key),
                None => ring,
            })
        }
        (None, Some(key)) => Ok(KeyRing::single(key)),
        (None, None) => Err(Error::RustError("neither SERVER_KEYS nor SERVER_KEY is set".into())),
    }
}

/// The active key hashes of a client, from the KV cache while fresh (unless `refresh`), else
/// from the backend (and then cached, a miss too, so that unknown ids do not reach the backend
/// on every request).
/// The per-address budget every client and device request spends before anything else is
/// checked; `Some` refusal when it is spent.
fn pre_auth_limit(env: &Env, client_ip: &str) -> Option<Refusal> {
    let rate = setting(env, VAR_RATE_IP)
        .and_then(|s| Rate::parse(&s))
        .unwrap_or(DEFAULT_RATE_IP);
    let decision = limit(&format!("ip:{client_ip}"), rate);
    (!decision.allowed).then(|| Refusal {
        headers: decision.headers(rate.window_secs),
        ..ErrorCode::RateLimited.into()
    })
}

fn lookup_refused() -> Refusal {
    Refusal {
        headers: vec![("retry-after".into(), "60".into())],
        ..Refusal::new(
            ErrorCode::RateLimited,
            Some("too many unknown client ids from this address".into()),
        )
    }
}

/// `None` when a back-end look-up was needed and this address's look-up budget is spent.
async fn client_keys(env: &Env, client_id: &str, refresh: bool, client_ip: &str) -> Result<Option<CachedClient>> {
    let ttl_secs = setting(env, VAR_CLIENT_CACHE_TTL)
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(DEFAULT_CLIENT_CACHE_TTL_SECS);
    let kv = env.kv(KV_CACHE)?;
    let cache_key = format!("client:{client_id}");
    if !refresh {
        if let Some(text) = kv
            .get(&cache_key)
            .text()
            .await
            .map_err(|e| Error::RustError(e.to_string()))?
        {
            if let Ok(cached) = serde_json::from_str::<CachedClient>(&text) {
                if now_ms() - cached.fetched_at_ms < ttl_secs * 1000 {
                    return Ok(Some(cached));
                }
            }
        }
    }
    let lookups = setting(env, VAR_RATE_LOOKUP)
        .and_then(|s| Rate::parse(&s))
        .unwrap_or(DEFAULT_RATE_LOOKUP);
    if !limit(&format!("lookup:{client_ip}"), lookups).allowed {
        return Ok(None);
    }
    let path = format!("/edge/clients/{client_id}");
    let mut response = forward(env, &Headers::new(), "GET", &path, &[], &Caller::Edge).await?;
    let key_hashes = match response.status_code() {
        200 => serde_json::from_slice::<EdgeClient>(&response.bytes().await?)?.key_hashes,
        404 => Vec::new(),
        other => {
            return Err(Error::RustError(format!(
                "backend answered {other} to a client look-up"
            )))
        }
    };
    let fresh = CachedClient {
        key_hashes,
        fetched_at_ms: now_ms(),
    };
    // KV keeps entries at least 60 s; freshness is decided by `fetched_at_ms` above.
    kv.put(&cache_key, serde_json::to_string(&fresh)?)
        .map_err(|e| Error::RustError(e.to_string()))?
        .expiration_ttl((ttl_secs.max(30) * 2) as u64)
        .execute()
        .await
        .map_err(|e| Error::RustError(e.to_string()))?;
    Ok(Some(fresh))
}

fn path_url(env: &Env, path_and_query: &str) -> Result<String> {
    let backend = setting(env, VAR_BACKEND_URL).ok_or_else(|| Error::RustError("BACKEND_URL is not set".into()))?;
    Ok(format!("{}{path_and_query}", backend.trim_end_matches('/')))
}

/// Sends the request on to the backend with the assertion, and its answer back.
async fn forward(
    env: &Env,
    original: &Headers,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    caller: &Caller,
) -> Result<Response> {
    let secret = setting(env, SECRET_EDGE).ok_or_else(|| Error::RustError("EDGE_SECRET is not set".into()))?;
    let assertion = edge::sign(
        secret.as_bytes(),
        method,
        path_and_query,
        now_ms() / 1000,
        &nonce()?,
        caller,
        body,
    );
    let headers = Headers::new();
    for name in FORWARDED_REQUEST_HEADERS {
        if let Some(value) = original.get(name)? {
            headers.set(name, &value)?;
        }
    }
    headers.set(edge::HEADER_ASSERTION, &assertion)?;
    let mut init = RequestInit::new();
    init.with_method(Method::from(method.to_owned())).with_headers(headers);
    if !body.is_empty() {
        init.with_body(Some(js_sys::Uint8Array::from(body).into()));
    }
    let upstream = Request::new_with_init(&path_url(env, path_and_query)?, &init)?;
    let mut answer = match Fetch::Request(upstream).send().await {
        Ok(a) => a,
        Err(e) => {
            console_error!("backend unreachable: {e}");
            return problem(&Refusal::new(
                ErrorCode::Internal,
                Some("the backend is unreachable".into()),
            ));
        }
    };
    let headers = Headers::new();
    for name in FORWARDED_RESPONSE_HEADERS {
        if let Some(value) = answer.headers().get(name)? {
            headers.set(name, &value)?;
        }
    }
    let status = answer.status_code();
    Ok(Response::from_bytes(answer.bytes().await?)?
        .with_status(status)
        .with_headers(headers))
}
