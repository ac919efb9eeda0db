//! Callback delivery: retried on the configured schedule with the same webhook-id until the
//! receiver takes it; `410 Gone` and an exhausted schedule leave a dead letter.

use crate::harness::*;
use hermod_shared::wire::Decision;
use serde_json::json;
use std::time::Duration;

/// Creates an authenticate command for `user`, has the device approve it, returns its id.
async fn approved_command(app: &TestApp, device: &mut hermod_device::Device, user: &str) -> String {
    let created = app
        .create_ok(&Creds::idm(), "authenticate", json!({ "user_id": user }))
        .await;
    let page = device.poll(5).await.unwrap();
    assert_eq!(
        device
            .respond(&page.items[0].command.id, Decision::Approved, None)
            .await
            .unwrap()
            .status(),
        200
    );
    created["id"].as_str().unwrap().to_owned()
}

fn deliveries_of(app: &TestApp, id: &str) -> Vec<Received> {
    app.receiver
        .received()
        .into_iter()
        .filter(|r| r.event().data.id.as_str() == id)
        .collect()
}

async fn event_status(app: &TestApp, command_id: &str) -> (String, i64) {
    sqlx::query_as("SELECT status, attempts FROM callback_events WHERE command_id = $1")
        .bind(command_id)
        .fetch_one(&app.state.db.write)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_the_event_three_times_with_one_webhook_id_on_schedule() {
    // Schedule 0.2 s, 0.4 s, 0.8 s with ±20 % jitter (the harness's settings).
    let app = TestApp::start().await;
    let mut device = app.enrol(&Creds::idm(), "nina").await;
    app.receiver.wait_for(Duration::from_secs(5), |_| true).await; // the provisioning callback
    app.receiver.fail_next(2);
    let id = approved_command(&app, &mut device, "nina").await;

    // Delivered is final: once the outbox says so after three attempts, nothing more is sent.
    eventually(Duration::from_secs(10), "the event is delivered", || async {
        event_status(&app, &id).await.0 == "delivered"
    })
    .await;
    let got = deliveries_of(&app, &id);
    assert_eq!(got.len(), 3, "two failures and one success, nothing after");
    assert!(got
        .iter()
        .all(|r| r.header("webhook-id") == got[0].header("webhook-id")));
    // The backoff holds: no retry comes before its scheduled delay less the jitter. (How soon
    // after it the retry comes is load, not mechanism: the bound above it is loose.)
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps[0] >= Duration::from_millis(155) && gaps[0] < Duration::from_secs(5),
        "first retry after {:?}",
        gaps[0]
    );
    assert!(
        gaps[1] >= Duration::from_millis(315) && gaps[1] < Duration::from_secs(5),
        "second retry after {:?}",
        gaps[1]
    );
    for r in &got {
        verify_signature(r, IDM_SECRET).expect("every attempt is signed afresh");
    }
    assert_eq!(event_status(&app, &id).await, ("delivered".to_owned(), 3));
}

#[tokio::test]
async fn an_event_that_exhausts_its_retries_is_kept_as_a_dead_letter() {
    let app = TestApp::start().await;
    let mut device = app.enrol(&Creds::idm(), "omar").await;
    app.receiver.wait_for(Duration::from_secs(5), |_| true).await;
    app.receiver.fail_next(100);
    let id = approved_command(&app, &mut device, "omar").await;
    // 1 attempt + 3 retries (0.2 + 0.4 + 0.8 s, ±20 %), then a dead letter: nothing more.
    eventually(Duration::from_secs(15), "the event is a dead letter", || async {
        event_status(&app, &id).await.0 == "dead"
    })
    .await;
    assert_eq!(deliveries_of(&app, &id).len(), 4);
    assert_eq!(event_status(&app, &id).await, ("dead".to_owned(), 4));
    let attempts: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM callback_attempts a JOIN callback_events e ON e.id = a.event_id WHERE e.command_id = $1",
    )
    .bind(&id)
    .fetch_one(&app.state.db.write)
    .await
    .unwrap();
    assert_eq!(attempts, 4, "every attempt is logged");
}

