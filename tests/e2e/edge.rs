//! The edge Worker under `wrangler dev`, in front of a backend that only answers the edge.

use crate::edge_channel::EDGE_SECRET;
use crate::harness::*;
use hermod::config::Secret;
use hermod_shared::signing::{self, DeviceSecret};
use hermod_shared::wire::Decision;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

const SERVER_KEY: &str = "c2VydmVyIGtleSBzaGFyZWQgYnkgYmFja2VuZCBhbmQgZWRnZSE="; // 36 bytes

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    hermod::tools::bench::edge::free_port().unwrap()
}

/// `wrangler dev` serving the built Worker (the benchmark's edge scenario runs it the same way).
type Edge = hermod::tools::bench::edge::WranglerDev;

async fn start_edge(port: u16, backend: &str, vars: &[(&str, &str)]) -> Edge {
    Edge::start(&repo(), port, backend, EDGE_SECRET, SERVER_KEY, vars)
        .await
        .unwrap()
}

/// A backend that only answers its edge, and the edge in front of it.
async fn hosted(vars: &[(&str, &str)]) -> (TestApp, Edge) {
    let edge_port = free_port();
    let app = TestApp::start_with(|s| {
        s.edge.secret = Some(Secret::new(EDGE_SECRET));
        s.server_key = Some(Secret::new(SERVER_KEY));
        s.public_url = Some(format!("http://127.0.0.1:{edge_port}/ms"));
    })
    .await;
    let edge = start_edge(edge_port, &app.base, vars).await;
    (app, edge)
}

fn backend_requests(app: &TestApp) -> u64 {
    app.state.metrics.http_requests.get()
}

async fn create_via(edge: &Edge, creds: &Creds, command_type: &str, body: serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/command/{command_type}", edge.base))
        .header("x-api-key", creds.0.token())
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_whole_cycle_runs_through_the_edge() {
    let (app, edge) = hosted(&[]).await;
    let idm = Creds::idm();
    let provision: serde_json::Value = create_via(&edge, &idm, "provision", json!({ "user_id": "yara" }))
        .await
        .json()
        .await
        .unwrap();
    let link = provision["enrolment"]["link"].as_str().unwrap();
    assert!(
        link.contains(&format!("127.0.0.1%3A{}", edge.base.rsplit(':').next().unwrap())),
        "devices are sent to the edge"
    );
    let mut device = hermod_device::Device::enrol(link, None, Some("edge phone"))
        .await
        .unwrap();
    app.receiver.callback_for(provision["id"].as_str().unwrap()).await;

    let created = create_via(
        &edge,
        &idm,
        "authenticate",
        json!({ "user_id": "yara", "payload": { "text": "Log in?" } }),
    )
    .await;
    assert_eq!(created.status(), 201);
    assert!(created.headers().contains_key("ratelimit-remaining"));
    let created: serde_json::Value = created.json().await.unwrap();
    let page = device.poll(10).await.unwrap();
    assert_eq!(page.items[0].command.id.as_str(), created["id"].as_str().unwrap());
    assert_eq!(
        device
            .respond(
                &page.items[0].command.id,
                Decision::Approved,
                Some(json!({ "sig": "x" }))
            )
            .await
            .unwrap()
            .status(),
        200
    );
    let cb = app.receiver.callback_for(created["id"].as_str().unwrap()).await;
    assert_eq!(cb.event().event_type, "command.approved");
    verify_signature(&cb, IDM_SECRET).unwrap();
    let view: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/hermod/rest/command/{}",
            edge.base,
            created["id"].as_str().unwrap()
        ))
        .header("x-api-key", idm.0.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "approved");
}

