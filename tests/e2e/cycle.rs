//! The whole command cycle, for every built-in command type and every ending.

use crate::harness::*;
use hermod_shared::wire::{Decision, MailboxEventKind};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn every_command_type_runs_provision_enrol_answer_callback() {
    let app = TestApp::start().await;
    let idm = Creds::idm();

    // provision → enrol → the provisioning command is approved and its callback arrives.
    let provision = app
        .create_ok(
            &idm,
            "provision",
            json!({ "user_id": "alice", "payload": { "profile": "mobile-id" } }),
        )
        .await;
    assert_eq!(provision["status"], "pending");
    let enrolment = &provision["enrolment"];
    assert!(enrolment["link"].as_str().unwrap().starts_with("hermod://enrol?ms="));
    let qr_url = enrolment["qr_url"].as_str().unwrap();
    assert!(
        qr_url.starts_with(&format!("{}/command/", app.base)),
        "absolute: {qr_url}"
    );
    let qr = app
        .http
        .get(qr_url)
        .header("x-api-key", idm.0.token())
        .send()
        .await
        .unwrap();
    assert_eq!(qr.headers()["content-type"], "image/svg+xml");
    assert!(qr.text().await.unwrap().contains("<svg"));
    let mut device = hermod_device::Device::enrol(enrolment["link"].as_str().unwrap(), None, Some("phone"))
        .await
        .unwrap();
    let cb = app.receiver.callback_for(provision["id"].as_str().unwrap()).await;
    let event = cb.event();
    assert_eq!(event.event_type, "command.approved");
    assert_eq!(event.data.answered_by.as_ref(), Some(&device.state.device_id));
    assert!(
        event.data.enrolment.is_none(),
        "a used enrolment token is not repeated in the callback"
    );

    for command_type in ["authenticate", "sign", "certificate", "ping", "x-door.open"] {
        let created = app
            .create_ok(
                &idm,
                command_type,
                json!({ "user_id": "alice", "payload": { "text": format!("{command_type}?") } }),
            )
            .await;
        let id = created["id"].as_str().unwrap();
        let page = device.poll(5).await.unwrap();
        assert_eq!(page.items.len(), 1, "{command_type}: {page:?}");
        assert_eq!(page.items[0].kind, MailboxEventKind::Command);
        assert_eq!(page.items[0].command.command_type, command_type);
        assert_eq!(page.items[0].command.payload["text"], format!("{command_type}?"));
        let (_, seen) = app.get(&idm, &format!("/command/{id}")).await;
        assert_eq!(seen["status"], "delivered");

        let answer = device
            .respond(
                &page.items[0].command.id,
                Decision::Approved,
                Some(json!({ "signature": "c2ln" })),
            )
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);

        let cb = app.receiver.callback_for(id).await;
        let event = cb.event();
        assert_eq!(event.event_type, "command.approved", "{command_type}");
        assert_eq!(event.data.result, Some(json!({ "signature": "c2ln" })));
        assert_eq!(event.data.command_type, command_type);
        // Basic auth as configured, and a Standard Webhooks signature that verifies.
        let expected_auth = format!(
            "Basic {}",
            base64_encode(&format!("{}:{}", CALLBACK_AUTH.0, CALLBACK_AUTH.1))
        );
        assert_eq!(cb.header("authorization"), expected_auth);
        assert!(cb.header("webhook-id").starts_with("msg_"));
        verify_signature(&cb, IDM_SECRET).expect("callback signature verifies");
        assert!(verify_signature(&cb, "whsec_c2hvcnQgc2VjcmV0IGJ1dCBsb25nIGVub3VnaA==").is_err());

        let (status, final_view) = app.get(&idm, &format!("/command/{id}")).await;
        assert_eq!(status, 200);
        assert_eq!(final_view["status"], "approved");
        assert_eq!(final_view["answered_by"], device.state.device_id.as_str());
    }
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn a_declined_command_tells_the_client() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let mut device = app.enrol(&idm, "bob").await;
    let created = app
        .create_ok(&idm, "sign", json!({ "device_id": device.state.device_id }))
        .await;
    let page = device.poll(5).await.unwrap();
    assert_eq!(
        device
            .respond(&page.items[0].command.id, Decision::Declined, None)
            .await
            .unwrap()
            .status(),
        200
    );
    let cb = app.receiver.callback_for(created["id"].as_str().unwrap()).await;
    assert_eq!(cb.event().event_type, "command.declined");
    assert_eq!(
        app.get(&idm, &format!("/command/{}", created["id"].as_str().unwrap()))
            .await
            .1["status"],
        "declined"
    );
}

