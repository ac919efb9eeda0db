//! A backend behind the edge answers only requests that carry a valid assertion from it.

use crate::harness::*;
use hermod::config::Secret;
use hermod_shared::edge::{self, Caller};
use serde_json::json;

pub const EDGE_SECRET: &str = "edge-secret-shared-by-edge-and-backend-0001";

fn now_s() -> i64 {
    hermod::store::now_ms() / 1000
}

fn nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn assertion(method: &str, path: &str, caller: &Caller, body: &[u8], at: i64) -> String {
    edge::sign(EDGE_SECRET.as_bytes(), method, path, at, &nonce(), caller, body)
}

async fn behind_edge() -> TestApp {
    TestApp::start_with(|s| s.edge.secret = Some(Secret::new(EDGE_SECRET))).await
}

#[tokio::test]
async fn requests_with_a_valid_assertion_are_served_and_all_others_refused_without_a_change() {
    let app = behind_edge().await;
    let idm = Creds::idm();
    let body = serde_json::to_vec(&json!({ "user_id": "ann" })).unwrap();
    let send = |assertion: Option<String>, creds: &Creds| {
        let mut r = app
            .http
            .post(format!("{}/command/provision", app.base))
            .header("x-api-key", creds.0.token())
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(a) = assertion {
            r = r.header(edge::HEADER_ASSERTION, a);
        }
        r
    };
    let good = assertion(
        "POST",
        "/command/provision",
        &Caller::Client("idm".into()),
        &body,
        now_s(),
    );
    let forged = edge::sign(
        b"not the edge secret, but long enough",
        "POST",
        "/command/provision",
        now_s(),
        &nonce(),
        &Caller::Client("idm".into()),
        &body,
    );
    let cases = [
        ("missing", send(None, &idm)),
        ("forged", send(Some(forged), &idm)),
        (
            "stale",
            send(
                Some(assertion(
                    "POST",
                    "/command/provision",
                    &Caller::Client("idm".into()),
                    &body,
                    now_s() - 31,
                )),
                &idm,
            ),
        ),
        (
            "for another path",
            send(
                Some(assertion(
                    "POST",
                    "/command/sign",
                    &Caller::Client("idm".into()),
                    &body,
                    now_s(),
                )),
                &idm,
            ),
        ),
        (
            "for another body",
            send(
                Some(assertion(
                    "POST",
                    "/command/provision",
                    &Caller::Client("idm".into()),
                    b"{}",
                    now_s(),
                )),
                &idm,
            ),
        ),
        (
            "naming another client",
            send(
                Some(assertion(
                    "POST",
                    "/command/provision",
                    &Caller::Client("da".into()),
                    &body,
                    now_s(),
                )),
                &idm,
            ),
        ),
        (
            "naming an anonymous caller",
            send(
                Some(assertion(
                    "POST",
                    "/command/provision",
                    &Caller::Anonymous,
                    &body,
                    now_s(),
                )),
                &idm,
            ),
        ),
    ];
    for (name, request) in cases {
        let before = snapshot(&app).await;
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 401, "{name}");
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap()["code"],
            "invalid_edge_assertion",
            "{name}"
        );
        assert_eq!(snapshot(&app).await, before, "{name}");
    }

    let r = send(Some(good.clone()), &idm).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let before = snapshot(&app).await;
    let replayed = send(Some(good), &idm).send().await.unwrap();
    assert_eq!(replayed.status(), 401, "a replayed assertion is refused");
    assert_eq!(snapshot(&app).await, before);

    // The assertion vouches for who the caller says it is; the key is still checked.
    let wrong_key = Creds(hermod_shared::credential::ClientCredential {
        client_id: "idm".into(),
        key: "0".repeat(64),
    });
    let a = assertion(
        "POST",
        "/command/provision",
        &Caller::Client("idm".into()),
        &body,
        now_s(),
    );
    assert_eq!(send(Some(a), &wrong_key).send().await.unwrap().status(), 401);
    // Health needs no assertion.
    assert_eq!(
        app.http
            .get(format!("{}/health", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn only_the_edge_itself_can_read_a_clients_key_hash() {
    let app = behind_edge().await;
    let get = |caller: Caller, path: &str| {
        let a = assertion("GET", path, &caller, b"", now_s());
        app.http
            .get(format!("{}{path}", app.base))
            .header(edge::HEADER_ASSERTION, a)
            .send()
    };
    let r = get(Caller::Edge, "/edge/clients/idm").await.unwrap();
    assert_eq!(r.status(), 200);
    let client: hermod_shared::wire::EdgeClient = r.json().await.unwrap();
    assert_eq!(client.key_hashes, [hermod_shared::sha256_hex(IDM_KEY.as_bytes())]);
    assert_eq!(get(Caller::Edge, "/edge/clients/nobody").await.unwrap().status(), 404);
    assert_eq!(get(Caller::Anonymous, "/edge/clients/idm").await.unwrap().status(), 401);
    assert_eq!(
        app.http
            .get(format!("{}/edge/clients/idm", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // An edge assertion is good for nothing else.
    assert_eq!(get(Caller::Edge, "/ms/time").await.unwrap().status(), 401);

    // Without an edge secret the route does not exist.
    let plain = TestApp::start().await;
    assert_eq!(
        plain
            .http
            .get(format!("{}/edge/clients/idm", plain.base))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}
