//! The admin API of hosted mode: the operator makes tenants; a tenant admin makes groups and
//! clients, issues, rotates and revokes keys, and reads the audit log; quotas answer 429.

use crate::harness::*;
use hermod_device::Device;
use hermod_shared::wire::Decision;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// The seeds' pair in one tenant: an Identity Manager provisions a device that the access
/// gateway then uses, both clients made through the admin API, no file edited, no restart.
#[tokio::test]
async fn a_tenant_admin_builds_a_group_of_two_clients_that_share_a_device() {
    let app = start_hosted().await;
    let operator = AdminApi::operator(&app.base);
    let acme = operator.create_tenant("acme", json!({ "max_devices": 10 })).await;
    acme.create_group("acme", "mobile-id").await;
    let idm_url = app.receiver.url.replace("/ws/hermod", "/acme/idm");
    let idm = acme.create_client("acme", "idm", "mobile-id", Some(&idm_url)).await;
    assert_eq!(idm["client"]["client_id"], "acme.idm");
    assert_eq!(idm["client"]["group"], "mobile-id");
    assert_eq!(idm["client"]["source"], "api");
    assert_eq!(idm["client"]["active_keys"], 0);
    let gateway_url = app.receiver.url.replace("/ws/hermod", "/acme/gateway");
    let gateway = acme
        .create_client("acme", "gateway", "mobile-id", Some(&gateway_url))
        .await;
    let gateway_secret = gateway["callback_signing_secret"].as_str().unwrap().to_owned();
    assert!(gateway_secret.starts_with("whsec_"));
    // Basic auth is set, never shown back.
    let patched = acme
        .ok(
            Method::PATCH,
            "/admin/tenants/acme/clients/gateway",
            Some(json!({ "callback_basic_auth": "gw:pa55word" })),
            200,
        )
        .await;
    assert_eq!(patched["callback_basic_auth"], true);
    assert!(!patched.to_string().contains("pa55word"));
    // Over plain http:// the password crosses the network readable: the tenant is told.
    assert_eq!(
        patched["warnings"][0],
        hermod_shared::admin::WARNING_BASIC_AUTH_OVER_HTTP,
        "{patched}"
    );
    assert!(idm["client"].get("warnings").is_none(), "no basic auth, no warning");

    let (_, idm_creds) = acme.issue_key("acme", "idm").await;
    let (_, gateway_creds) = acme.issue_key("acme", "gateway").await;
    // The key is 256 bits (43 base64url characters), shown once, listed without it.
    assert_eq!(idm_creds.0.key.len(), 43);
    let keys = acme
        .ok(Method::GET, "/admin/tenants/acme/clients/idm/keys", None, 200)
        .await;
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert!(!keys.to_string().contains(&idm_creds.0.key));

    // Provisioned through the Identity Manager...
    let mut device = app.enrol(&idm_creds, "alice").await;
    // ...used by the access gateway.
    let login = app
        .create_ok(&gateway_creds, "authenticate", json!({ "user_id": "alice" }))
        .await;
    let page = device.poll(5).await.unwrap();
    let item = page
        .items
        .iter()
        .find(|i| i.command.id.as_str() == login["id"])
        .expect("the gateway's command reaches the device");
    let answered = device
        .respond(&item.command.id, Decision::Approved, None)
        .await
        .unwrap();
    assert!(answered.status().is_success());
    let callback = app.receiver.callback_for(login["id"].as_str().unwrap()).await;
    assert_eq!(callback.path, "/acme/gateway");
    verify_signature(&callback, &gateway_secret).expect("signed with the secret shown at creation");
    let auth = callback.header("authorization");
    assert_eq!(
        auth,
        format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "gw:pa55word")
        )
    );
    assert_eq!(callback.event().event_type, "command.approved");

    let tenant = acme.ok(Method::GET, "/admin/tenants/acme", None, 200).await;
    assert_eq!(tenant["devices"], 1);
    assert_eq!(tenant["quotas"]["max_devices"], 10);
    let groups = acme.ok(Method::GET, "/admin/tenants/acme/groups", None, 200).await;
    assert_eq!(groups[0]["name"], "mobile-id");
    let clients = acme.ok(Method::GET, "/admin/tenants/acme/clients", None, 200).await;
    let names: Vec<&str> = clients
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gateway", "idm"]);
    assert!(!clients.to_string().contains("whsec_"), "secrets are shown once only");
}