#[tokio::test]
async fn a_hanging_receiver_is_timed_out_and_retried() {
    let app = TestApp::start_with(|s| {
        s.callbacks.request_timeout = 0.5;
        s.callbacks.overload_pause = 0.3;
    })
    .await;
    let mut device = app.enrol(&Creds::idm(), "pia").await;
    app.receiver.wait_for(Duration::from_secs(5), |_| true).await;
    app.receiver.behave("/ws/hermod", Duration::from_secs(5), 204);
    let id = approved_command(&app, &mut device, "pia").await;
    app.receiver
        .wait_for(Duration::from_secs(5), |r| r.event().data.id.as_str() == id)
        .await;
    // The first attempt is given up on (and logged) at the request timeout.
    eventually(Duration::from_secs(10), "the first attempt times out", || async {
        let (_, list) = app.get(&Creds::idm(), &format!("/command/{id}/callbacks")).await;
        list[0]["attempt_log"].as_array().is_some_and(|log| !log.is_empty())
    })
    .await;
    app.receiver.behave_normally();
    app.receiver
        .wait_for(Duration::from_secs(10), |_| deliveries_of(&app, &id).len() >= 2)
        .await;
    let (status, list) = app.get(&Creds::idm(), &format!("/command/{id}/callbacks")).await;
    assert_eq!(status, 200);
    let log = list[0]["attempt_log"].as_array().unwrap();
    assert!(log[0]["error"].as_str().unwrap().starts_with("timed out"), "{log:?}");
    assert!(log[0]["duration_ms"].as_i64().unwrap() < 1500);
    eventually(Duration::from_secs(10), "the success is recorded", || async {
        event_status(&app, &id).await.0 == "delivered"
    })
    .await;
}

#[tokio::test]
async fn a_receiver_answering_410_is_not_called_again_until_recovered() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let mut device = app.enrol(&idm, "quentin").await;
    app.receiver.wait_for(Duration::from_secs(5), |_| true).await;
    app.receiver.behave("/ws/hermod", Duration::ZERO, 410);
    let first = approved_command(&app, &mut device, "quentin").await;
    app.receiver
        .wait_for(Duration::from_secs(5), |r| r.event().data.id.as_str() == first)
        .await;
    eventually(Duration::from_secs(10), "the 410 is recorded", || async {
        event_status(&app, &first).await.0 == "dead"
    })
    .await;
    // Written as a dead letter at once: it is never pending, so it is never sent.
    let second = approved_command(&app, &mut device, "quentin").await;
    assert_eq!(deliveries_of(&app, &first).len(), 1, "410 is final");
    assert!(
        deliveries_of(&app, &second).is_empty(),
        "a disabled receiver is not called"
    );
    assert_eq!(event_status(&app, &first).await.0, "dead");
    assert_eq!(event_status(&app, &second).await.0, "dead");

    // The dead letters are visible, and a recovery sends them once the receiver is back.
    let (status, dead) = app.get(&idm, "/command/callbacks?status=dead").await;
    assert_eq!(status, 200);
    assert_eq!(dead.as_array().unwrap().len(), 2);
    assert!(dead[0]["last_error"].as_str().unwrap().contains("410"));
    app.receiver.behave_normally();
    let since = hermod_shared::wire::rfc3339(hermod::store::now_ms() - 60_000);
    let r = app
        .http
        .post(format!("{}/command/callbacks/recover", app.base))
        .header("x-api-key", idm.0.token())
        .json(&json!({ "since": since }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["requeued"], 2);
    app.receiver.callback_for(&second).await;
    app.receiver
        .wait_for(Duration::from_secs(5), |_| deliveries_of(&app, &first).len() == 2)
        .await;
}