#[tokio::test]
async fn a_cancelled_command_is_seen_by_the_device_and_cannot_be_answered() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let mut device = app.enrol(&idm, "carol").await;
    let created = app.create_ok(&idm, "authenticate", json!({ "user_id": "carol" })).await;
    let id = created["id"].as_str().unwrap();
    let page = device.poll(5).await.unwrap();
    assert_eq!(page.items.len(), 1);

    let (status, cancelled) = app.delete(&idm, &format!("/command/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["status"], "cancelled");
    // Cancelling again answers the same.
    assert_eq!(
        app.delete(&idm, &format!("/command/{id}")).await,
        (200, cancelled.clone())
    );

    let page = device.poll(5).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].kind, MailboxEventKind::Cancelled);
    assert_eq!(page.items[0].command.id.as_str(), id);

    let late = device
        .respond(&page.items[0].command.id, Decision::Approved, None)
        .await
        .unwrap();
    assert_eq!(late.status(), 409);
    assert_eq!(
        late.json::<serde_json::Value>().await.unwrap()["code"],
        "command_cancelled"
    );
    assert_eq!(app.get(&idm, &format!("/command/{id}")).await.1["status"], "cancelled");

    // The client hears of it once (cancelling twice wrote one event), so it can close it.
    let cb = app.receiver.callback_for(id).await;
    assert_eq!(cb.event().event_type, "command.cancelled");
    assert_eq!(cb.event().data.status.as_str(), "cancelled");
    let (_, events) = app.get(&idm, &format!("/command/{id}/callbacks")).await;
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event_type"], "command.cancelled");
}

#[tokio::test]
async fn at_timeout_the_command_leaves_the_mailbox_and_the_client_hears_it_expired() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let mut device = app.enrol(&idm, "dave").await;
    let created = app
        .create_ok(
            &idm,
            "authenticate",
            json!({ "user_id": "dave", "timeout": 1, "lifespan": 60 }),
        )
        .await;
    let id = created["id"].as_str().unwrap();

    let cb = app.receiver.callback_for(id).await;
    assert_eq!(cb.event().event_type, "command.expired");
    assert_eq!(cb.event().data.status.as_str(), "expired");
    // Gone from the mailbox, still in history.
    assert!(device.poll(0).await.unwrap().items.is_empty());
    assert_eq!(app.get(&idm, &format!("/command/{id}")).await.1["status"], "expired");
    let late = device
        .respond(&hermod_shared::CommandId::parse(id).unwrap(), Decision::Approved, None)
        .await
        .unwrap();
    assert_eq!(late.status(), 410);
}

#[tokio::test]
async fn at_lifespan_end_the_command_is_gone_from_history() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let _device = app.enrol(&idm, "erin").await;
    let created = app
        .create_ok(&idm, "ping", json!({ "user_id": "erin", "timeout": 1, "lifespan": 2 }))
        .await;
    let id = created["id"].as_str().unwrap();
    let created_at = std::time::Instant::now();
    assert_eq!(app.get(&idm, &format!("/command/{id}")).await.0, 200);
    eventually(Duration::from_secs(10), "the command leaves history", || async {
        app.get(&idm, &format!("/command/{id}")).await.0 == 404
    })
    .await;
    assert!(
        created_at.elapsed() >= Duration::from_millis(1900),
        "gone before its 2 s lifespan ended"
    );
    let (status, body) = app.get(&idm, &format!("/command/{id}")).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "command_not_found");
}

