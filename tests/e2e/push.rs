//! Waking devices by Web Push, against a real push service: the npm package `web-push-testing`
//! (it checks the VAPID signature against the subscription's key and decrypts each push as a
//! browser would), started here on a free 127.0.0.1 port.

use crate::harness::*;
use hermod::config::Secret;
use hermod_device::push::Subscription;
use hermod_shared::wire::Decision;
use serde_json::{json, Value};
use std::time::Duration;

/// `web-push-testing`, stopped when dropped.
struct PushService {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for PushService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PushService {
    async fn start() -> Self {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let server = repo.join("node_modules/web-push-testing/src/bin/server.js");
        assert!(
            server.exists(),
            "run `npm ci` in the repository root: {} is missing",
            server.display()
        );
        let port = hermod::tools::bench::edge::free_port().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new("node")
            .arg(&server)
            .arg(port.to_string())
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("node runs web-push-testing");
        let base = format!("http://127.0.0.1:{port}");
        let service = Self { child, base, _dir: dir };
        let http = reqwest::Client::new();
        eventually(Duration::from_secs(20), "web-push-testing answers", || async {
            http.post(format!("{}/status", service.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        service
    }
}

async fn pushes_after(sub: &Subscription, seen: usize) -> Vec<String> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let received = sub.received(&http).await.unwrap();
        if received.len() > seen {
            return received;
        }
        assert!(tokio::time::Instant::now() < deadline, "no push within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn push_app() -> TestApp {
    let (private, _) = hermod::engine::push::generate_vapid_keys();
    TestApp::start_with(|s| {
        s.push.webpush.vapid_private_key = Some(Secret::new(private));
        s.push.webpush.subject = "mailto:ops@example.com".into();
        // web-push-testing names itself `localhost` in its endpoints.
        s.egress.allow.push("localhost".into());
    })
    .await
}

#[tokio::test]
async fn a_command_wakes_a_subscribed_device_by_web_push_with_a_wake_hint_only() {
    let service = PushService::start().await;
    let app = push_app().await;
    let idm = Creds::idm();
    let mut device = app.enrol(&idm, "paula").await;
    device.poll(0).await.unwrap();

    let offered = device.push_status().await.unwrap();
    let vapid = offered.webpush_vapid_public_key.expect("the server offers Web Push");
    assert!(offered.registration.is_none());
    let http = reqwest::Client::new();
    let sub = Subscription::create(&http, &service.base, &vapid).await.unwrap();
    let r = device.register_push(&sub).await.unwrap();
    assert_eq!(r.status(), 200);
    let status = device.push_status().await.unwrap();
    assert_eq!(status.registration.unwrap().endpoint, sub.endpoint);
    // Its client sees that the device is woken by Web Push (and nothing of the subscription).
    let (_, listed) = app.get(&idm, "/command/users/paula/devices").await;
    assert_eq!(listed[0]["push"], "webpush");
    assert!(!listed.to_string().contains(&sub.endpoint));
    let (_, one) = app
        .get(&idm, &format!("/command/devices/{}", device.state.device_id))
        .await;
    assert_eq!(one["push"], "webpush");

    // A command with text, a payload and a number: none of it may reach the push service.
    let created = app
        .create_ok(
            &idm,
            "sign",
            json!({ "user_id": "paula", "binding_message": "Sign contract 7731", "number_matching": true,
                    "payload": { "document": "contract-7731.pdf" } }),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let pushes = pushes_after(&sub, 0).await;
    assert_eq!(
        pushes,
        vec![r#"{"hermod":"wake"}"#.to_owned()],
        "the push says wake up, and nothing else"
    );
    for push in &pushes {
        for secret in [
            id,
            "paula",
            "sign",
            "7731",
            "contract",
            "idm",
            created["verification_code"].as_str().unwrap(),
        ] {
            assert!(!push.contains(secret), "{secret:?} in a push: {push}");
        }
    }
    // Woken, the device fetches the command through its signed poll and answers it.
    let page = device.poll(0).await.unwrap();
    let command = &page.items[0].command;
    assert_eq!(command.id.as_str(), id);
    let number = u8::try_from(created["number"].as_u64().unwrap()).unwrap();
    let r = device
        .answer(
            &command.id,
            &hermod_shared::wire::DeviceResponse {
                result: Decision::Approved,
                reason: None,
                number: Some(number),
                data: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.receiver.callback_for(id).await.event().event_type,
        "command.approved"
    );
    assert_eq!(metric(&app.base, "hermod_push_sent_total").await, 1);

    // A device long-polling here is not pushed to: its long-poll brings the command.
    let poller = {
        let mut d = hermod_device::Device::from_state(device.state.clone()).unwrap();
        tokio::spawn(async move { d.poll(30).await.unwrap() })
    };
    let long_polls = app.state.long_polls.clone();
    wait_until(Duration::from_secs(5), "the device long-polls", || {
        long_polls.holds(device.state.device_id.as_str())
    })
    .await;
    app.create_ok(&idm, "ping", json!({ "user_id": "paula" })).await;
    let page = tokio::time::timeout(Duration::from_secs(5), poller)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.items.len(), 1);
    eventually(Duration::from_secs(5), "the wake is skipped", || async {
        metric(&app.base, "hermod_push_skipped_total").await == 1
    })
    .await;
    assert_eq!(sub.received(&http).await.unwrap().len(), 1, "no second push");

    // An expired subscription answers 410: the registration is removed.
    sub.expire(&http).await.unwrap();
    device.poll(0).await.unwrap();
    app.create_ok(&idm, "ping", json!({ "user_id": "paula" })).await;
    eventually(Duration::from_secs(10), "the dead registration is removed", || async {
        metric(&app.base, "hermod_push_registrations_removed_total").await == 1
    })
    .await;
    assert!(device.push_status().await.unwrap().registration.is_none());
}

#[tokio::test]
async fn bad_push_registrations_are_refused_and_change_nothing() {
    let app = push_app().await;
    let idm = Creds::idm();
    let device = app.enrol(&idm, "quinn").await;
    let good_key = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    let good_auth = "BTBZMqHH6r4Tts7J_aSIgg";
    for body in [
        json!({ "transport": "webpush", "endpoint": "ftp://127.0.0.1/x", "keys": { "p256dh": good_key, "auth": good_auth } }),
        json!({ "transport": "webpush", "endpoint": "http://127.0.0.1/x", "keys": { "p256dh": good_auth, "auth": good_auth } }),
        json!({ "transport": "webpush", "endpoint": "http://127.0.0.1/x", "keys": { "p256dh": good_key, "auth": "AAAA" } }),
        json!({ "transport": "carrier-pigeon", "endpoint": "http://127.0.0.1/x", "keys": { "p256dh": good_key, "auth": good_auth } }),
        json!({ "transport": "webpush", "endpoint": "http://127.0.0.1/x" }),
    ] {
        let r = device
            .signed(reqwest::Method::PUT, "/push", serde_json::to_vec(&body).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let problem: Value = r.json().await.unwrap();
        assert!(
            problem["code"] == "invalid_request" || problem["code"] == "malformed_json",
            "{problem}"
        );
    }
    assert!(
        device.push_status().await.unwrap().registration.is_none(),
        "nothing registered"
    );

    // A server without a VAPID key offers no Web Push and refuses registrations.
    let plain = TestApp::start().await;
    let device = plain.enrol(&idm, "quinn").await;
    assert!(device.push_status().await.unwrap().webpush_vapid_public_key.is_none());
    let body = json!({ "transport": "webpush", "endpoint": "http://127.0.0.1/x", "keys": { "p256dh": good_key, "auth": good_auth } });
    let r = device
        .signed(reqwest::Method::PUT, "/push", serde_json::to_vec(&body).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn the_simulator_subscribes_sleeps_until_a_push_wakes_it_then_answers() {
    let service = PushService::start().await;
    let app = push_app().await;
    let idm = Creds::idm();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("device.json");
    let hermod = env!("CARGO_BIN_EXE_hermod");
    let provision = app.create_ok(&idm, "provision", json!({ "user_id": "rita" })).await;
    // Run without blocking: this test's runtime also serves Hermod.
    let run = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(hermod).args(&args).output().await.unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let state_arg = state.to_str().unwrap();
    let link = provision["enrolment"]["link"].as_str().unwrap();
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    run(args(&["device", "enrol", "--link", link, "--state", state_arg])).await;
    let out = run(args(&[
        "device",
        "push-subscribe",
        "--service",
        &service.base,
        "--state",
        state_arg,
    ]))
    .await;
    assert!(out.contains("subscribed at"), "{out}");

    let mut sleeper = tokio::process::Command::new(hermod)
        .args(["device", "run", "--push", "--once", "--state", state_arg])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Once it sleeps (its mailbox read once, empty), a command wakes it through the push service.
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(sleeper.stdout.take().unwrap()));
    let mut out = String::new();
    let asleep = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push_str(&line);
            out.push('\n');
            if line == "waiting for a push" {
                return;
            }
        }
        panic!("the simulator ended: {out}");
    });
    asleep.await.expect("the simulator goes to sleep");
    let created = app.create_ok(&idm, "authenticate", json!({ "user_id": "rita" })).await;
    let id = created["id"].as_str().unwrap();
    let cb = app.receiver.callback_for(id).await;
    assert_eq!(cb.event().event_type, "command.approved");
    let done = tokio::time::timeout(Duration::from_secs(10), sleeper.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(done.success());
    while let Some(line) = lines.next_line().await.unwrap() {
        out.push_str(&line);
        out.push('\n');
    }
    assert!(out.contains(r#"woken by push: {"hermod":"wake"}"#), "{out}");
    assert!(out.contains(&format!("answered {id}")), "{out}");
}