#[tokio::test]
async fn a_rotation_keeps_old_and_new_keys_working_then_only_the_new_one() {
    let app = start_hosted().await;
    let operator = AdminApi::operator(&app.base);
    let creds = operator.tenant_with_clients(&app, "acme", "mobile-id", &["idm"]).await;
    // A second admin token of the tenant, issued by the operator.
    let issued = operator
        .ok(Method::POST, "/admin/tenants/acme/admin-keys", None, 201)
        .await;
    let admin_token = issued["token"].as_str().unwrap().to_owned();
    let acme = AdminApi::with_token(&app.base, &admin_token);
    let old = creds[0].clone();
    let keys = acme
        .ok(Method::GET, "/admin/tenants/acme/clients/idm/keys", None, 200)
        .await;
    let old_id = keys[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.create(&old, "ping", json!({ "user_id": "u" })).await.0,
        404,
        "authenticated"
    );

    let (_, new) = acme.issue_key("acme", "idm").await;
    for creds in [&old, &new] {
        let (status, body) = app.get(creds, "/command/users/u/devices").await;
        assert_eq!(status, 200, "both keys work during the rotation: {body}");
    }
    // A third key is refused: two at most.
    let before = admin_snapshot(&app).await;
    let (status, third) = acme.post("/admin/tenants/acme/clients/idm/keys", json!(null)).await;
    assert_eq!(status, 409, "{third}");
    assert_eq!(third["code"], "conflict");
    assert_eq!(admin_snapshot(&app).await, before);

    assert_eq!(
        acme.delete(&format!("/admin/tenants/acme/clients/idm/keys/{old_id}"))
            .await,
        204
    );
    // At once: the old key is refused, the new one works.
    let (status, body) = app.get(&old, "/command/users/u/devices").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "invalid_credentials");
    assert_eq!(app.get(&new, "/command/users/u/devices").await.0, 200);
    // Revoking again is harmless; the list shows when it was revoked.
    assert_eq!(
        acme.delete(&format!("/admin/tenants/acme/clients/idm/keys/{old_id}"))
            .await,
        204
    );
    // Its use is recorded in the background: wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let old_view = loop {
        let keys = acme
            .ok(Method::GET, "/admin/tenants/acme/clients/idm/keys", None, 200)
            .await;
        let view = keys
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == old_id.as_str())
            .unwrap()
            .clone();
        if view["last_used_at"].is_string() || tokio::time::Instant::now() > deadline {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(old_view["revoked_at"].is_string());
    assert!(old_view["last_used_at"].is_string(), "its use was recorded: {old_view}");
    let client = acme.ok(Method::GET, "/admin/tenants/acme/clients/idm", None, 200).await;
    assert_eq!(client["active_keys"], 1);
}

#[tokio::test]
async fn disabling_a_client_revokes_its_keys_at_once_and_keeps_its_history() {
    let app = start_hosted().await;
    let operator = AdminApi::operator(&app.base);
    let creds = operator.tenant_with_clients(&app, "acme", "mobile-id", &["idm"]).await;
    let provision = app.create_ok(&creds[0], "provision", json!({ "user_id": "bob" })).await;
    assert_eq!(operator.delete("/admin/tenants/acme/clients/idm").await, 204);
    assert_eq!(app.create(&creds[0], "ping", json!({ "user_id": "bob" })).await.0, 401);
    let client = operator
        .ok(Method::GET, "/admin/tenants/acme/clients/idm", None, 200)
        .await;
    assert!(client["disabled_at"].is_string());
    assert_eq!(client["active_keys"], 0);
    // A disabled client takes no new keys and no changes.
    let (status, _) = operator.post("/admin/tenants/acme/clients/idm/keys", json!(null)).await;
    assert_eq!(status, 404);
    let id: Option<String> = sqlx::query_scalar("SELECT id FROM commands WHERE id = $1")
        .bind(provision["id"].as_str().unwrap())
        .fetch_optional(&app.state.db.read)
        .await
        .unwrap();
    assert!(id.is_some(), "its commands stay until their lifespan ends");
}

