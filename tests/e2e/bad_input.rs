//! Every kind of bad input named in DESIGN.md gets a clear 4xx problem+json naming what is
//! wrong, and changes nothing: not the commands, devices, mailboxes or callback outbox.

use crate::harness::*;
use hermod_device::Device;
use hermod_shared::signing::{self, DeviceSecret};
use hermod_shared::wire::Decision;
use serde_json::json;

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// How a signed device request is spoiled.
#[derive(Clone, Copy)]
enum Spoil {
    None,
    Signature,
    Timestamp(i64),
    /// The right time, signed, but sent with a prefix (`+`, `000`): a second spelling.
    TimestampSpelling(&'static str),
    MissingHeaders,
    UnknownDevice,
}

/// A device request signed by hand, so that each part can be spoiled.
fn signed(
    app: &TestApp,
    device: &Device,
    method: reqwest::Method,
    suffix: &str,
    body: &[u8],
    spoil: Spoil,
) -> reqwest::RequestBuilder {
    let path = format!("/ms{suffix}");
    let secret = DeviceSecret::from_base64(&device.state.device_secret).unwrap();
    let ts = now_s() + if let Spoil::Timestamp(off) = spoil { off } else { 0 };
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let mut h = signing::sign(
        &secret,
        &device.state.device_id,
        method.as_str(),
        &path,
        ts,
        &nonce,
        body,
    );
    if let Spoil::Signature = spoil {
        h = signing::sign(
            &secret,
            &device.state.device_id,
            method.as_str(),
            &path,
            ts,
            &nonce,
            b"another body",
        );
    }
    let device_id = match spoil {
        Spoil::UnknownDevice => hermod_shared::DeviceId::from_random([7; 16]).to_string(),
        _ => h.device.to_string(),
    };
    let mut r = app
        .http
        .request(method, format!("{}{path}", app.base))
        .body(body.to_vec())
        .header("content-type", "application/json");
    if !matches!(spoil, Spoil::MissingHeaders) {
        r = r
            .header(signing::HEADER_DEVICE, device_id)
            .header(
                signing::HEADER_TIMESTAMP,
                match spoil {
                    Spoil::TimestampSpelling(prefix) => format!("{prefix}{}", h.timestamp),
                    _ => h.timestamp.to_string(),
                },
            )
            .header(signing::HEADER_NONCE, h.nonce)
            .header(signing::HEADER_SIGNATURE, h.signature);
    }
    r
}

fn response_body(decision: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "result": decision })).unwrap()
}