#[tokio::test]
async fn one_event_can_be_redelivered_and_bad_listing_requests_are_refused() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let mut device = app.enrol(&idm, "rita").await;
    let id = approved_command(&app, &mut device, "rita").await;
    let first = app.receiver.callback_for(&id).await;
    for _ in 0..50 {
        if event_status(&app, &id).await.0 == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let webhook_id = first.header("webhook-id").to_owned();
    let r = app
        .http
        .post(format!("{}/command/callbacks/{webhook_id}/redeliver", app.base))
        .header("x-api-key", idm.0.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    app.receiver
        .wait_for(Duration::from_secs(5), |_| deliveries_of(&app, &id).len() == 2)
        .await;
    assert!(deliveries_of(&app, &id)
        .iter()
        .all(|r| r.header("webhook-id") == webhook_id));

    // Another client cannot see or redeliver it.
    let other = app
        .http
        .post(format!("{}/command/callbacks/{webhook_id}/redeliver", app.base))
        .header("x-api-key", Creds::da().0.token())
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    assert_eq!(app.get(&Creds::da(), &format!("/command/{id}/callbacks")).await.0, 404);
    for bad in ["?status=lost", "?since=yesterday", "?limit=0", "?limit=101"] {
        let (status, body) = app.get(&idm, &format!("/command/callbacks{bad}")).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")), "{bad}");
    }
    let r = app
        .http
        .post(format!("{}/command/callbacks/recover", app.base))
        .header("x-api-key", idm.0.token())
        .json(&json!({ "since": "2030-01-01T00:00:00Z", "until": "2020-01-01T00:00:00Z" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_slow_receiver_does_not_hold_up_a_fast_one() {
    // Two deliveries at most per receiver, four in all; the slow receiver takes 1.5 s a call.
    let app = TestApp::start_with(|s| {
        s.callbacks.concurrency = 4;
        s.callbacks.per_receiver_concurrency = 2;
        s.callbacks.request_timeout = 2.0;
    })
    .await;
    let (idm, da) = (Creds::idm(), Creds::da());
    let mut device = app.enrol(&idm, "sam").await;
    app.receiver.wait_for(Duration::from_secs(5), |_| true).await;
    app.receiver.behave("/ws/hermod", Duration::from_millis(1500), 204);
    for _ in 0..8 {
        approved_command(&app, &mut device, "sam").await;
    }
    let created = app.create_ok(&da, "authenticate", json!({ "user_id": "sam" })).await;
    let page = device.poll(5).await.unwrap();
    let answered_at = std::time::Instant::now();
    device
        .respond(&page.items[0].command.id, Decision::Approved, None)
        .await
        .unwrap();
    let fast = app.receiver.callback_for(created["id"].as_str().unwrap()).await;
    assert_eq!(fast.path, "/da");
    let waited = fast.at - answered_at;
    assert!(waited < Duration::from_secs(2), "the fast receiver waited {waited:?}");
}

#[tokio::test]
async fn callback_signatures_verify_only_with_the_right_secret_fresh_and_whole() {
    let new_secret = "whsec_bmV3IHNlY3JldCBmb3IgdGhlIHJvdGF0aW9uIHRlc3Q=";
    let app = TestApp::start_with(|s| s.allowed_clients[0].callback_signing_secrets.push(new_secret.into())).await;
    let mut device = app.enrol(&Creds::idm(), "tom").await;
    let id = approved_command(&app, &mut device, "tom").await;
    let cb = app.receiver.callback_for(&id).await;
    // During a rotation both secrets sign; either verifies.
    assert_eq!(cb.header("webhook-signature").split(' ').count(), 2);
    verify_signature(&cb, IDM_SECRET).unwrap();
    verify_signature(&cb, new_secret).unwrap();

    use hermod_shared::webhook::{verify, WebhookError, WebhookSecret};
    let secret = [WebhookSecret::parse(IDM_SECRET).unwrap()];
    let (id_h, ts) = (cb.header("webhook-id"), cb.header("webhook-timestamp"));
    let now: i64 = ts.parse().unwrap();
    let wrong = [WebhookSecret::parse("whsec_d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldA==").unwrap()];
    assert_eq!(
        verify(&wrong, id_h, ts, cb.header("webhook-signature"), &cb.body, now, 300),
        Err(WebhookError::NoMatch)
    );
    assert_eq!(
        verify(&secret, id_h, ts, "v1,", &cb.body, now, 300),
        Err(WebhookError::NoMatch)
    );
    assert_eq!(
        verify(&secret, id_h, ts, "", &cb.body, now, 300),
        Err(WebhookError::NoMatch)
    );
    assert_eq!(
        verify(
            &secret,
            id_h,
            ts,
            cb.header("webhook-signature"),
            &cb.body,
            now + 301,
            300
        ),
        Err(WebhookError::Stale)
    );
    assert_eq!(
        verify(
            &secret,
            "msg_other",
            ts,
            cb.header("webhook-signature"),
            &cb.body,
            now,
            300
        ),
        Err(WebhookError::NoMatch)
    );
}

#[tokio::test]
async fn an_https_receiver_is_reached_through_a_ca_in_cacerts_and_refused_without_it() {
    let pki = crate::certs::TestPki::new();
    let https = Receiver::start_https(&pki).await;

    // Without the CA: the TLS handshake fails, the attempt is logged, and it will be retried.
    let without = TestApp::start_with(|s| {
        s.allowed_clients[0].callback_url = Some(https.url.clone());
        s.callbacks.retry_schedule = vec![30.0];
    })
    .await;
    let mut device = without.enrol(&Creds::idm(), "uma").await;
    let id = approved_command(&without, &mut device, "uma").await;
    let mut attempts = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, list) = without.get(&Creds::idm(), &format!("/command/{id}/callbacks")).await;
        if list[0]["attempts"].as_i64().unwrap_or(0) >= 1 {
            attempts = list[0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(attempts["status"], "pending", "refused, and to be retried: {attempts}");
    let error = attempts["attempt_log"][0]["error"].as_str().unwrap();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert!(https.received().is_empty());

    // With the CA's PEM in cacerts/: delivered.
    let with = TestApp::start_with(|s| {
        std::fs::create_dir_all(&s.cacerts).unwrap();
        std::fs::write(s.cacerts.join("test-ca.cer"), &pki.ca_pem).unwrap();
        s.allowed_clients[0].callback_url = Some(https.url.clone());
    })
    .await;
    let mut device = with.enrol(&Creds::idm(), "uma").await;
    let id = approved_command(&with, &mut device, "uma").await;
    let cb = https.callback_for(&id).await;
    verify_signature(&cb, IDM_SECRET).unwrap();
}

#[tokio::test]
async fn counters_show_delivered_retried_and_dead_callbacks() {
    let app = TestApp::start().await;
    let mut device = app.enrol(&Creds::idm(), "vera").await;
    app.receiver.wait_for(Duration::from_secs(5), |_| true).await;
    app.receiver.fail_next(100);
    let id = approved_command(&app, &mut device, "vera").await;
    eventually(Duration::from_secs(20), "the event is a dead letter", || async {
        event_status(&app, &id).await.0 == "dead"
    })
    .await;
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    assert_eq!(value("hermod_callbacks_delivered_total"), 1, "{metrics}");
    assert_eq!(value("hermod_callbacks_retried_total"), 3);
    assert_eq!(value("hermod_callbacks_dead_total"), 1);
    assert_eq!(value("hermod_commands_created_total"), 2);
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let app = TestApp::start_with(|s| s.callbacks.retry_schedule = vec![30.0]).await;
    let mut device = app.enrol(&Creds::idm(), "xena").await;
    app.receiver.wait_for(Duration::from_secs(5), |_| true).await;
    app.receiver.behave("/ws/hermod", Duration::ZERO, 302);
    let id = approved_command(&app, &mut device, "xena").await;
    let mut delivery = serde_json::Value::Null;
    for _ in 0..100 {
        let (_, list) = app.get(&Creds::idm(), &format!("/command/{id}/callbacks")).await;
        if list[0]["attempts"].as_i64().unwrap_or(0) >= 1 {
            delivery = list[0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivery["status"], "pending", "{delivery}");
    assert_eq!(delivery["attempt_log"][0]["status_code"], 302);
    assert!(delivery["next_attempt_at"].is_string());
    assert_eq!(deliveries_of(&app, &id).len(), 1);
}

#[tokio::test]
async fn when_a_receiver_answers_again_its_owed_callbacks_arrive_within_seconds_not_after_their_backoff() {
    // Retries a minute apart: without bringing them forward, they would wait that minute.
    let app = TestApp::start_with(|s| {
        s.callbacks.retry_schedule = vec![60.0, 60.0];
        s.callbacks.jitter = 0.0;
    })
    .await;
    let mut device = app.enrol(&Creds::idm(), "owen").await;
    app.receiver.wait_for(Duration::from_secs(5), |_| true).await;
    app.receiver.fail_next(3);
    let mut owed = Vec::new();
    for _ in 0..3 {
        owed.push(approved_command(&app, &mut device, "owen").await);
    }
    for id in &owed {
        eventually(Duration::from_secs(10), "the first attempt failed", || async {
            event_status(&app, id).await == ("pending".to_owned(), 1)
        })
        .await;
    }
    // The receiver is back: the next callback gets through, and the owed ones follow at once.
    let started = std::time::Instant::now();
    let fresh = approved_command(&app, &mut device, "owen").await;
    for id in std::iter::once(&fresh).chain(&owed) {
        // Well inside the 60 s backoff they were given.
        eventually(Duration::from_secs(30), "delivered", || async {
            event_status(&app, id).await.0 == "delivered"
        })
        .await;
    }
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_tenant_whose_receiver_hangs_on_1000_callbacks_does_not_delay_another_tenants_100() {
    let app = start_hosted().await;
    let operator = AdminApi::operator(&app.base);
    let slow = operator
        .tenant_with_clients(&app, "slow", "staff", &["hook"])
        .await
        .remove(0);
    let fast = operator
        .tenant_with_clients(&app, "fast", "staff", &["hook"])
        .await
        .remove(0);
    // The slow tenant's receiver never answers in time (2 s request timeout in the tests).
    app.receiver.behave("/slow/", Duration::from_secs(30), 200);
    app.enrol(&slow, "ada").await;
    app.enrol(&fast, "bea").await;
    let create_many = |creds: Creds, user: &'static str, n: usize| {
        let app_base = app.base.clone();
        async move {
            let tasks: Vec<_> = (0..8)
                .map(|t| {
                    let (base, creds) = (app_base.clone(), creds.clone());
                    tokio::spawn(async move {
                        let http = reqwest::Client::new();
                        for _ in (t..n).step_by(8) {
                            let r = http
                                .post(format!("{base}/command/authenticate"))
                                .header("x-api-key", creds.0.token())
                                .json(&json!({ "user_id": user, "timeout": 1, "lifespan": 600 }))
                                .send()
                                .await
                                .unwrap();
                            assert_eq!(r.status(), 201);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    // 1,000 commands of the slow tenant expire first, then 100 of the fast one: each expiry
    // owes a callback, the slow tenant's all older.
    create_many(slow, "ada", 1_000).await;
    create_many(fast.clone(), "bea", 100).await;
    let created = std::time::Instant::now();
    let fast_expired = |app: &TestApp| {
        app.receiver
            .received()
            .iter()
            .filter(|r| r.path.starts_with("/fast/") && r.event().event_type == "command.expired")
            .count()
    };
    // The bound: the fast tenant's callbacks go out as soon as they are due (1 s timeout, the
    // sweep) with slots to spare; the slow tenant holds at most its receiver's share.
    wait_until(
        Duration::from_secs(15),
        "the fast tenant's 100 callbacks arrive",
        || fast_expired(&app) >= 100,
    )
    .await;
    assert!(created.elapsed() < Duration::from_secs(15), "{:?}", created.elapsed());
}

#[tokio::test]
async fn a_receiver_failing_for_its_whole_retry_window_is_disabled_audited_and_enabled_again() {
    let app = start_hosted().await;
    let operator = AdminApi::operator(&app.base);
    let creds = operator
        .tenant_with_clients(&app, "acme", "staff", &["hook"])
        .await
        .remove(0);
    let admin_token = {
        // The tenant's admin: issue one more admin key as the operator.
        let key = operator
            .ok(reqwest::Method::POST, "/admin/tenants/acme/admin-keys", None, 201)
            .await;
        key["token"].as_str().unwrap().to_owned()
    };
    let admin = AdminApi::with_token(&app.base, &admin_token);
    let mut device = app.enrol(&creds, "ada").await;
    app.receiver.behave("/acme/hook", Duration::ZERO, 503);
    let first = approved_for(&app, &creds, &mut device, "ada").await;
    eventually(Duration::from_secs(15), "the receiver is disabled", || async {
        let (_, client) = admin.get("/admin/tenants/acme/clients/hook").await;
        client.get("callback_disabled_at").is_some()
    })
    .await;
    eventually(Duration::from_secs(10), "the event is a dead letter", || async {
        event_status(&app, &first).await.0 == "dead"
    })
    .await;
    let (_, log) = admin.get("/admin/tenants/acme/audit").await;
    assert!(
        log.to_string().contains("callback.disabled"),
        "the tenant's audit log says why: {log}"
    );

    // Re-enabled through the admin API, the receiver gets the next callback.
    app.receiver.behave_normally();
    let patched = admin
        .ok(
            reqwest::Method::PATCH,
            "/admin/tenants/acme/clients/hook",
            Some(json!({ "callback_enabled": true })),
            200,
        )
        .await;
    assert!(patched.get("callback_disabled_at").is_none(), "{patched}");
    let second = approved_for(&app, &creds, &mut device, "ada").await;
    eventually(Duration::from_secs(10), "delivered after re-enabling", || async {
        event_status(&app, &second).await.0 == "delivered"
    })
    .await;
}