#[tokio::test]
async fn each_admin_secret_opens_only_its_own_door() {
    let app = start_hosted().await;
    let operator = AdminApi::operator(&app.base);
    let acme = operator.create_tenant("acme", json!({})).await;
    let globex = operator.create_tenant("globex", json!({})).await;
    acme.create_group("acme", "g").await;
    acme.create_client("acme", "idm", "g", None).await;
    let (_, acme_idm) = acme.issue_key("acme", "idm").await;

    // No token, a wrong token, a client credential: 401, asking for a bearer token.
    let r = reqwest::Client::new()
        .get(format!("{}/admin/tenants/acme", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"hermod-admin\"");
    for (name, api) in [
        ("wrong token", AdminApi::with_token(&app.base, "adm_x.y")),
        (
            "client key as bearer",
            AdminApi::with_token(&app.base, &acme_idm.0.token()),
        ),
        (
            "operator key with a typo",
            AdminApi::with_token(&app.base, &format!("{OPERATOR_KEY}x")),
        ),
    ] {
        let (status, body) = api.get("/admin/tenants/acme").await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["code"], "invalid_credentials");
        // Named for what this door takes, not for the client API's credentials.
        assert_eq!(body["title"], "Missing or invalid credentials", "{body}");
        assert!(body["detail"].as_str().unwrap().contains("admin token"), "{body}");
    }
    let r = reqwest::Client::new()
        .get(format!("{}/admin/tenants/acme", app.base))
        .header("x-api-key", acme_idm.0.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a client key is not an admin credential");
    // An admin token is not a client credential.
    let r = reqwest::Client::new()
        .get(format!("{}/command/users/u/devices", app.base))
        .bearer_auth(&acme.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A tenant admin may not act as the operator...
    let before = admin_snapshot(&app).await;
    assert_eq!(acme.post("/admin/tenants", json!({ "id": "mine" })).await.0, 403);
    assert_eq!(acme.get("/admin/tenants").await.0, 403);
    let (status, _, _) = acme
        .call(Method::PUT, "/admin/tenants/acme/quotas", Some(json!({})))
        .await;
    assert_eq!(status, 403, "quotas are the operator's");
    // ...nor see another tenant: every path answers 404, as for a tenant that does not exist.
    for (method, path) in [
        (Method::GET, "/admin/tenants/globex"),
        (Method::PUT, "/admin/tenants/globex/quotas"),
        (Method::GET, "/admin/tenants/globex/groups"),
        (Method::POST, "/admin/tenants/globex/groups"),
        (Method::GET, "/admin/tenants/globex/clients"),
        (Method::POST, "/admin/tenants/globex/clients"),
        (Method::GET, "/admin/tenants/globex/clients/idm"),
        (Method::PATCH, "/admin/tenants/globex/clients/idm"),
        (Method::DELETE, "/admin/tenants/globex/clients/idm"),
        (Method::POST, "/admin/tenants/globex/clients/idm/keys"),
        (Method::GET, "/admin/tenants/globex/clients/idm/keys"),
        (Method::DELETE, "/admin/tenants/globex/clients/idm/keys/key_1"),
        (Method::POST, "/admin/tenants/globex/admin-keys"),
        (Method::GET, "/admin/tenants/globex/admin-keys"),
        (Method::GET, "/admin/tenants/globex/audit"),
        (Method::GET, "/admin/tenants/nosuch"),
    ] {
        let (status, _, body) = acme.call(method.clone(), path, Some(json!({ "name": "x" }))).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["code"], "not_found");
    }
    assert_eq!(admin_snapshot(&app).await, before);

    // A revoked admin token stops at once.
    let admin_keys = acme.ok(Method::GET, "/admin/tenants/acme/admin-keys", None, 200).await;
    let acme_key_id = admin_keys[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        globex
            .delete(&format!("/admin/tenants/acme/admin-keys/{acme_key_id}"))
            .await,
        404,
        "not by another tenant"
    );
    assert_eq!(
        operator
            .delete(&format!("/admin/tenants/acme/admin-keys/{acme_key_id}"))
            .await,
        204
    );
    assert_eq!(acme.get("/admin/tenants/acme").await.0, 401);
}

#[tokio::test]
async fn without_an_operator_key_no_tenant_can_be_made() {
    let app = TestApp::start().await;
    let (status, body) = AdminApi::operator(&app.base)
        .post("/admin/tenants", json!({ "id": "acme" }))
        .await;
    assert_eq!(status, 401, "{body}");
    let tenants: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenants")
        .fetch_one(&app.state.db.read)
        .await
        .unwrap();
    assert_eq!(tenants, 1, "only the default tenant of the config file");
}

#[tokio::test]
async fn config_file_clients_are_the_default_tenant_and_read_only_here() {
    let app = start_hosted().await;
    let operator = AdminApi::operator(&app.base);
    let clients = operator
        .ok(Method::GET, "/admin/tenants/default/clients", None, 200)
        .await;
    let ids: Vec<&str> = clients
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["da", "idm", "other"]);
    assert!(clients.as_array().unwrap().iter().all(|c| c["source"] == "config"));
    let before = admin_snapshot(&app).await;
    for (method, path) in [
        (Method::PATCH, "/admin/tenants/default/clients/idm"),
        (Method::DELETE, "/admin/tenants/default/clients/idm"),
        (Method::POST, "/admin/tenants/default/clients/idm/keys"),
    ] {
        let (status, _, body) = operator.call(method.clone(), path, Some(json!({}))).await;
        assert_eq!(status, 409, "{method} {path}: {body}");
        assert!(body["detail"].as_str().unwrap().contains("config file"));
    }
    assert_eq!(admin_snapshot(&app).await, before);
    // And they work as before.
    app.create_ok(&Creds::idm(), "provision", json!({ "user_id": "u" }))
        .await;
}

#[tokio::test]
async fn a_tenant_over_its_command_rate_gets_429_with_ratelimit_headers_and_nothing_changes() {
    let app = start_hosted().await;
    let operator = AdminApi::operator(&app.base);
    let creds = operator
        .tenant_with_clients(&app, "acme", "mobile-id", &["idm", "gateway"])
        .await;
    let tenant = operator
        .ok(
            Method::PUT,
            "/admin/tenants/acme/quotas",
            Some(json!({ "max_commands_per_second": 3 })),
            200,
        )
        .await;
    assert_eq!(tenant["quotas"]["max_commands_per_second"], 3);
    // Start at the beginning of a one-second window, so all four land in one.
    sleep_to_next_second().await;
    let create = |c: &Creds| {
        app.http
            .post(format!("{}/command/provision", app.base))
            .header("x-api-key", c.0.token())
            .json(&json!({ "user_id": "carol" }))
            .send()
    };
    let mut remaining = Vec::new();
    // The quota is the tenant's: both clients draw from it.
    for c in [&creds[0], &creds[1], &creds[0]] {
        let r = create(c).await.unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["ratelimit-limit"], "3");
        remaining.push(r.headers()["ratelimit-remaining"].to_str().unwrap().to_owned());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let before = snapshot(&app).await;
    let r = create(&creds[1]).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["ratelimit-policy"], "3;w=1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(snapshot(&app).await, before, "a refused create changes nothing");
    // Other tenants are not touched, and the next window opens again.
    app.create_ok(&Creds::idm(), "provision", json!({ "user_id": "carol" }))
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(create(&creds[1]).await.unwrap().status(), 201);
}

