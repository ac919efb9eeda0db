//! Phishing-resistant approval over HTTP: a user's several devices, verification codes, number
//! matching, decline reasons, the animated QR code, and the text a device shows.

use crate::harness::*;
use hermod_shared::approval::{qr_frame, DeclineReason, OutcomeReason, QR_PREFIX};
use hermod_shared::enrolment::qr_svg;
use hermod_shared::wire::{ClaimAccepted, Decision, DeviceResponse, MailboxEventKind, WithdrawReason};
use hermod_shared::CommandId;
use serde_json::{json, Value};
use std::time::Duration;

fn answer(result: Decision, reason: Option<DeclineReason>, number: Option<u8>) -> DeviceResponse {
    DeviceResponse {
        result,
        reason,
        number,
        data: None,
    }
}

async fn callback_events(app: &TestApp, command_id: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM callback_events WHERE command_id = $1")
        .bind(command_id)
        .fetch_one(&app.state.db.write)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_users_three_devices_get_the_command_the_first_answer_wins_the_others_see_it_withdrawn() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let mut devices = Vec::new();
    for _ in 0..3 {
        let mut d = app.enrol(&idm, "carol").await;
        d.poll(0).await.unwrap(); // its cursor past anything older
        devices.push(d);
    }
    let created = app
        .create_ok(
            &idm,
            "authenticate",
            json!({ "user_id": "carol", "binding_message": "Log in to the bank" }),
        )
        .await;
    let id = CommandId::parse(created["id"].as_str().unwrap()).unwrap();
    for d in &mut devices {
        let page = d.poll(5).await.unwrap();
        assert_eq!(page.items.len(), 1, "every device of the user gets it: {page:?}");
        assert_eq!(page.items[0].kind, MailboxEventKind::Command);
        assert_eq!(page.items[0].command.id, id);
        assert_eq!(
            page.items[0].command.verification_code.as_deref(),
            created["verification_code"].as_str()
        );
    }

    let won = devices[1].respond(&id, Decision::Approved, None).await.unwrap();
    assert_eq!(won.status(), 200);
    let cb = app.receiver.callback_for(id.as_str()).await;
    assert_eq!(cb.event().event_type, "command.approved");
    assert_eq!(cb.event().data.answered_by.as_ref(), Some(&devices[1].state.device_id));

    for i in [0, 2] {
        let page = devices[i].poll(5).await.unwrap();
        let withdrawn = page
            .items
            .iter()
            .find(|item| item.command.id == id && item.kind == MailboxEventKind::Cancelled)
            .unwrap_or_else(|| panic!("device {i} sees it withdrawn: {page:?}"));
        assert_eq!(withdrawn.reason, Some(WithdrawReason::AnsweredElsewhere));
        let before = snapshot(&app).await;
        let late = devices[i].respond(&id, Decision::Declined, None).await.unwrap();
        assert_eq!(late.status(), 409);
        let problem: Value = late.json().await.unwrap();
        assert_eq!(problem["code"], "already_answered");
        assert_eq!(snapshot(&app).await, before, "a late answer changes nothing");
    }
    let (_, seen) = app.get(&idm, &format!("/command/{id}")).await;
    assert_eq!(seen["status"], "approved");
    assert_eq!(callback_events(&app, id.as_str()).await, 1, "exactly one callback");
    // A client's cancellation is withdrawn with its own reason.
    let cancelled = app.create_ok(&idm, "sign", json!({ "user_id": "carol" })).await;
    let (status, _) = app
        .delete(&idm, &format!("/command/{}", cancelled["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200);
    let page = devices[0].poll(5).await.unwrap();
    let last = page.items.last().unwrap();
    assert_eq!(
        (last.kind, last.reason),
        (MailboxEventKind::Cancelled, Some(WithdrawReason::CancelledByClient))
    );
}

#[tokio::test]
async fn number_matching_and_the_verification_code_reach_the_device_and_a_wrong_number_declines() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let mut device = app.enrol(&idm, "dave").await;
    device.poll(0).await.unwrap();

    let created = app
        .create_ok(
            &idm,
            "authenticate",
            json!({ "user_id": "dave", "number_matching": true, "binding_message": "Approve the login at Example" }),
        )
        .await;
    let code = created["verification_code"].as_str().unwrap().to_owned();
    assert!(code.len() == 4 && code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    let number = u8::try_from(created["number"].as_u64().unwrap()).unwrap();
    assert!((10..=99).contains(&number));
    assert!(created["qr_start_secret"].is_string());
    let (_, read) = app
        .get(&idm, &format!("/command/{}", created["id"].as_str().unwrap()))
        .await;
    assert!(read["qr_start_secret"].is_null(), "the QR secret is shown once");
    assert_eq!(read["verification_code"], code.as_str());
    assert_eq!(read["number"], number);

    let page = device.poll(5).await.unwrap();
    let command = &page.items[0].command;
    assert_eq!(command.verification_code.as_deref(), Some(code.as_str()));
    assert_eq!(command.binding_message.as_deref(), Some("Approve the login at Example"));
    let choices = command.number_choices.clone().unwrap();
    assert_eq!(choices.len(), 3);
    assert_eq!(choices.iter().filter(|&&c| c == number).count(), 1);

    // Approving without the number is refused, and changes nothing.
    let before = snapshot(&app).await;
    let r = device
        .answer(&command.id, &answer(Decision::Approved, None, None))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("number"));
    assert_eq!(snapshot(&app).await, before);

    let wrong = *choices.iter().find(|&&c| c != number).unwrap();
    let r = device
        .answer(&command.id, &answer(Decision::Approved, None, Some(wrong)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cb = app.receiver.callback_for(command.id.as_str()).await;
    verify_signature(&cb, IDM_SECRET).unwrap();
    assert_eq!(cb.event().event_type, "command.declined");
    assert_eq!(cb.event().data.reason, Some(OutcomeReason::NumberMismatch));

    // The right number approves.
    let created = app
        .create_ok(
            &idm,
            "authenticate",
            json!({ "user_id": "dave", "number_matching": true }),
        )
        .await;
    let number = u8::try_from(created["number"].as_u64().unwrap()).unwrap();
    let page = device.poll(5).await.unwrap();
    let id = page.items[0].command.id.clone();
    let r = device
        .answer(&id, &answer(Decision::Approved, None, Some(number)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cb = app.receiver.callback_for(id.as_str()).await;
    assert_eq!(cb.event().event_type, "command.approved");
    assert_eq!(cb.event().data.reason, None);
}

#[tokio::test]
async fn every_decline_reason_reaches_the_signed_callback_and_not_me_is_counted_and_audited() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let mut device = app.enrol(&idm, "erin").await;
    device.poll(0).await.unwrap();
    for (reason, name) in [
        (None, "user_declined"),
        (Some(DeclineReason::UserDeclined), "user_declined"),
        (Some(DeclineReason::NotMe), "not_me"),
        (Some(DeclineReason::WrongNumber), "wrong_number"),
        (Some(DeclineReason::DeviceError), "device_error"),
    ] {
        let created = app.create_ok(&idm, "sign", json!({ "user_id": "erin" })).await;
        let id = CommandId::parse(created["id"].as_str().unwrap()).unwrap();
        device.poll(5).await.unwrap();
        let r = device
            .answer(&id, &answer(Decision::Declined, reason, None))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        let cb = app.receiver.callback_for(id.as_str()).await;
        verify_signature(&cb, IDM_SECRET).expect("signed");
        assert_eq!(cb.event().event_type, "command.declined");
        assert_eq!(cb.event().data.reason.map(OutcomeReason::as_str), Some(name));
        let (_, read) = app.get(&idm, &format!("/command/{id}")).await;
        assert_eq!(read["reason"], name);
    }
    eventually(Duration::from_secs(10), "not_me counted", || async {
        let text = reqwest::get(format!("{}/metrics", app.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .any(|l| l.starts_with("hermod_commands_declined_not_me_total{") && l.ends_with(" 1"))
    })
    .await;
    eventually(Duration::from_secs(10), "not_me audited", || async {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'command.declined.not_me'")
            .fetch_one(&app.state.db.write)
            .await
            .unwrap();
        n == 1
    })
    .await;

    // An approval with a reason is refused, and changes nothing.
    let created = app.create_ok(&idm, "sign", json!({ "user_id": "erin" })).await;
    let id = CommandId::parse(created["id"].as_str().unwrap()).unwrap();
    device.poll(5).await.unwrap();
    let before = snapshot(&app).await;
    for bad in [
        answer(Decision::Approved, Some(DeclineReason::NotMe), None),
        answer(Decision::Approved, None, Some(42)),
    ] {
        let r = device.answer(&id, &bad).await.unwrap();
        assert_eq!(r.status(), 400, "{bad:?}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_request");
    }
    let r = device
        .signed(
            reqwest::Method::POST,
            &format!("/commands/{id}/response"),
            br#"{"result":"declined","reason":"bored"}"#.to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "an unknown reason");
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn the_qr_code_of_a_command_is_its_current_frame_until_it_ends() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let mut device = app.enrol(&idm, "frank").await;
    device.poll(0).await.unwrap();
    let created = app.create_ok(&idm, "authenticate", json!({ "user_id": "frank" })).await;
    let id = created["id"].as_str().unwrap();
    let token = created["qr_start_token"].as_str().unwrap();
    let secret = created["qr_start_secret"].as_str().unwrap();
    let qr = || async {
        let r = app
            .http
            .get(format!("{}/command/{id}/qr", app.base))
            .header("x-api-key", idm.0.token())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let (status, svg) = qr().await;
    assert_eq!(status, 200);
    let t = (0..30)
        .find(|&t| qr_svg(&qr_frame(QR_PREFIX, token, secret, t)).as_deref() == Some(svg.as_str()))
        .expect("the SVG holds one of the command's frames");
    // A second later it holds the next frame (polled with a deadline, not slept for).
    eventually(Duration::from_secs(5), "the frame changes", || async {
        let (_, later) = qr().await;
        later != svg
            && (t + 1..t + 6).any(|t| qr_svg(&qr_frame(QR_PREFIX, token, secret, t)).as_deref() == Some(later.as_str()))
    })
    .await;
    let page = device.poll(5).await.unwrap();
    device
        .respond(&page.items[0].command.id, Decision::Approved, None)
        .await
        .unwrap();
    let (status, _) = qr().await;
    assert_eq!(status, 410, "an answered command has no QR code");
}

#[tokio::test]
async fn text_for_the_device_is_bounded_and_printable_and_provision_takes_none() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let _device = app.enrol(&idm, "gina").await;
    let before = snapshot(&app).await;
    for (command_type, body) in [
        (
            "authenticate",
            json!({ "user_id": "gina", "binding_message": "pay \u{202E}001$" }),
        ),
        (
            "authenticate",
            json!({ "user_id": "gina", "binding_message": "two\nlines" }),
        ),
        ("authenticate", json!({ "user_id": "gina", "binding_message": "" })),
        (
            "authenticate",
            json!({ "user_id": "gina", "binding_message": "x".repeat(257) }),
        ),
        ("provision", json!({ "user_id": "gina", "binding_message": "hello" })),
        ("provision", json!({ "user_id": "gina", "number_matching": true })),
    ] {
        let (status, problem) = app.create(&idm, command_type, body.clone()).await;
        assert_eq!(status, 400, "{body}");
        let named = problem["detail"].as_str().unwrap_or_default();
        assert!(
            named.contains("binding_message") || named.contains("number_matching"),
            "{body}: {problem}"
        );
    }
    let (status, _) = app
        .create(
            &idm,
            "authenticate",
            json!({ "user_id": "gina", "number_matching": "yes" }),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(snapshot(&app).await, before, "nothing was created");
    let ok = app
        .create_ok(
            &idm,
            "authenticate",
            json!({ "user_id": "gina", "binding_message": "é".repeat(256) }),
        )
        .await;
    assert_eq!(ok["binding_message"].as_str().unwrap().chars().count(), 256);
}

/// The frame the client's screen shows now: the QR code it serves, matched against the
/// command's frames (what a camera would read).
async fn scanned_frame(app: &TestApp, creds: &Creds, created: &Value) -> String {
    let (id, token, secret) = (
        created["id"].as_str().unwrap(),
        created["qr_start_token"].as_str().unwrap(),
        created["qr_start_secret"].as_str().unwrap(),
    );
    let svg = app
        .http
        .get(format!("{}/command/{id}/qr", app.base))
        .header("x-api-key", creds.0.token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (0..60)
        .map(|t| qr_frame(QR_PREFIX, token, secret, t))
        .find(|f| qr_svg(f).as_deref() == Some(svg.as_str()))
        .expect("the screen shows one of the command's frames")
}

async fn refused(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status, "{code}");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], code);
}

#[tokio::test]
async fn a_command_for_nobody_is_claimed_once_by_a_device_that_scans_a_current_frame() {
    // Frames stay claimable for 30 s here, so a slow machine does not turn a fresh frame stale.
    let app = TestApp::start_with(|s| s.commands.qr_max_age = 30).await;
    let idm = Creds::idm();
    let phone = app.enrol(&idm, "hanna").await;
    let tablet = app.enrol(&idm, "ivan").await;
    let outsider = {
        // A device of another group.
        let created = app
            .create_ok(&Creds::other(), "provision", json!({ "user_id": "olga" }))
            .await;
        hermod_device::Device::enrol(created["enrolment"]["link"].as_str().unwrap(), None, None)
            .await
            .unwrap()
    };

    let created = app
        .create_ok(
            &idm,
            "authenticate",
            json!({ "binding_message": "Log in at the kiosk" }),
        )
        .await;
    assert!(
        created["user_id"].is_null() && created["device_id"].is_null(),
        "{created}"
    );
    let id = created["id"].as_str().unwrap();
    let token = created["qr_start_token"].as_str().unwrap();
    let frame = scanned_frame(&app, &idm, &created).await;

    // Refused, each with nothing changed: not a frame, a forged code, a frame of a command
    // addressed to a user, a frame of another group's command, a stale frame.
    let addressed = app.create_ok(&idm, "authenticate", json!({ "user_id": "hanna" })).await;
    let foreign_group = app.create_ok(&Creds::other(), "authenticate", json!({})).await;
    let stale = app.create_ok(&idm, "sign", json!({})).await;
    sqlx::query("UPDATE commands SET created_at = created_at - 60000 WHERE id = $1")
        .bind(stale["id"].as_str().unwrap())
        .execute(&app.state.db.write)
        .await
        .unwrap();
    let frame_of = |c: &Value, t: u64| {
        qr_frame(
            QR_PREFIX,
            c["qr_start_token"].as_str().unwrap(),
            c["qr_start_secret"].as_str().unwrap(),
            t,
        )
    };
    let before = snapshot(&app).await;
    refused(phone.claim("hello").await.unwrap(), 400, "invalid_qr_frame").await;
    let (head, _) = frame.rsplit_once('.').unwrap();
    refused(
        phone.claim(&format!("{head}.{}", "00".repeat(32))).await.unwrap(),
        400,
        "invalid_qr_frame",
    )
    .await;
    refused(
        phone.claim(&frame_of(&addressed, 0)).await.unwrap(),
        404,
        "qr_frame_unknown",
    )
    .await;
    refused(outsider.claim(&frame).await.unwrap(), 404, "qr_frame_unknown").await;
    refused(
        phone.claim(&frame_of(&foreign_group, 0)).await.unwrap(),
        404,
        "qr_frame_unknown",
    )
    .await;
    refused(phone.claim(&frame_of(&stale, 0)).await.unwrap(), 400, "qr_frame_stale").await;
    assert_eq!(snapshot(&app).await, before, "refused claims change nothing");

    // The first claim wins; the same device claiming again gets the same answer; another
    // device is refused.
    let won = phone.claim(&frame).await.unwrap();
    assert_eq!(won.status(), 200);
    let claimed: ClaimAccepted = won.json().await.unwrap();
    assert_eq!(claimed.command.id.as_str(), id);
    assert_eq!(
        claimed.command.verification_code.as_deref(),
        created["verification_code"].as_str()
    );
    assert_eq!(claimed.command.binding_message.as_deref(), Some("Log in at the kiosk"));
    let again = phone.claim(&frame).await.unwrap();
    assert_eq!(again.status(), 200);
    let current = scanned_frame(&app, &idm, &created).await;
    assert!(current.starts_with(&format!("{QR_PREFIX}.{token}.")));
    let before = snapshot(&app).await;
    refused(tablet.claim(&current).await.unwrap(), 409, "already_claimed").await;
    assert_eq!(snapshot(&app).await, before);

    // Its client sees who claimed it; the answer's callback names the device and the user.
    let (_, read) = app.get(&idm, &format!("/command/{id}")).await;
    assert_eq!(read["status"], "delivered");
    assert_eq!(read["device_id"], phone.state.device_id.as_str());
    assert_eq!(read["user_id"], "hanna");
    let r = phone
        .respond(&claimed.command.id, Decision::Approved, None)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cb = app.receiver.callback_for(id).await;
    let event = cb.event();
    assert_eq!(event.event_type, "command.approved");
    assert_eq!(event.data.device_id.as_ref(), Some(&phone.state.device_id));
    assert_eq!(event.data.user_id.as_ref().map(|u| u.as_str()), Some("hanna"));
    // Once answered, its QR code is gone and nobody claims it.
    refused(tablet.claim(&current).await.unwrap(), 409, "already_claimed").await;
}

#[tokio::test]
async fn the_demo_page_is_served_only_when_configured_and_follows_only_its_own_commands() {
    let off = TestApp::start().await;
    let r = off.http.get(format!("{}/demo", off.base)).send().await.unwrap();
    assert_eq!(r.status(), 404, "off unless demo-page-client is set");

    let app = TestApp::start_with(|s| s.demo_page_client = Some("idm".into())).await;
    let page = app.http.get(format!("{}/demo", app.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("default-src 'self'"));
    let started: Value = app
        .http
        .post(format!("{}/demo/login", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["id"].as_str().unwrap();
    assert!(
        started.get("qr_start_secret").is_none(),
        "the page never gets the QR secret"
    );
    let (_, read) = app.get(&Creds::idm(), &format!("/command/{id}")).await;
    assert_eq!(read["verification_code"], started["verification_code"]);
    assert_eq!(read["binding_message"], "Log in to the Hermod demo");
    assert!(read["user_id"].is_null(), "a login for whoever claims it");
    let svg = app
        .http
        .get(format!("{}/demo/commands/{id}/qr", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");

    // Another client's command is not the page's to follow.
    let foreign = app.create_ok(&Creds::da(), "sign", json!({})).await;
    let r = app
        .http
        .get(format!(
            "{}/demo/commands/{}",
            app.base,
            foreign["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .http
        .post(format!("{}/demo/enrol", app.base))
        .json(&json!({ "user_id": "bad\u{202E}user" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