#[tokio::test]
async fn bad_requests_are_turned_away_at_the_edge_and_never_reach_the_backend() {
    let (app, edge) = hosted(&[]).await;
    let idm = Creds::idm();
    let http = reqwest::Client::new();
    // Warm the edge's cache of idm's key, and enrol a device to spoil signatures of.
    let provision: serde_json::Value = create_via(&edge, &idm, "provision", json!({ "user_id": "zoe" }))
        .await
        .json()
        .await
        .unwrap();
    let device = hermod_device::Device::enrol(provision["enrolment"]["link"].as_str().unwrap(), None, None)
        .await
        .unwrap();
    let secret = DeviceSecret::from_base64(&device.state.device_secret).unwrap();
    let signed = |ts_offset: i64, tamper: bool| {
        let ts = hermod::store::now_ms() / 1000 + ts_offset;
        let h = signing::sign(
            &secret,
            &device.state.device_id,
            "POST",
            "/ms/lifesign",
            ts,
            "nonce-0123456789abcdef",
            if tamper { b"x" } else { b"" },
        );
        http.post(format!("{}/ms/lifesign", edge.base))
            .header(signing::HEADER_DEVICE, h.device.as_str())
            .header(signing::HEADER_TIMESTAMP, h.timestamp.to_string())
            .header(signing::HEADER_NONCE, h.nonce)
            .header(signing::HEADER_SIGNATURE, h.signature)
    };
    let create = |token: Option<String>, content_type: &str, body: Vec<u8>, ty: &str| {
        let mut r = http
            .post(format!("{}/command/{ty}", edge.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            r = r.header("x-api-key", t);
        }
        r
    };
    let wrong_key = hermod_shared::credential::ClientCredential {
        client_id: "idm".into(),
        key: "f".repeat(64),
    }
    .token();
    let ok_body = br#"{"user_id":"zoe"}"#.to_vec();
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "no credentials",
            create(None, "application/json", ok_body.clone(), "ping"),
            401,
            "invalid_credentials",
        ),
        (
            "malformed credentials",
            create(Some("%%%".into()), "application/json", ok_body.clone(), "ping"),
            401,
            "invalid_credentials",
        ),
        (
            "wrong key",
            create(Some(wrong_key), "application/json", ok_body.clone(), "ping"),
            401,
            "invalid_credentials",
        ),
        (
            "malformed JSON",
            create(
                Some(idm.0.token()),
                "application/json",
                b"{\"user_id\":".to_vec(),
                "ping",
            ),
            400,
            "malformed_json",
        ),
        (
            "unknown command type",
            create(Some(idm.0.token()), "application/json", ok_body.clone(), "pong"),
            400,
            "unknown_command_type",
        ),
        (
            "not JSON",
            create(Some(idm.0.token()), "text/plain", ok_body.clone(), "ping"),
            415,
            "unsupported_media_type",
        ),
        (
            "oversized body",
            create(Some(idm.0.token()), "application/json", vec![b' '; 70_000], "ping"),
            413,
            "body_too_large",
        ),
        ("bad device signature", signed(0, true), 401, "invalid_signature"),
        ("stale device timestamp", signed(-400, false), 401, "stale_request"),
        (
            "no signature headers",
            http.get(format!("{}/ms/mailbox", edge.base)),
            401,
            "invalid_signature",
        ),
        (
            "enrolment that is not JSON",
            http.post(format!("{}/ms/enrol", edge.base))
                .header("content-type", "application/json")
                .body("{"),
            400,
            "malformed_json",
        ),
        (
            "the backend's internal routes",
            http.get(format!("{}/edge/clients/idm", edge.base)),
            404,
            "not_found",
        ),
        (
            "the backend's metrics",
            http.get(format!("{}/metrics", edge.base)),
            404,
            "not_found",
        ),
    ];
    for (name, request, status, code) in cases {
        let before = backend_requests(&app);
        let r = request.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{name}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{name}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], code, "{name}: {body}");
        assert_eq!(backend_requests(&app), before, "{name} reached the backend");
    }
    // An unknown client costs the backend one look-up, then the edge remembers.
    let nobody = hermod_shared::credential::ClientCredential {
        client_id: "nobody".into(),
        key: IDM_KEY.into(),
    }
    .token();
    let before = backend_requests(&app);
    for _ in 0..5 {
        assert_eq!(
            create(Some(nobody.clone()), "application/json", ok_body.clone(), "ping")
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
    }
    assert!(backend_requests(&app) - before <= 1);
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_ratelimit_headers() {
    let (app, edge) = hosted(&[("RATE_LIMIT_CLIENT", "3/60")]).await;
    let idm = Creds::idm();
    for i in 0..3 {
        let r = create_via(&edge, &idm, "provision", json!({ "user_id": format!("u{i}") })).await;
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["ratelimit-limit"], "3");
        assert_eq!(r.headers()["ratelimit-remaining"], (2 - i).to_string());
    }
    let before = backend_requests(&app);
    let r = create_via(&edge, &idm, "provision", json!({ "user_id": "u4" })).await;
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], "rate_limited");
    assert_eq!(backend_requests(&app), before, "refused at the edge");
    // Another key has its own budget.
    assert_eq!(
        create_via(&edge, &Creds::da(), "provision", json!({ "user_id": "d" }))
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn a_revoked_key_fails_at_once_on_the_backend_and_within_the_cache_bound_at_the_edge() {
    let (app, edge) = hosted(&[("CLIENT_CACHE_TTL_SECS", "2")]).await;
    let idm = Creds::idm();
    assert_eq!(
        create_via(&edge, &idm, "provision", json!({ "user_id": "rev" }))
            .await
            .status(),
        201
    );
    sqlx::query("UPDATE clients SET disabled_at = 1 WHERE client_id = 'idm'")
        .execute(&app.state.db.write)
        .await
        .unwrap();
    // At once: the edge still trusts its cache, the backend refuses.
    let before = backend_requests(&app);
    assert_eq!(
        create_via(&edge, &idm, "provision", json!({ "user_id": "rev" }))
            .await
            .status(),
        401
    );
    assert!(backend_requests(&app) > before, "the backend answered");
    // After the bound: the edge refuses by itself (one look-up, then none).
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        create_via(&edge, &idm, "provision", json!({ "user_id": "rev" }))
            .await
            .status(),
        401
    );
    let before = backend_requests(&app);
    assert_eq!(
        create_via(&edge, &idm, "provision", json!({ "user_id": "rev" }))
            .await
            .status(),
        401
    );
    assert_eq!(backend_requests(&app), before, "refused at the edge");
}