#[tokio::test]
async fn bad_input_is_refused_with_a_problem_and_changes_nothing() {
    let app = TestApp::start().await;
    let (idm, other) = (Creds::idm(), Creds::other());

    // The scene: alice's and bob's devices in idm's group, olga's in another group; an open,
    // an answered, a cancelled and an expired command; a used enrolment token.
    let provision = app.create_ok(&idm, "provision", json!({ "user_id": "alice" })).await;
    let used_token = provision["enrolment"]["token"].as_str().unwrap().to_owned();
    let mut alice = Device::enrol(&used_token, Some(&app.ms_url()), None).await.unwrap();
    let bob = app.enrol(&idm, "bob").await;
    let olga = app.enrol(&other, "olga").await;
    let open = app.create_ok(&idm, "authenticate", json!({ "user_id": "alice" })).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let for_bob = app.create_ok(&idm, "authenticate", json!({ "user_id": "bob" })).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let answered = app
        .create_ok(&idm, "sign", json!({ "device_id": alice.state.device_id }))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancelled = app.create_ok(&idm, "ping", json!({ "user_id": "alice" })).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let expired = app
        .create_ok(
            &idm,
            "ping",
            json!({ "user_id": "alice", "timeout": 1, "lifespan": 600 }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let keyed = app
        .http
        .post(format!("{}/command/ping", app.base))
        .header("x-api-key", idm.0.token())
        .header("idempotency-key", "k1")
        .json(&json!({ "user_id": "alice" }))
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 201);
    alice.poll(0).await.unwrap();
    let answered_cmd = hermod_shared::CommandId::parse(&answered).unwrap();
    assert_eq!(
        alice
            .respond(&answered_cmd, Decision::Approved, None)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(app.delete(&idm, &format!("/command/{cancelled}")).await.0, 200);
    app.receiver.callback_for(&expired).await;
    // A request whose exact bytes will be replayed.
    let replayable = signed(&app, &alice, reqwest::Method::POST, "/lifesign", b"", Spoil::None);
    let replay = replayable.try_clone().unwrap();
    assert_eq!(replayable.send().await.unwrap().status(), 200);

    let create = |ty: &str, creds: Option<&Creds>, content_type: &str, body: Vec<u8>| {
        let mut r = app
            .http
            .post(format!("{}/command/{ty}", app.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(c) = creds {
            r = r.header("x-api-key", c.0.token());
        }
        r
    };
    let json_body = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    let bad_key = Creds(hermod_shared::credential::ClientCredential {
        client_id: "idm".into(),
        key: "0".repeat(64),
    });
    let nobody = Creds(hermod_shared::credential::ClientCredential {
        client_id: "nobody".into(),
        key: IDM_KEY.into(),
    });
    let alice_user = json_body(json!({ "user_id": "alice" }));
    let get = |path: &str| {
        app.http
            .get(format!("{}{path}", app.base))
            .header("x-api-key", idm.0.token())
    };
    let delete = |path: &str| {
        app.http
            .delete(format!("{}{path}", app.base))
            .header("x-api-key", idm.0.token())
    };
    let respond = |device: &Device, id: &str, body: Vec<u8>, spoil: Spoil| {
        signed(
            &app,
            device,
            reqwest::Method::POST,
            &format!("/commands/{id}/response"),
            &body,
            spoil,
        )
    };
    let enrol = |body: Vec<u8>| {
        app.http
            .post(format!("{}/ms/enrol", app.base))
            .header("content-type", "application/json")
            .body(body)
    };

    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "malformed JSON",
            create(
                "authenticate",
                Some(&idm),
                "application/json",
                b"{\"user_id\":".to_vec(),
            ),
            400,
            "malformed_json",
        ),
        (
            "misspelt field",
            create(
                "authenticate",
                Some(&idm),
                "application/json",
                json_body(json!({ "userId": "alice" })),
            ),
            400,
            "malformed_json",
        ),
        (
            "not JSON",
            create("authenticate", Some(&idm), "text/plain", alice_user.clone()),
            415,
            "unsupported_media_type",
        ),
        (
            "unknown command type",
            create("authenticat", Some(&idm), "application/json", alice_user.clone()),
            400,
            "unknown_command_type",
        ),
        (
            "oversized body",
            create(
                "authenticate",
                Some(&idm),
                "application/json",
                json_body(json!({ "user_id": "alice", "payload": { "x": "a".repeat(70_000) } })),
            ),
            413,
            "body_too_large",
        ),
        (
            "no credentials",
            create("authenticate", None, "application/json", alice_user.clone()),
            401,
            "invalid_credentials",
        ),
        (
            "wrong key",
            create("authenticate", Some(&bad_key), "application/json", alice_user.clone()),
            401,
            "invalid_credentials",
        ),
        (
            "unknown client",
            create("authenticate", Some(&nobody), "application/json", alice_user.clone()),
            401,
            "invalid_credentials",
        ),
        (
            "garbage api key",
            app.http
                .post(format!("{}/command/ping", app.base))
                .header("x-api-key", "%%%")
                .json(&json!({ "user_id": "alice" })),
            401,
            "invalid_credentials",
        ),
        (
            "user id with a bidi override",
            create(
                "authenticate",
                Some(&idm),
                "application/json",
                json_body(json!({ "user_id": "admin\u{202E}nimda" })),
            ),
            400,
            "malformed_json",
        ),
        (
            "user id with a zero-width space",
            create(
                "provision",
                Some(&idm),
                "application/json",
                json_body(json!({ "user_id": "al\u{200B}ice" })),
            ),
            400,
            "malformed_json",
        ),
        (
            "enrolment link meant to live 30 days",
            create(
                "provision",
                Some(&idm),
                "application/json",
                json_body(json!({ "user_id": "carol", "timeout": 2_592_000 - 1, "lifespan": 2_592_000 })),
            ),
            400,
            "invalid_lifetimes",
        ),
        (
            "callbacks since a time that is year 10000 in UTC",
            get("/command/callbacks?since=9999-12-31T23:59:59-23:59"),
            400,
            "invalid_request",
        ),
        (
            "timeout equal to lifespan",
            create(
                "authenticate",
                Some(&idm),
                "application/json",
                json_body(json!({ "user_id": "alice", "timeout": 60, "lifespan": 60 })),
            ),
            400,
            "invalid_lifetimes",
        ),
        (
            "timeout above lifespan",
            create(
                "authenticate",
                Some(&idm),
                "application/json",
                json_body(json!({ "user_id": "alice", "timeout": 90, "lifespan": 60 })),
            ),
            400,
            "invalid_lifetimes",
        ),
        (
            "zero timeout",
            create(
                "authenticate",
                Some(&idm),
                "application/json",
                json_body(json!({ "user_id": "alice", "timeout": 0 })),
            ),
            400,
            "invalid_lifetimes",
        ),
        (
            "device outside the client's group",
            create(
                "authenticate",
                Some(&idm),
                "application/json",
                json_body(json!({ "device_id": olga.state.device_id })),
            ),
            404,
            "device_not_found",
        ),
        (
            "user without a device",
            create(
                "authenticate",
                Some(&idm),
                "application/json",
                json_body(json!({ "user_id": "nobody-here" })),
            ),
            404,
            "user_has_no_device",
        ),
        (
            "device and user",
            create(
                "authenticate",
                Some(&idm),
                "application/json",
                json_body(json!({ "user_id": "alice", "device_id": alice.state.device_id })),
            ),
            400,
            "invalid_request",
        ),
        (
            "a provision for nobody (a command for nobody is claimed by QR; a provision enrols a user's device)",
            create("provision", Some(&idm), "application/json", json_body(json!({}))),
            400,
            "invalid_request",
        ),
        (
            "payload not an object",
            create(
                "authenticate",
                Some(&idm),
                "application/json",
                json_body(json!({ "user_id": "alice", "payload": [1] })),
            ),
            400,
            "invalid_request",
        ),
        (
            "provision for a device",
            create(
                "provision",
                Some(&idm),
                "application/json",
                json_body(json!({ "device_id": alice.state.device_id })),
            ),
            400,
            "invalid_request",
        ),
        (
            "idempotency key reused",
            create(
                "ping",
                Some(&idm),
                "application/json",
                json_body(json!({ "user_id": "bob" })),
            )
            .header("idempotency-key", "k1"),
            422,
            "idempotency_conflict",
        ),
        (
            "wait too long",
            get(&format!("/command/{open}?wait=61")),
            400,
            "invalid_request",
        ),
        (
            "unknown query parameter",
            get(&format!("/command/{open}?wiat=5")),
            400,
            "invalid_request",
        ),
        (
            "unknown command",
            get(&format!("/command/{}", hermod_shared::CommandId::from_random([1; 16]))),
            404,
            "command_not_found",
        ),
        (
            "another client's command",
            app.http
                .get(format!("{}/command/{open}", app.base))
                .header("x-api-key", Creds::da().0.token()),
            404,
            "command_not_found",
        ),
        (
            "cancel an answered command",
            delete(&format!("/command/{answered}")),
            409,
            "already_answered",
        ),
        (
            "cancel an expired command",
            delete(&format!("/command/{expired}")),
            410,
            "command_expired",
        ),
        (
            "signature that does not verify",
            respond(&alice, &open, response_body("approved"), Spoil::Signature),
            401,
            "invalid_signature",
        ),
        (
            "stale timestamp",
            respond(&alice, &open, response_body("approved"), Spoil::Timestamp(-360)),
            401,
            "stale_request",
        ),
        (
            // A minute past the 300 s window: the requests are signed when the table is built
            // and sent one by one afterwards, seconds later on a busy machine.
            "future timestamp",
            respond(&alice, &open, response_body("approved"), Spoil::Timestamp(360)),
            401,
            "stale_request",
        ),
        (
            "timestamp with a sign",
            respond(&alice, &open, response_body("approved"), Spoil::TimestampSpelling("+")),
            401,
            "invalid_signature",
        ),
        (
            "timestamp with leading zeros",
            respond(
                &alice,
                &open,
                response_body("approved"),
                Spoil::TimestampSpelling("000"),
            ),
            401,
            "invalid_signature",
        ),
        (
            "no signature headers",
            respond(&alice, &open, response_body("approved"), Spoil::MissingHeaders),
            401,
            "invalid_signature",
        ),
        (
            "unknown device",
            respond(&alice, &open, response_body("approved"), Spoil::UnknownDevice),
            401,
            "invalid_signature",
        ),
        ("replayed nonce", replay, 401, "replayed_request"),
        (
            "answer to an expired command",
            respond(&alice, &expired, response_body("approved"), Spoil::None),
            410,
            "command_expired",
        ),
        (
            "answer to a cancelled command",
            respond(&alice, &cancelled, response_body("approved"), Spoil::None),
            409,
            "command_cancelled",
        ),
        (
            "a different second answer",
            respond(&alice, &answered, response_body("declined"), Spoil::None),
            409,
            "already_answered",
        ),
        (
            "answer to another user's command",
            respond(&alice, &for_bob, response_body("approved"), Spoil::None),
            403,
            "not_addressed_to_device",
        ),
        (
            "answer from another group",
            respond(&olga, &open, response_body("approved"), Spoil::None),
            404,
            "command_not_found",
        ),
        (
            "answer that is not JSON",
            respond(&alice, &open, b"approve!".to_vec(), Spoil::None),
            400,
            "malformed_json",
        ),
        (
            "answer that is neither approve nor decline",
            respond(&alice, &open, response_body("maybe"), Spoil::None),
            400,
            "malformed_json",
        ),
        (
            "mailbox wait too long",
            signed(&app, &bob, reqwest::Method::GET, "/mailbox?wait=61", b"", Spoil::None),
            400,
            "invalid_request",
        ),
        (
            "enrolment with a forged token",
            enrol(json_body(json!({ "token": format!("{open}.AAAA") }))),
            401,
            "invalid_enrolment_token",
        ),
        (
            "enrolment with a used token",
            enrol(json_body(json!({ "token": used_token }))),
            401,
            "invalid_enrolment_token",
        ),
        (
            "enrolment with malformed JSON",
            enrol(b"{".to_vec()),
            400,
            "malformed_json",
        ),
        ("unknown route", get("/nowhere"), 404, "not_found"),
        (
            "wrong method",
            app.http.put(format!("{}/command/{open}", app.base)),
            405,
            "method_not_allowed",
        ),
    ];

    let secrets = [
        IDM_KEY,
        DA_KEY,
        OTHER_KEY,
        alice.state.device_secret.as_str(),
        CALLBACK_AUTH.1,
    ];
    for (name, request, status, code) in cases {
        let before = snapshot(&app).await;
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{name}");
        assert!(
            response.headers().contains_key(signing::HEADER_SERVER_TIME),
            "{name}: every answer carries the server time"
        );
        let text = response.text().await.unwrap();
        let problem: hermod_shared::Problem =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"));
        assert_eq!(problem.code.as_str(), code, "{name}: {text}");
        assert_eq!(problem.status, status, "{name}");
        for secret in secrets {
            assert!(!text.contains(secret), "{name}: a secret in the error body");
        }
        assert_eq!(snapshot(&app).await, before, "{name}: state changed");
    }

    // And after all that, the open command still completes normally.
    let id = hermod_shared::CommandId::parse(&open).unwrap();
    assert_eq!(
        alice.respond(&id, Decision::Approved, None).await.unwrap().status(),
        200
    );
    assert_eq!(
        app.receiver.callback_for(&open).await.event().event_type,
        "command.approved"
    );
}

/// `OPTIONS` names exactly the methods a path takes, and so does a 405's `Allow`: creating is
/// `POST /command/{type}`, reading and cancelling `GET`/`DELETE /command/{id}`, though one
/// route serves both.
#[tokio::test]
async fn options_and_method_not_allowed_name_only_the_methods_the_path_takes() {
    let app = TestApp::start().await;
    let id = "cmd_0123456789abcdef0123456789abcdef";
    for prefix in ["", "/hermod/rest"] {
        for (path, methods) in [
            ("/command/provision".to_owned(), "POST,OPTIONS"),
            ("/command/x-custom".to_owned(), "POST,OPTIONS"),
            (format!("/command/{id}"), "GET,HEAD,DELETE,OPTIONS"),
            ("/ms/mailbox".to_owned(), "GET,HEAD,OPTIONS"),
            ("/command/callbacks".to_owned(), "GET,HEAD,OPTIONS"),
        ] {
            let url = format!("{}{prefix}{path}", app.base);
            let r = app.http.request(reqwest::Method::OPTIONS, &url).send().await.unwrap();
            assert_eq!(r.status(), 204, "OPTIONS {prefix}{path}");
            assert_eq!(r.headers()["allow"], methods, "OPTIONS {prefix}{path}");
            let r = app.http.put(&url).send().await.unwrap();
            assert_eq!(r.status(), 405, "PUT {prefix}{path}");
            assert_eq!(r.headers()["allow"], methods, "PUT {prefix}{path}");
            let problem: serde_json::Value = r.json().await.unwrap();
            assert_eq!(problem["code"], "method_not_allowed");
        }
    }
    // A method the path refuses is refused, as the list says.
    let r = app
        .http
        .delete(format!("{}/command/provision", app.base))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
}

/// A path or query the router's extractors cannot read (a parameter that is not UTF-8, a number
/// that is not one) gets a problem+json like every other refusal, not plain text.
#[tokio::test]
async fn unreadable_paths_and_queries_get_a_problem_not_plain_text() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let before = snapshot(&app).await;
    for path in [
        "/command/%FF",
        "/hermod/rest/command/%FF",
        "/command/cmd_0123456789abcdef0123456789abcdef?wait=soon",
        "/command/devices/%C3%28",
    ] {
        let r = app
            .http
            .get(format!("{}{path}", app.base))
            .header("x-api-key", idm.0.token())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{path}");
        assert!(r.headers().contains_key("hermod-server-time"), "{path}");
        let problem: serde_json::Value = r.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_request", "{path}: {problem}");
    }
    assert_eq!(snapshot(&app).await, before);
}