#[tokio::test]
async fn the_same_answer_twice_is_answered_the_same_and_a_different_one_is_refused() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let mut device = app.enrol(&idm, "frank").await;
    let created = app.create_ok(&idm, "authenticate", json!({ "user_id": "frank" })).await;
    let page = device.poll(5).await.unwrap();
    let id = &page.items[0].command.id;
    let first = device
        .respond(id, Decision::Approved, Some(json!({ "n": 1 })))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let again = device
        .respond(id, Decision::Approved, Some(json!({ "n": 1 })))
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<serde_json::Value>().await.unwrap()["status"], "approved");
    let different = device.respond(id, Decision::Declined, None).await.unwrap();
    assert_eq!(different.status(), 409);
    assert_eq!(
        different.json::<serde_json::Value>().await.unwrap()["code"],
        "already_answered"
    );
    // One callback only: one event was written, and it was delivered at the first attempt.
    let command = created["id"].as_str().unwrap();
    app.receiver.callback_for(command).await;
    eventually(
        Duration::from_secs(10),
        "the callback is recorded as delivered",
        || async {
            let (_, list) = app.get(&idm, &format!("/command/{command}/callbacks")).await;
            list.as_array()
                .is_some_and(|l| !l.is_empty() && l.iter().all(|e| e["status"] == "delivered"))
        },
    )
    .await;
    let (_, list) = app.get(&idm, &format!("/command/{command}/callbacks")).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "one event written");
    let count = app
        .receiver
        .received()
        .iter()
        .filter(|r| r.event().data.id.as_str() == created["id"].as_str().unwrap())
        .count();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_command() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let _device = app.enrol(&idm, "gina").await;
    let send = |body: serde_json::Value| {
        app.http
            .post(format!("{}/command/authenticate", app.base))
            .header("x-api-key", idm.0.token())
            .header("idempotency-key", "login-42")
            .json(&body)
            .send()
    };
    let first = send(json!({ "user_id": "gina" })).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    let second = send(json!({ "user_id": "gina" })).await.unwrap();
    assert_eq!(second.status(), 201);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(second.json::<serde_json::Value>().await.unwrap()["id"], first["id"]);
    let (_, count) = (0, crate::harness::snapshot(&app).await.matches("|pending|").count());
    assert_eq!(count, 1, "one command only");
}

#[tokio::test]
async fn clients_of_one_group_share_devices_and_other_groups_do_not_see_them() {
    let app = TestApp::start().await;
    let (idm, da, other) = (Creds::idm(), Creds::da(), Creds::other());
    // Provisioned through the Identity Manager, used by the access gateway.
    let mut device = app.enrol(&idm, "hank").await;
    let created = app.create_ok(&da, "authenticate", json!({ "user_id": "hank" })).await;
    let page = device.poll(5).await.unwrap();
    device
        .respond(&page.items[0].command.id, Decision::Approved, None)
        .await
        .unwrap();
    let cb = app.receiver.callback_for(created["id"].as_str().unwrap()).await;
    assert_eq!(
        cb.path, "/da",
        "the callback goes to the creating client's own callback URL"
    );
    assert_eq!(cb.header("authorization"), "", "da has no callback basic auth");

    // Another group sees neither the device nor the user, nor the other client's commands.
    let (status, body) = app
        .create(&other, "authenticate", json!({ "device_id": device.state.device_id }))
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("device_not_found")));
    let (status, body) = app.create(&other, "authenticate", json!({ "user_id": "hank" })).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("user_has_no_device")));
    assert_eq!(
        app.get(&other, &format!("/command/devices/{}", device.state.device_id))
            .await
            .0,
        404
    );
    assert_eq!(
        app.get(&other, &format!("/command/{}", created["id"].as_str().unwrap()))
            .await
            .0,
        404
    );
    assert_eq!(
        app.get(&idm, &format!("/command/{}", created["id"].as_str().unwrap()))
            .await
            .0,
        404,
        "commands belong to their client"
    );
}

