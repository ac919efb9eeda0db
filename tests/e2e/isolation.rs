//! No tenant, and no group within a tenant, ever sees another's commands, devices or callbacks.
//! A victim client in tenant `acme` sets up a device, commands in every state and callbacks;
//! then an intruder from another tenant and one from another group of the same tenant try every
//! client and device endpoint with the victim's ids. Every attempt is 403 or 404 (or an empty
//! list), never the victim's data, and the victim's data is unchanged afterwards.

use crate::harness::*;
use hermod_device::Device;
use hermod_shared::wire::Decision;
use reqwest::Method;
use serde_json::{json, Value};

struct Victim {
    creds: Creds,
    device: Device,
    /// Ids that must never show up in an intruder's answers.
    secrets: Vec<String>,
    open_command: String,
    answered_command: String,
    provision: String,
    callback_event: String,
}

async fn victim(app: &TestApp, operator: &AdminApi) -> Victim {
    let acme = operator.create_tenant("acme", json!({})).await;
    acme.create_group("acme", "mobile-id").await;
    acme.create_group("acme", "branch").await;
    let url = app.receiver.url.replace("/ws/hermod", "/acme/idm");
    acme.create_client("acme", "idm", "mobile-id", Some(&url)).await;
    acme.create_client("acme", "branch", "branch", None).await;
    let (_, creds) = acme.issue_key("acme", "idm").await;
    let mut device = app.enrol(&creds, "alice").await;
    let answered = app
        .create_ok(&creds, "authenticate", json!({ "user_id": "alice" }))
        .await;
    let answered_id = answered["id"].as_str().unwrap().to_owned();
    device.poll(0).await.unwrap();
    let r = device
        .respond(
            &hermod_shared::CommandId::parse(&answered_id).unwrap(),
            Decision::Approved,
            None,
        )
        .await
        .unwrap();
    assert!(r.status().is_success());
    let open = app
        .create_ok(
            &creds,
            "sign",
            json!({ "device_id": device.state.device_id, "payload": { "digest": "victim-digest" } }),
        )
        .await;
    let provision = app
        .create_ok(&creds, "provision", json!({ "user_id": "alice-2" }))
        .await;
    let keyed: Value = ping_with_shared_key(app, &creds).await.json().await.unwrap();
    let callback = app.receiver.callback_for(&answered_id).await;
    Victim {
        secrets: vec![
            keyed["id"].as_str().unwrap().to_owned(),
            answered_id.clone(),
            open["id"].as_str().unwrap().to_owned(),
            provision["id"].as_str().unwrap().to_owned(),
            device.state.device_id.to_string(),
            callback.header("webhook-id").to_owned(),
            "victim-digest".to_owned(),
        ],
        creds,
        device,
        open_command: open["id"].as_str().unwrap().to_owned(),
        answered_command: answered_id,
        provision: provision["id"].as_str().unwrap().to_owned(),
        callback_event: callback.header("webhook-id").to_owned(),
    }
}

/// A ping to alice with the `Idempotency-Key` every client here uses.
async fn ping_with_shared_key(app: &TestApp, creds: &Creds) -> reqwest::Response {
    app.http
        .post(format!("{}/command/ping", app.base))
        .header("x-api-key", creds.0.token())
        .header("idempotency-key", "shared-key")
        .json(&json!({ "user_id": "alice" }))
        .send()
        .await
        .unwrap()
}

/// Every client endpoint, called by `intruder` with the victim's ids.
async fn client_attempts(app: &TestApp, intruder: &Creds, v: &Victim) -> Vec<(String, u16, String)> {
    let device = v.device.state.device_id.to_string();
    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/command/{}", v.open_command), None),
        (Method::GET, format!("/command/{}?wait=1", v.open_command), None),
        (Method::GET, format!("/command/{}", v.answered_command), None),
        (
            Method::GET,
            format!("/hermod/rest/command/{}", v.answered_command),
            None,
        ),
        (Method::DELETE, format!("/command/{}", v.open_command), None),
        (Method::GET, format!("/command/{}/qr", v.provision), None),
        (Method::GET, format!("/command/devices/{device}"), None),
        (Method::DELETE, format!("/command/devices/{device}"), None),
        (Method::GET, "/command/users/alice/devices".to_owned(), None),
        (
            Method::POST,
            "/command/authenticate".to_owned(),
            Some(json!({ "device_id": device })),
        ),
        (
            Method::POST,
            "/command/sign".to_owned(),
            Some(json!({ "user_id": "alice" })),
        ),
        (Method::GET, format!("/command/{}/callbacks", v.answered_command), None),
        (Method::GET, "/command/callbacks".to_owned(), None),
        (
            Method::POST,
            format!("/command/callbacks/{}/redeliver", v.callback_event),
            None,
        ),
        (
            Method::POST,
            "/command/callbacks/recover".to_owned(),
            Some(json!({ "since": "2000-01-01T00:00:00Z" })),
        ),
    ];
    let mut answers = Vec::new();
    for (method, path, body) in attempts {
        let mut request = app
            .http
            .request(method.clone(), format!("{}{path}", app.base))
            .header("x-api-key", intruder.0.token());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.unwrap();
        answers.push((format!("{method} {path}"), r.status().as_u16(), r.text().await.unwrap()));
    }
    answers
}