#[tokio::test]
async fn a_tenant_at_its_device_quota_cannot_enrol_another_until_it_is_raised() {
    let app = start_hosted().await;
    let operator = AdminApi::operator(&app.base);
    let creds = operator.tenant_with_clients(&app, "acme", "mobile-id", &["idm"]).await;
    operator
        .ok(
            Method::PUT,
            "/admin/tenants/acme/quotas",
            Some(json!({ "max_devices": 1 })),
            200,
        )
        .await;
    app.enrol(&creds[0], "dave").await;
    let provision = app
        .create_ok(&creds[0], "provision", json!({ "user_id": "erin" }))
        .await;
    let link = provision["enrolment"]["link"].as_str().unwrap();
    let before = snapshot(&app).await;
    let refused = match Device::enrol(link, None, None).await {
        Ok(_) => panic!("enrolled past the quota"),
        Err(e) => e.to_string(),
    };
    assert!(
        refused.contains("429") && refused.contains("quota_exceeded"),
        "{refused}"
    );
    assert_eq!(snapshot(&app).await, before, "no device, the provision still open");
    // The answer carries the quota.
    let (_, token) = hermod_shared::enrolment::parse_deep_link(link).unwrap();
    let r = app
        .http
        .post(format!("{}/ms/enrol", app.base))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["ratelimit-limit"], "1");
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    // Other tenants are not touched; raised, the same link works.
    app.enrol(&Creds::idm(), "erin").await;
    operator
        .ok(
            Method::PUT,
            "/admin/tenants/acme/quotas",
            Some(json!({ "max_devices": 2 })),
            200,
        )
        .await;
    Device::enrol(link, None, None).await.unwrap();
    let tenant = operator.ok(Method::GET, "/admin/tenants/acme", None, 200).await;
    assert_eq!(tenant["devices"], 2);
}

#[tokio::test]
async fn the_audit_log_tells_the_tenant_admin_who_did_what_and_when() {
    let app = start_hosted().await;
    let operator = AdminApi::operator(&app.base);
    let acme = operator.create_tenant("acme", json!({})).await;
    acme.create_group("acme", "mobile-id").await;
    acme.create_client("acme", "idm", "mobile-id", None).await;
    let (key_id, creds) = acme.issue_key("acme", "idm").await;
    app.create_ok(&creds, "provision", json!({ "user_id": "f" })).await;
    app.create_ok(&creds, "provision", json!({ "user_id": "f" })).await;
    assert_eq!(
        acme.delete(&format!("/admin/tenants/acme/clients/idm/keys/{key_id}"))
            .await,
        204
    );
    let acme_key = acme.token.split('.').next().unwrap().to_owned();

    // Key use is written in the background: wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let log = loop {
        let page = acme.ok(Method::GET, "/admin/tenants/acme/audit", None, 200).await;
        if page["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "client.key.use")
        {
            break page;
        }
        assert!(tokio::time::Instant::now() < deadline, "no key use recorded: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let entries: Vec<(String, String, String)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["at"].as_str().unwrap().ends_with('Z'));
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let admin = format!("admin:{acme_key}");
    for expected in [
        ("operator".to_owned(), "tenant.create".to_owned(), "acme".to_owned()),
        ("operator".to_owned(), "admin.key.issue".to_owned(), acme_key.clone()),
        (admin.clone(), "group.create".to_owned(), "mobile-id".to_owned()),
        (admin.clone(), "client.create".to_owned(), "acme.idm".to_owned()),
        (admin.clone(), "client.key.issue".to_owned(), key_id.clone()),
        (
            "client:acme.idm".to_owned(),
            "client.key.use".to_owned(),
            key_id.clone(),
        ),
        (admin.clone(), "client.key.revoke".to_owned(), key_id.clone()),
    ] {
        assert!(entries.contains(&expected), "{expected:?} missing from {entries:?}");
    }
    let uses = entries.iter().filter(|e| e.1 == "client.key.use").count();
    assert_eq!(uses, 1, "two requests in a minute make one record");
    let text = log.to_string();
    assert!(!text.contains(&creds.0.key), "no secret in the log");
    assert!(!text.contains(acme.token.split('.').nth(1).unwrap()));

    // Paging: after the first entry, at most two.
    let first = log["items"][0]["seq"].as_i64().unwrap();
    let page = acme
        .ok(
            Method::GET,
            &format!("/admin/tenants/acme/audit?after={first}&limit=2"),
            None,
            200,
        )
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        page["items"][0]["seq"].as_i64().unwrap(),
        log["items"][1]["seq"].as_i64().unwrap()
    );
    assert_eq!(page["next_cursor"], page["items"][1]["seq"]);
    // The operator's own tenant log does not mix in acme's entries.
    let default_log = operator
        .ok(Method::GET, "/admin/tenants/default/audit", None, 200)
        .await;
    assert!(!default_log.to_string().contains("acme"));
}

/// A bad request: its name, who sends it, method, path, body, and the status and code expected.
type Case<'a> = (&'a str, &'a AdminApi, Method, &'a str, Option<&'a str>, u16, &'a str);