#[tokio::test]
async fn clients_can_ask_when_a_device_was_last_seen() {
    let app = TestApp::start().await;
    let (idm, da) = (Creds::idm(), Creds::da());
    let device = app.enrol(&idm, "ivy").await;
    let lifesign = device.lifesign().await.unwrap();
    assert!(lifesign["server_time"].as_i64().unwrap() > 0);
    let (status, view) = app
        .get(&da, &format!("/command/devices/{}", device.state.device_id))
        .await;
    assert_eq!(status, 200);
    assert_eq!(view["user_id"], "ivy");
    assert!(view["last_seen_at"].as_str().unwrap().ends_with('Z'));
    let (status, list) = app.get(&da, "/command/users/ivy/devices").await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_seeds_paths_under_hermod_rest_work_for_clients_and_devices() {
    let app = TestApp::start_with(|_| {}).await;
    let idm = Creds::idm();
    let r = app
        .http
        .post(format!("{}/hermod/rest/command/provision", app.base))
        .header("authorization", format!("Basic {}", idm.0.token()))
        .json(&json!({ "user_id": "jack" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let provision: serde_json::Value = r.json().await.unwrap();
    let token = provision["enrolment"]["token"].as_str().unwrap();
    let ms = format!("{}/hermod/rest/ms", app.base);
    let mut device = hermod_device::Device::enrol(token, Some(&ms), None).await.unwrap();
    let created = app.create_ok(&idm, "authenticate", json!({ "user_id": "jack" })).await;
    let page = device.poll(5).await.unwrap();
    assert_eq!(
        device
            .respond(&page.items[0].command.id, Decision::Approved, None)
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, view) = app
        .get(
            &idm,
            &format!("/hermod/rest/command/{}", created["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!((status, view["status"].as_str()), (200, Some("approved")));
}

#[tokio::test]
async fn a_client_long_poll_returns_when_the_status_changes() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let mut device = app.enrol(&idm, "kim").await;
    let created = app.create_ok(&idm, "authenticate", json!({ "user_id": "kim" })).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let waiter = {
        let (http, base, token, id) = (app.http.clone(), app.base.clone(), idm.0.token(), id.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let r = http
                .get(format!("{base}/command/{id}?wait=20"))
                .header("x-api-key", token)
                .send()
                .await
                .unwrap();
            (started.elapsed(), r.json::<serde_json::Value>().await.unwrap())
        })
    };
    wait_until(Duration::from_secs(10), "the waiter reaches the server", || {
        app.state.wakeups.waiting() >= 1
    })
    .await;
    let page = device.poll(5).await.unwrap(); // pending → delivered wakes the waiter
    let (elapsed, view) = waiter.await.unwrap();
    assert_eq!(view["status"], "delivered");
    assert!(
        elapsed < Duration::from_secs(5),
        "woken by the change, not by the 20 s wait"
    );
    device
        .respond(&page.items[0].command.id, Decision::Approved, None)
        .await
        .unwrap();
    let (_, view) = app.get(&idm, &format!("/command/{id}?wait=20")).await;
    assert_eq!(view["status"], "approved", "a final command answers at once");
}

/// Enrolments (a transaction that reads, then writes) while commands are created and answered
/// at the same time: every one succeeds, none is refused because another writer went first.
#[tokio::test]
async fn enrolments_and_commands_at_once_all_succeed() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let mut device = app.enrol(&idm, "busy").await;
    let app = &app;
    let enrolments = futures::future::join_all((0..20).map(|i| {
        let idm = idm.clone();
        async move { app.enrol(&idm, &format!("new-{i}")).await }
    }));
    let traffic = async {
        for _ in 0..20 {
            app.create_ok(&idm, "ping", json!({ "user_id": "busy" })).await;
            for item in device.poll(0).await.unwrap().items {
                let r = device
                    .respond(&item.command.id, Decision::Approved, None)
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }
    };
    let (enrolled, ()) = tokio::join!(enrolments, traffic);
    assert_eq!(enrolled.len(), 20);
}

#[tokio::test]
async fn the_qr_url_keeps_the_prefix_of_the_public_url() {
    let app = TestApp::start_with(|s| s.public_url = Some("https://msg.example.com/hermod/rest/ms".into())).await;
    let provision = app
        .create_ok(&Creds::idm(), "provision", json!({ "user_id": "pia" }))
        .await;
    let id = provision["id"].as_str().unwrap();
    assert_eq!(
        provision["enrolment"]["qr_url"],
        format!("https://msg.example.com/hermod/rest/command/{id}/qr")
    );
    // And the same path answers on this server under its prefix.
    let (status, _) = app.get(&Creds::idm(), &format!("/hermod/rest/command/{id}")).await;
    assert_eq!(status, 200);
}