/// Each attempt was refused with 403 or 404; only listings may answer 200, with the intruder's
/// own data. No answer holds any of the victim's ids or payloads.
fn assert_refused(who: &str, answers: &[(String, u16, String)], v: &Victim) {
    for (what, status, body) in answers {
        let listing = what.ends_with("/devices") || what.ends_with("/command/callbacks") || what.ends_with("/recover");
        match status {
            403 | 404 => {}
            200 if listing => {}
            202 if what.ends_with("/recover") => {
                let json: Value = serde_json::from_str(body).unwrap();
                assert_eq!(json["requeued"], 0, "{who}: {what} requeued another's callbacks");
            }
            _ => panic!("{who}: {what} answered {status}: {body}"),
        }
        for secret in &v.secrets {
            assert!(!body.contains(secret.as_str()), "{who}: {what} leaked {secret}: {body}");
        }
    }
}

#[tokio::test]
async fn another_tenant_and_another_group_see_nothing_of_a_clients_commands_devices_or_callbacks() {
    let app = start_hosted().await;
    let operator = AdminApi::operator(&app.base);
    let mut v = victim(&app, &operator).await;
    // Another tenant with the same group, client and user names; another group of acme.
    let globex = operator
        .tenant_with_clients(&app, "globex", "mobile-id", &["idm"])
        .await
        .remove(0);
    let acme_admin = {
        let issued = operator
            .ok(Method::POST, "/admin/tenants/acme/admin-keys", None, 201)
            .await;
        AdminApi::with_token(&app.base, issued["token"].as_str().unwrap())
    };
    let (_, branch) = acme_admin.issue_key("acme", "branch").await;
    let intruders = [
        ("another tenant", globex),
        ("another group", branch),
        ("a config-file client", Creds::other()),
    ];
    let before = snapshot(&app).await;
    let victim_view = app.get(&v.creds, &format!("/command/{}", v.open_command)).await;
    for (who, creds) in &intruders {
        let answers = client_attempts(&app, creds, &v).await;
        assert_refused(who, &answers, &v);
    }
    // Each intruder gets a device of its own for a user of the same name.
    let mut intruder_devices = Vec::new();
    for (who, creds) in &intruders {
        intruder_devices.push(app.enrol(creds, "alice").await);
        // The same Idempotency-Key as the victim's gets the intruder its own command.
        let r = ping_with_shared_key(&app, creds).await;
        assert_eq!(r.status(), 201, "{who}");
        let mine: Value = r.json().await.unwrap();
        assert!(!v.secrets.contains(&mine["id"].as_str().unwrap_or("").to_owned()));
    }

    // Devices of the intruders: their mailboxes hold only their own commands, and they cannot
    // answer, cancel or read the victim's.
    for ((who, _), device) in intruders.iter().zip(intruder_devices.iter_mut()) {
        let page = device.poll(0).await.unwrap();
        let text = serde_json::to_string(&page).unwrap();
        for secret in &v.secrets {
            assert!(!text.contains(secret.as_str()), "{who}'s device saw {secret}");
        }
        for command in [&v.open_command, &v.answered_command, &v.provision] {
            let r = device
                .respond(
                    &hermod_shared::CommandId::parse(command).unwrap(),
                    Decision::Approved,
                    Some(json!({ "signature": "forged" })),
                )
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert!(
                matches!(status, 403 | 404),
                "{who}'s device answered {command}: {status} {body}"
            );
        }
    }

    // The victim's data did not move: same commands, devices, mailboxes, callbacks (besides
    // the intruders' own pings).
    let after = snapshot(&app).await;
    let victim_lines = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| v.secrets.iter().any(|id| l.contains(id.as_str())))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(victim_lines(&after), victim_lines(&before));
    assert_eq!(
        app.get(&v.creds, &format!("/command/{}", v.open_command)).await,
        victim_view
    );
    // And the victim's own device still gets the open command.
    let page = v.device.poll(0).await.unwrap();
    assert!(page.items.iter().any(|i| i.command.id.as_str() == v.open_command));
}