/// Bad admin input: the 4xx problem it gets, and that nothing changed.
#[tokio::test]
async fn bad_admin_input_is_refused_with_a_problem_and_changes_nothing() {
    let app = start_hosted().await;
    let operator = AdminApi::operator(&app.base);
    let acme = operator.create_tenant("acme", json!({})).await;
    acme.create_group("acme", "g").await;
    acme.create_client("acme", "idm", "g", None).await;
    acme.issue_key("acme", "idm").await;
    acme.issue_key("acme", "idm").await;

    let cases: Vec<Case> = vec![
        (
            "tenant id with a capital",
            &operator,
            Method::POST,
            "/admin/tenants",
            Some(r#"{"id":"Acme"}"#),
            400,
            "invalid_request",
        ),
        (
            "tenant id with a dot",
            &operator,
            Method::POST,
            "/admin/tenants",
            Some(r#"{"id":"a.b"}"#),
            400,
            "invalid_request",
        ),
        (
            "tenant id too long",
            &operator,
            Method::POST,
            "/admin/tenants",
            Some(&*Box::leak(
                format!(r#"{{"id":"{}"}}"#, "a".repeat(64)).into_boxed_str(),
            )),
            400,
            "invalid_request",
        ),
        (
            "tenant exists",
            &operator,
            Method::POST,
            "/admin/tenants",
            Some(r#"{"id":"acme"}"#),
            409,
            "conflict",
        ),
        (
            "default tenant exists",
            &operator,
            Method::POST,
            "/admin/tenants",
            Some(r#"{"id":"default"}"#),
            409,
            "conflict",
        ),
        (
            "tenant unknown field",
            &operator,
            Method::POST,
            "/admin/tenants",
            Some(r#"{"id":"x","plan":"gold"}"#),
            400,
            "malformed_json",
        ),
        (
            "tenant negative quota",
            &operator,
            Method::POST,
            "/admin/tenants",
            Some(r#"{"id":"x","quotas":{"max_devices":-1}}"#),
            400,
            "malformed_json",
        ),
        (
            "tenant malformed JSON",
            &operator,
            Method::POST,
            "/admin/tenants",
            Some(r#"{"id":"#),
            400,
            "malformed_json",
        ),
        (
            "quotas unknown field",
            &operator,
            Method::PUT,
            "/admin/tenants/acme/quotas",
            Some(r#"{"max_users":3}"#),
            400,
            "malformed_json",
        ),
        (
            "quotas of no tenant",
            &operator,
            Method::PUT,
            "/admin/tenants/nosuch/quotas",
            Some(r#"{}"#),
            404,
            "not_found",
        ),
        (
            "group name with a slash",
            &acme,
            Method::POST,
            "/admin/tenants/acme/groups",
            Some(r#"{"name":"a/b"}"#),
            400,
            "invalid_request",
        ),
        (
            "group exists",
            &acme,
            Method::POST,
            "/admin/tenants/acme/groups",
            Some(r#"{"name":"g"}"#),
            409,
            "conflict",
        ),
        (
            "group without a name",
            &acme,
            Method::POST,
            "/admin/tenants/acme/groups",
            Some(r#"{}"#),
            400,
            "malformed_json",
        ),
        (
            "client in no group",
            &acme,
            Method::POST,
            "/admin/tenants/acme/clients",
            Some(r#"{"name":"gw","group":"nosuch"}"#),
            400,
            "invalid_request",
        ),
        (
            "client name with a colon",
            &acme,
            Method::POST,
            "/admin/tenants/acme/clients",
            Some(r#"{"name":"g:w","group":"g"}"#),
            400,
            "invalid_request",
        ),
        (
            "client exists",
            &acme,
            Method::POST,
            "/admin/tenants/acme/clients",
            Some(r#"{"name":"idm","group":"g"}"#),
            409,
            "conflict",
        ),
        (
            "callback URL not http",
            &acme,
            Method::POST,
            "/admin/tenants/acme/clients",
            Some(r#"{"name":"gw","group":"g","callback_url":"ftp://x/"}"#),
            400,
            "invalid_request",
        ),
        (
            "callback URL relative",
            &acme,
            Method::POST,
            "/admin/tenants/acme/clients",
            Some(r#"{"name":"gw","group":"g","callback_url":"/cb"}"#),
            400,
            "invalid_request",
        ),
        (
            "callback URL with credentials in it",
            &acme,
            Method::POST,
            "/admin/tenants/acme/clients",
            Some(r#"{"name":"gw","group":"g","callback_url":"https://u:p@x.example/cb"}"#),
            400,
            "invalid_request",
        ),
        (
            "basic auth with a control character",
            &acme,
            Method::POST,
            "/admin/tenants/acme/clients",
            Some(r#"{"name":"gw","group":"g","callback_basic_auth":"u:p\u0007"}"#),
            400,
            "invalid_request",
        ),
        (
            "basic auth without colon",
            &acme,
            Method::POST,
            "/admin/tenants/acme/clients",
            Some(r#"{"name":"gw","group":"g","callback_basic_auth":"user"}"#),
            400,
            "invalid_request",
        ),
        (
            "patch unknown field",
            &acme,
            Method::PATCH,
            "/admin/tenants/acme/clients/idm",
            Some(r#"{"group":"g"}"#),
            400,
            "malformed_json",
        ),
        (
            "patch bad URL",
            &acme,
            Method::PATCH,
            "/admin/tenants/acme/clients/idm",
            Some(r#"{"callback_url":"nope"}"#),
            400,
            "invalid_request",
        ),
        (
            "patch no client",
            &acme,
            Method::PATCH,
            "/admin/tenants/acme/clients/nosuch",
            Some(r#"{}"#),
            404,
            "not_found",
        ),
        (
            "a third key",
            &acme,
            Method::POST,
            "/admin/tenants/acme/clients/idm/keys",
            None,
            409,
            "conflict",
        ),
        (
            "keys of no client",
            &acme,
            Method::POST,
            "/admin/tenants/acme/clients/nosuch/keys",
            None,
            404,
            "not_found",
        ),
        (
            "revoke no key",
            &acme,
            Method::DELETE,
            "/admin/tenants/acme/clients/idm/keys/key_nosuch",
            None,
            404,
            "not_found",
        ),
        (
            "revoke no admin key",
            &acme,
            Method::DELETE,
            "/admin/tenants/acme/admin-keys/adm_nosuch",
            None,
            404,
            "not_found",
        ),
        (
            "audit bad cursor",
            &acme,
            Method::GET,
            "/admin/tenants/acme/audit?after=x",
            None,
            400,
            "invalid_request",
        ),
        (
            "audit limit 0",
            &acme,
            Method::GET,
            "/admin/tenants/acme/audit?limit=0",
            None,
            400,
            "invalid_request",
        ),
        (
            "audit limit too big",
            &acme,
            Method::GET,
            "/admin/tenants/acme/audit?limit=501",
            None,
            400,
            "invalid_request",
        ),
        (
            "audit unknown parameter",
            &acme,
            Method::GET,
            "/admin/tenants/acme/audit?since=1",
            None,
            400,
            "invalid_request",
        ),
        (
            "no such admin path",
            &acme,
            Method::GET,
            "/admin/tenants/acme/nothing",
            None,
            404,
            "not_found",
        ),
        (
            "wrong method",
            &acme,
            Method::PUT,
            "/admin/tenants/acme/groups",
            None,
            405,
            "method_not_allowed",
        ),
    ];
    let before = admin_snapshot(&app).await;
    for (name, api, method, path, body, status, code) in cases {
        let mut request = api
            .http
            .request(method, format!("{}{path}", app.base))
            .bearer_auth(&api.token);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{name}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{name}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["code"], code, "{name}: {problem}");
        assert!(!problem.to_string().contains(OPERATOR_KEY), "{name}");
    }
    // A body that is not JSON at all.
    let r = operator
        .http
        .post(format!("{}/admin/tenants", app.base))
        .bearer_auth(OPERATOR_KEY)
        .header("content-type", "text/plain")
        .body("id=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(admin_snapshot(&app).await, before);
}

#[tokio::test]
async fn a_revoked_device_is_refused_and_frees_its_place_in_the_quota() {
    let app = start_hosted().await;
    let operator = AdminApi::operator(&app.base);
    let creds = operator
        .tenant_with_clients(&app, "acme", "mobile-id", &["idm", "gateway"])
        .await;
    operator
        .ok(
            Method::PUT,
            "/admin/tenants/acme/quotas",
            Some(json!({ "max_devices": 1 })),
            200,
        )
        .await;
    let mut old_phone = app.enrol(&creds[0], "gina").await;
    let device = old_phone.state.device_id.to_string();
    let (status, _) = app.delete(&Creds::other(), &format!("/command/devices/{device}")).await;
    assert_eq!(status, 404, "not by a client of another group");
    // Any client of the group may revoke it (here the gateway, which did not provision it).
    assert_eq!(
        app.delete(&creds[1], &format!("/command/devices/{device}")).await.0,
        204
    );
    assert_eq!(
        app.delete(&creds[1], &format!("/command/devices/{device}")).await.0,
        404
    );
    let refused = old_phone.poll(0).await.unwrap_err().to_string();
    assert!(refused.contains("401"), "{refused}");
    let (status, body) = app
        .create(&creds[0], "authenticate", json!({ "device_id": device }))
        .await;
    assert_eq!(status, 404, "{body}");
    // Its place in the quota is free again.
    app.enrol(&creds[0], "gina").await;
    let log = operator.ok(Method::GET, "/admin/tenants/acme/audit", None, 200).await;
    assert!(log["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "device.revoke"
            && e["actor"] == "client:acme.gateway"
            && e["target"] == device.as_str()));
}

#[tokio::test]
async fn the_openapi_document_describes_the_client_device_and_admin_apis() {
    let app = TestApp::start_with(|s| s.long_polls.per_client = 37).await;
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    // The limits stated are this server's, as configured.
    let description = doc["info"]["description"].as_str().unwrap();
    assert!(description.contains("request body 65536 bytes"), "{description}");
    assert!(description.contains("37 per client"), "{description}");
    for (path, method) in [
        ("/ms/rekey", "post"),
        ("/command/{type}", "post"),
        ("/command/{id}", "get"),
        ("/command/{id}", "delete"),
        ("/command/devices/{device_id}", "delete"),
        ("/ms/mailbox", "get"),
        ("/ms/commands/{id}/response", "post"),
        ("/admin/tenants", "post"),
        ("/admin/tenants/{tenant}/quotas", "put"),
        ("/admin/tenants/{tenant}/clients/{client}", "patch"),
        ("/admin/tenants/{tenant}/clients/{client}/keys", "post"),
        ("/admin/tenants/{tenant}/clients/{client}/keys/{key_id}", "delete"),
        ("/admin/tenants/{tenant}/audit", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    // Query parameters are declared in the query and path parameters in the path, so a client
    // generated from the document sends `?wait=` rather than a path segment.
    for (path, method, name, place) in [
        ("/command/{id}", "get", "wait", "query"),
        ("/command/{id}", "get", "id", "path"),
        ("/ms/mailbox", "get", "cursor", "query"),
        ("/ms/mailbox", "get", "wait", "query"),
        ("/command/callbacks", "get", "status", "query"),
        ("/admin/tenants/{tenant}/audit", "get", "after", "query"),
        ("/admin/tenants/{tenant}/audit", "get", "tenant", "path"),
    ] {
        let params = doc["paths"][path][method]["parameters"].as_array().unwrap();
        let param = params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"));
        assert_eq!(param["in"], place, "{method} {path} parameter {name}");
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" {
                    let name = p["name"].as_str().unwrap();
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path} declares {name} as a path parameter"
                    );
                }
            }
        }
    }
    let create = &doc["paths"]["/command/{type}"]["post"]["responses"];
    assert!(create["429"].is_object(), "the quota answer is documented");
    // Every answer an operation can give is documented: 401 named for the credential it takes
    // (an admin token is not "client credentials"), 413 and 415 wherever a JSON body is read,
    // 503 when the database is away.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let answers = &op["responses"];
            let security = op["security"].to_string();
            if security.contains("admin_token") {
                let unauthorized = answers["401"]["description"].as_str().unwrap_or_default();
                assert!(unauthorized.contains("admin token"), "{method} {path}: {unauthorized}");
                assert!(answers["429"].is_object(), "{method} {path}: the admin rate limit");
            } else if security.contains("api_key") {
                let unauthorized = answers["401"]["description"].as_str().unwrap_or_default();
                assert!(
                    unauthorized.contains("client credentials"),
                    "{method} {path}: {unauthorized}"
                );
            } else if security.contains("device_signature") {
                assert!(answers["401"].is_object(), "{method} {path}");
            }
            if op["requestBody"].is_object() {
                for status in ["413", "415"] {
                    assert!(
                        answers[status].is_object(),
                        "{method} {path} does not document {status}"
                    );
                }
            }
            if path != "/ms/time" {
                assert!(answers["503"].is_object(), "{method} {path} does not document 503");
            }
        }
    }
    let admin = &doc["paths"]["/admin/tenants"]["post"]["security"][0];
    assert!(admin["admin_token"].is_array());
    assert_eq!(doc["components"]["securitySchemes"]["admin_token"]["scheme"], "bearer");
}

/// A config file cannot take over a hosted client by naming its id.
#[tokio::test]
async fn a_config_file_cannot_claim_a_hosted_clients_id() {
    let app = start_hosted().await;
    let operator = AdminApi::operator(&app.base);
    let creds = operator.tenant_with_clients(&app, "acme", "mobile-id", &["idm"]).await;
    let before = admin_snapshot(&app).await;
    let mut settings = (*app.state.settings).clone();
    settings.server.port = 0;
    let mut thief = settings.allowed_clients[0].clone();
    thief.client_id = "acme.idm".into();
    settings.allowed_clients.push(thief);
    let refused = match hermod::Application::build(settings).await {
        Ok(_) => panic!("a second replica took over acme.idm"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        refused.contains("acme.idm") && refused.contains("admin API"),
        "{refused}"
    );
    assert_eq!(admin_snapshot(&app).await, before);
    assert_eq!(app.get(&creds[0], "/command/users/u/devices").await.0, 200);
}

/// The operator lists tenants; a tenant admin moves a client's callbacks to a new URL and clears
/// its basic auth, and the next callback follows.
#[tokio::test]
async fn the_operator_lists_tenants_and_a_client_s_callbacks_follow_a_patch() {
    let app = start_hosted().await;
    let operator = AdminApi::operator(&app.base);
    let creds = operator.tenant_with_clients(&app, "acme", "mobile-id", &["idm"]).await;
    operator.create_tenant("globex", json!({ "max_devices": 5 })).await;
    let tenants = operator.ok(Method::GET, "/admin/tenants", None, 200).await;
    let ids: Vec<&str> = tenants
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "default", "globex"]);
    assert_eq!(tenants[2]["quotas"]["max_devices"], 5);

    let mut device = app.enrol(&creds[0], "hana").await;
    let moved = app.receiver.url.replace("/ws/hermod", "/acme/moved");
    let patched = operator
        .ok(
            Method::PATCH,
            "/admin/tenants/acme/clients/idm",
            Some(json!({ "callback_url": moved, "callback_basic_auth": "u:p" })),
            200,
        )
        .await;
    assert_eq!(patched["callback_url"], moved.as_str());
    assert_eq!(patched["callback_basic_auth"], true);
    let cleared = operator
        .ok(
            Method::PATCH,
            "/admin/tenants/acme/clients/idm",
            Some(json!({ "callback_basic_auth": null })),
            200,
        )
        .await;
    assert_eq!(cleared["callback_basic_auth"], false);
    assert_eq!(cleared["callback_url"], moved.as_str(), "an absent field stays");

    let login = app
        .create_ok(&creds[0], "authenticate", json!({ "user_id": "hana" }))
        .await;
    let page = device.poll(5).await.unwrap();
    device
        .respond(&page.items[0].command.id, Decision::Approved, None)
        .await
        .unwrap();
    let callback = app.receiver.callback_for(login["id"].as_str().unwrap()).await;
    assert_eq!(callback.path, "/acme/moved");
    assert_eq!(callback.header("authorization"), "", "basic auth cleared");
    let log = operator.ok(Method::GET, "/admin/tenants/acme/audit", None, 200).await;
    let updates: Vec<&Value> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "client.update")
        .collect();
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0]["detail"]["callback_basic_auth"], "set");
    assert!(!log.to_string().contains("u:p"), "the password is not logged");
}

#[tokio::test]
async fn failed_authentications_are_counted_and_summarised_in_the_tenants_audit_log() {
    let app = TestApp::start_with(|s| {
        s.admin.operator_key = Some(hermod::config::Secret::new(OPERATOR_KEY));
        s.admin.auth_failure_summary = 0.2;
    })
    .await;
    let operator = AdminApi::operator(&app.base);
    operator.tenant_with_clients(&app, "acme", "staff", &["idm"]).await;
    let wrong_key = "W".repeat(43);
    let wrong = Creds(hermod_shared::credential::ClientCredential {
        client_id: "acme.idm".into(),
        key: wrong_key.clone(),
    });
    for _ in 0..5 {
        let (status, _) = app.get(&wrong, "/command/callbacks").await;
        assert_eq!(status, 401);
    }
    let nobody = Creds(hermod_shared::credential::ClientCredential {
        client_id: "nobody".into(),
        key: wrong_key.clone(),
    });
    assert_eq!(app.get(&nobody, "/command/callbacks").await.0, 401);
    let forged_admin = AdminApi::with_token(&app.base, "adm_forged.secret-part-never-logged");
    assert_eq!(forged_admin.get("/admin/tenants/acme").await.0, 401);

    assert_eq!(metric(&app.base, "hermod_auth_failures_client_total").await, 6);
    assert_eq!(metric(&app.base, "hermod_auth_failures_admin_total").await, 1);

    // One summary record in acme's log: who, how often, from where; never the key presented.
    let summary = || async {
        let page = operator.ok(Method::GET, "/admin/tenants/acme/audit", None, 200).await;
        page["items"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["action"] == "auth.failed").cloned())
    };
    eventually(Duration::from_secs(10), "the summary is written", || async {
        summary().await.is_some()
    })
    .await;
    let record = summary().await.unwrap();
    let failures = record["detail"]["failures"]
        .as_array()
        .unwrap_or_else(|| panic!("no summary: {record}"));
    let idm = failures.iter().find(|f| f["who"] == "acme.idm").unwrap();
    assert_eq!(idm["failures"], 5);
    assert_eq!(idm["kind"], "client");
    assert_eq!(idm["addresses"][0], "127.0.0.1");
    assert!(!record.to_string().contains(&wrong_key));
    assert!(!record.to_string().contains("secret-part-never-logged"));
}

#[tokio::test]
async fn admin_requests_over_the_rate_get_429_with_retry_after() {
    let app = TestApp::start_with(|s| {
        s.admin.operator_key = Some(hermod::config::Secret::new(OPERATOR_KEY));
        s.admin.rate_limit = 5;
    })
    .await;
    let operator = AdminApi::operator(&app.base);
    let mut refused = None;
    // 12 requests at once span at most two one-second windows: at most 10 pass.
    for _ in 0..12 {
        let (status, headers, body) = operator.call(Method::GET, "/admin/tenants", None).await;
        if status == 429 {
            refused = Some((headers, body));
        }
    }
    let (headers, body) = refused.expect("some request was refused");
    assert_eq!(body["code"], "rate_limited");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(headers["ratelimit-limit"], "5");
}