/// The hosted flow end to end: the operator and a tenant admin work through the edge; a new
/// key works at the edge at once, both keys of a rotation work, and a revoked key is refused
/// by the backend at once and by the edge itself within `CLIENT_CACHE_TTL_SECS`.
#[tokio::test]
async fn a_rotation_through_the_admin_api_reaches_the_edge_and_a_revoked_key_is_refused_within_the_bound() {
    let edge_port = free_port();
    let app = TestApp::start_with(|s| {
        s.edge.secret = Some(Secret::new(EDGE_SECRET));
        s.server_key = Some(Secret::new(SERVER_KEY));
        s.public_url = Some(format!("http://127.0.0.1:{edge_port}/ms"));
        s.admin.operator_key = Some(Secret::new(OPERATOR_KEY));
    })
    .await;
    let edge = start_edge(edge_port, &app.base, &[("CLIENT_CACHE_TTL_SECS", "2")]).await;
    let operator = AdminApi::operator(&edge.base);
    let acme = operator.create_tenant("acme", json!({})).await;
    acme.create_group("acme", "mobile-id").await;
    acme.create_client("acme", "idm", "mobile-id", None).await;
    let (old_id, old) = acme.issue_key("acme", "idm").await;
    let body = json!({ "user_id": "rot" });
    assert_eq!(create_via(&edge, &old, "provision", body.clone()).await.status(), 201);

    // A new key works at the edge at once (a second after the last look-up at most)...
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, new) = acme.issue_key("acme", "idm").await;
    assert_eq!(create_via(&edge, &new, "provision", body.clone()).await.status(), 201);
    // ...and so does the old one, until it is revoked.
    assert_eq!(create_via(&edge, &old, "provision", body.clone()).await.status(), 201);
    assert_eq!(
        acme.delete(&format!("/admin/tenants/acme/clients/idm/keys/{old_id}"))
            .await,
        204
    );
    // At once: the edge may still trust its cache, the backend refuses.
    assert_eq!(create_via(&edge, &old, "provision", body.clone()).await.status(), 401);
    assert_eq!(create_via(&edge, &new, "provision", body.clone()).await.status(), 201);
    // After the bound: the edge refuses by itself, without asking the backend.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(create_via(&edge, &new, "provision", body.clone()).await.status(), 201);
    let before = backend_requests(&app);
    let r = create_via(&edge, &old, "provision", body.clone()).await;
    assert_eq!(r.status(), 401);
    assert_eq!(backend_requests(&app), before, "refused at the edge");

    // The tenant's quota, counted by the backend, shows through the edge with its headers.
    operator
        .ok(
            reqwest::Method::PUT,
            "/admin/tenants/acme/quotas",
            Some(json!({ "max_commands_per_second": 1 })),
            200,
        )
        .await;
    sleep_to_next_second().await;
    let first = create_via(&edge, &new, "provision", body.clone()).await;
    assert_eq!(first.status(), 201);
    assert_eq!(
        first.headers()["ratelimit-limit"],
        "1",
        "the tenant's quota, not the edge's rate"
    );
    let second = create_via(&edge, &new, "provision", body).await;
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["ratelimit-remaining"], "0");
    assert_eq!(second.headers()["retry-after"], "1");
}

#[tokio::test]
async fn a_thousand_empty_polls_cost_the_backend_fewer_than_10_requests_and_a_new_command_still_wakes_the_device() {
    let (app, edge) = hosted(&[("RATE_LIMIT_DEVICE", "100000/60")]).await;
    let idm = Creds::idm();
    let provision: serde_json::Value = create_via(&edge, &idm, "provision", json!({ "user_id": "ivan" }))
        .await
        .json()
        .await
        .unwrap();
    let mut device = hermod_device::Device::enrol(provision["enrolment"]["link"].as_str().unwrap(), None, None)
        .await
        .unwrap();

    let before = backend_requests(&app);
    for _ in 0..1000 {
        let page = device.poll(0).await.unwrap();
        assert!(page.items.is_empty());
    }
    let cost = backend_requests(&app) - before;
    println!("1,000 empty polls through the edge cost the backend {cost} requests");
    assert!(cost < 10, "1,000 empty polls cost the backend {cost} requests");

    // A device long-polling the edge on its known-empty mailbox gets a new command at once.
    let poller = {
        let mut d = hermod_device::Device::from_state(device.state.clone()).unwrap();
        tokio::spawn(async move {
            let page = d.poll(30).await.unwrap();
            (std::time::Instant::now(), page)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = std::time::Instant::now();
    let created: serde_json::Value = create_via(&edge, &idm, "authenticate", json!({ "user_id": "ivan" }))
        .await
        .json()
        .await
        .unwrap();
    let (woke, page) = poller.await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].command.id.as_str(), created["id"].as_str().unwrap());
    let waited = woke - sent;
    println!("a new command reached the device long-polling the edge after {waited:?}");
    assert!(
        waited < Duration::from_secs(1),
        "the command reached the waiting device after {waited:?}"
    );
    // The client never sees the edge's internal header.
    let r = create_via(&edge, &idm, "ping", json!({ "user_id": "ivan" })).await;
    assert!(!r.headers().contains_key("hermod-mailbox-devices"));

    // Cancelling wakes the device too, and it sees the cancellation.
    device.state.cursor = page.cursor;
    let pending = device.poll(0).await.unwrap(); // the ping
    assert_eq!(pending.items.len(), 1);
    let id = pending.items[0].command.id.to_string();
    let poller = {
        let mut d = hermod_device::Device::from_state(device.state.clone()).unwrap();
        tokio::spawn(async move { d.poll(30).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = reqwest::Client::new()
        .delete(format!("{}/command/{id}", edge.base))
        .header("x-api-key", idm.0.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = tokio::time::timeout(Duration::from_secs(5), poller)
        .await
        .expect("woken by the cancellation")
        .unwrap();
    assert_eq!(page.items[0].kind, hermod_shared::wire::MailboxEventKind::Cancelled);
}

#[tokio::test]
async fn made_up_client_ids_and_one_noisy_address_are_stopped_before_the_backend() {
    let (app, edge) = hosted(&[("RATE_LIMIT_LOOKUP", "10/60"), ("RATE_LIMIT_IP", "150/60")]).await;
    let http = reqwest::Client::new();
    let before = backend_requests(&app);
    let mut statuses = std::collections::BTreeMap::new();
    // A new made-up client id each time: each would be a look-up at the backend.
    for i in 0..200 {
        let creds = Creds(hermod_shared::credential::ClientCredential {
            client_id: format!("made-up-{i}"),
            key: "k".repeat(43),
        });
        let r = http
            .get(format!("{}/command/callbacks", edge.base))
            .header("x-api-key", creds.0.token())
            .send()
            .await
            .unwrap();
        *statuses.entry(r.status().as_u16()).or_insert(0) += 1;
    }
    let lookups = backend_requests(&app) - before;
    assert!(
        lookups <= 10,
        "{lookups} backend requests for 200 made-up ids: {statuses:?}"
    );
    // 10 looked up (401), the rest refused at the edge: 429 for look-ups, then for the address.
    assert_eq!(statuses.get(&401), Some(&10), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&190), "{statuses:?}");
}

/// A device enrolled through the edge (its mailbox URL is the edge's).
async fn device_via(edge: &Edge, user: &str) -> hermod_device::Device {
    let provision: serde_json::Value = create_via(edge, &Creds::idm(), "provision", json!({ "user_id": user }))
        .await
        .json()
        .await
        .unwrap();
    hermod_device::Device::enrol(provision["enrolment"]["link"].as_str().unwrap(), None, None)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_replayed_device_request_is_refused_at_the_edge_and_spends_none_of_the_devices_budget() {
    let (_app, edge) = hosted(&[("RATE_LIMIT_DEVICE", "20/60")]).await;
    let mut device = device_via(&edge, "rita").await;
    // A request captured on the wire: signed once, sent 1,001 times.
    let secret = hermod_shared::signing::DeviceSecret::from_base64(&device.state.device_secret).unwrap();
    let path = "/ms/mailbox?cursor=0&wait=0";
    let now = hermod_device::now_ms() / 1000;
    let h = hermod_shared::signing::sign(
        &secret,
        &device.state.device_id,
        "GET",
        path,
        now,
        "captured-nonce-0123456789",
        b"",
    );
    let send = || {
        reqwest::Client::new()
            .get(format!("{}{path}", edge.base))
            .header(hermod_shared::signing::HEADER_DEVICE, h.device.as_str())
            .header(hermod_shared::signing::HEADER_TIMESTAMP, h.timestamp.to_string())
            .header(hermod_shared::signing::HEADER_NONCE, &h.nonce)
            .header(hermod_shared::signing::HEADER_SIGNATURE, &h.signature)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    for _ in 0..20 {
        let replays: Vec<_> = (0..50).map(|_| send()).collect();
        for r in futures::future::join_all(replays).await {
            let r = r.unwrap();
            assert_eq!(r.status(), 401);
            assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], "replayed_request");
        }
    }
    // The real device's budget (20 a minute) is untouched by the replays.
    assert!(device.poll(0).await.is_ok());
}

#[tokio::test]
async fn long_polls_are_held_at_the_edge_for_their_whole_wait_also_after_eviction_and_an_older_cursor_is_forwarded() {
    let (app, edge) = hosted(&[]).await;
    let mut devices = Vec::new();
    for i in 0..5 {
        devices.push(device_via(&edge, &format!("lp{i}")).await);
    }
    // The first poll of each goes to the backend (the edge knows nothing yet).
    for d in devices.iter_mut() {
        assert!(d.poll(1).await.unwrap().items.is_empty());
    }
    let rounds = |devices: Vec<hermod_device::Device>, wait: u32| async move {
        let polls: Vec<_> = devices
            .into_iter()
            .map(|mut d| {
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let page = d.poll(wait).await.unwrap();
                    (d, page, started.elapsed())
                })
            })
            .collect();
        let mut back = Vec::new();
        for p in polls {
            let (d, page, took) = p.await.unwrap();
            assert!(page.items.is_empty());
            assert!(
                took >= Duration::from_millis(u64::from(wait) * 900),
                "held for its wait: {took:?}"
            );
            back.push(d);
        }
        back
    };
    let before = backend_requests(&app);
    let mut devices = rounds(devices, 2).await;
    devices = rounds(devices, 2).await;
    assert_eq!(
        backend_requests(&app) - before,
        0,
        "long-polls on known-empty mailboxes stay at the edge"
    );

    // Idle past the Durable Objects' eviction (about 10 s without a request): what they knew
    // was stored, so the next long-polls still stay at the edge.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let before = backend_requests(&app);
    devices = rounds(devices, 1).await;
    assert_eq!(backend_requests(&app) - before, 0, "after eviction too");

    // A command still reaches a device waiting at the edge.
    let mut waiting = devices.remove(0);
    let poll = tokio::spawn(async move {
        let page = waiting.poll(30).await.unwrap();
        (waiting, page)
    });
    let created: serde_json::Value = create_via(&edge, &Creds::idm(), "authenticate", json!({ "user_id": "lp0" }))
        .await
        .json()
        .await
        .unwrap();
    let (mut device, page) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.items[0].command.id.as_str(), created["id"].as_str().unwrap());
    // Read to the end (the edge learns the mailbox is empty at the new cursor) ...
    assert!(device.poll(0).await.unwrap().items.is_empty());
    // ... then ask from an older cursor: forwarded, and the open command is there again.
    device.state.cursor = 0;
    let again = device.poll(0).await.unwrap();
    assert_eq!(again.items[0].command.id.as_str(), created["id"].as_str().unwrap());
}

#[tokio::test]
async fn an_idle_devices_mailbox_is_reconciled_with_the_backend_at_the_stated_interval_without_a_wait_there() {
    let (app, edge) = hosted(&[("RECONCILE_EVERY_SECS", "2")]).await;
    let mut device = device_via(&edge, "remy").await;
    assert!(device.poll(0).await.unwrap().items.is_empty()); // forwarded: the edge learns "empty"
    let before = backend_requests(&app);
    // Two long-polls of 2 s at the edge: the second starts past the interval, so the edge asks
    // the backend once (a look-up that holds nothing) and then waits at the edge.
    for _ in 0..2 {
        let started = std::time::Instant::now();
        assert!(device.poll(2).await.unwrap().items.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(1_800));
    }
    assert_eq!(backend_requests(&app) - before, 1, "one reconciliation");
    // The device counts as seen by it.
    let seen: Option<i64> = sqlx::query_scalar("SELECT last_seen_at FROM devices WHERE id = $1")
        .bind(device.state.device_id.as_str())
        .fetch_one(&app.state.db.write)
        .await
        .unwrap();
    assert!(seen.is_some_and(|at| at >= hermod_device::now_ms() - 5_000), "{seen:?}");
}

#[tokio::test]
async fn through_the_edge_a_users_other_device_sees_an_answered_command_withdrawn_and_a_claim_by_qr_works() {
    let (_app, edge) = hosted(&[]).await;
    let idm = Creds::idm();
    let mut phone = device_via(&edge, "kim").await;
    let mut desktop = device_via(&edge, "kim").await;
    phone.poll(0).await.unwrap();
    desktop.poll(0).await.unwrap();
    let created: serde_json::Value = create_via(&edge, &idm, "authenticate", json!({ "user_id": "kim" }))
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    for d in [&mut phone, &mut desktop] {
        let page = d.poll(5).await.unwrap();
        assert_eq!(page.items.len(), 1, "{page:?}");
    }
    // The desktop long-polls the edge; the phone's answer withdraws the command from it.
    let poller = {
        let mut d = hermod_device::Device::from_state(desktop.state.clone()).unwrap();
        tokio::spawn(async move { d.poll(30).await.unwrap() })
    };
    let cmd = hermod_shared::CommandId::parse(&id).unwrap();
    let r = phone
        .respond(&cmd, hermod_shared::wire::Decision::Approved, None)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        !r.headers().contains_key("hermod-mailbox-devices"),
        "the edge keeps its header"
    );
    let page = tokio::time::timeout(Duration::from_secs(5), poller)
        .await
        .expect("the withdrawal reaches the long-polling device")
        .unwrap();
    let item = page.items.iter().find(|i| i.command.id == cmd).expect("withdrawn");
    assert_eq!(item.kind, hermod_shared::wire::MailboxEventKind::Cancelled);
    assert_eq!(
        item.reason,
        Some(hermod_shared::wire::WithdrawReason::AnsweredElsewhere)
    );
    let late = desktop
        .respond(&cmd, hermod_shared::wire::Decision::Approved, None)
        .await
        .unwrap();
    assert_eq!(late.status(), 409);

    // A command for nobody, claimed through the edge with a current frame.
    let created: serde_json::Value = create_via(&edge, &idm, "authenticate", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let frame = hermod_shared::approval::qr_frame(
        hermod_shared::approval::QR_PREFIX,
        created["qr_start_token"].as_str().unwrap(),
        created["qr_start_secret"].as_str().unwrap(),
        0,
    );
    let claimed = desktop.claim(&frame).await.unwrap();
    assert_eq!(claimed.status(), 200);
    let claimed: hermod_shared::wire::ClaimAccepted = claimed.json().await.unwrap();
    assert_eq!(claimed.command.id.as_str(), created["id"].as_str().unwrap());
    let second = phone.claim(&frame).await.unwrap();
    assert_eq!(second.status(), 409);

    // The push calls pass the edge too (this backend offers no Web Push).
    let offered = desktop.push_status().await.unwrap();
    assert!(offered.webpush_vapid_public_key.is_none() && offered.registration.is_none());
    let removed = desktop
        .signed(reqwest::Method::DELETE, "/push", Vec::new())
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
}
