//! The egress policy at the HTTP level: a tenant cannot make Hermod connect to an internal
//! address, by literal, by `localhost`, or by a name that resolves to loopback; what the tenant
//! sees tells nothing of what listens there. Every target here is loopback (the policy under
//! test denies loopback); the other internal ranges are checked as pure functions in
//! `domain::egress`.

use crate::harness::*;
use hermod_shared::wire::Decision;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A TCP listener on 127.0.0.1 that counts the connections made to it and answers each with a
/// distinctive body, as an internal service would.
async fn watched_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 14\r\n\r\nINTERNAL-SECRET")
                    .await;
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn a_tenant_cannot_reach_internal_addresses() {
    let app = TestApp::start_with(|s| {
        s.admin.operator_key = Some(hermod::config::Secret::new(OPERATOR_KEY));
        s.egress.allow.clear();
        s.egress.hosts.insert("receiver.test".into(), [127, 0, 0, 1].into());
    })
    .await;
    let (port, seen) = watched_listener().await;
    let operator = AdminApi::operator(&app.base);
    let admin = operator.create_tenant("acme", json!({})).await;
    admin.create_group("acme", "staff").await;

    // Literal internal addresses and credentials in the URL are refused when they are set.
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://2130706433:{port}/hook"),
        "http://user:secret@example.com/hook".to_owned(),
    ] {
        let before = admin_snapshot(&app).await;
        let (status, body) = admin
            .post(
                "/admin/tenants/acme/clients",
                json!({ "name": "probe", "group": "staff", "callback_url": url }),
            )
            .await;
        assert_eq!(status, 400, "{url}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            !detail.contains(&port.to_string()) && !detail.contains("secret"),
            "{detail}"
        );
        assert_eq!(admin_snapshot(&app).await, before, "{url} changed nothing");
    }

    // Names are judged on the addresses they resolve to, at each connection: `localhost`, and a
    // name the operator pinned to 127.0.0.1.
    for (name, host) in [("by-localhost", "localhost"), ("by-name", "receiver.test")] {
        let url = format!("http://{host}:{port}/hook");
        admin.create_client("acme", name, "staff", Some(&url)).await;
        let (_, creds) = admin.issue_key("acme", name).await;
        let mut device = app.enrol(&creds, "ada").await;
        let created = app.create_ok(&creds, "authenticate", json!({ "user_id": "ada" })).await;
        let id = created["id"].as_str().unwrap().to_owned();
        let page = device.poll(5).await.unwrap();
        let item = page.items.iter().find(|i| i.command.id.as_str() == id).unwrap();
        device
            .respond(&item.command.id, Decision::Approved, None)
            .await
            .unwrap();

        eventually(Duration::from_secs(10), "the attempt is recorded", || async {
            let (_, list) = app.get(&creds, &format!("/command/{id}/callbacks")).await;
            list[0]["attempts"].as_i64().unwrap_or(0) >= 1
        })
        .await;
        let log = app.get(&creds, &format!("/command/{id}/callbacks")).await.1[0].clone();
        let attempt = &log["attempt_log"][0];
        assert_eq!(
            attempt["error"], "refused by the egress policy: not a public address",
            "{log}"
        );
        assert!(attempt.get("status_code").is_none(), "{log}");
        let text = log.to_string();
        assert!(
            !text.contains("INTERNAL-SECRET") && !text.contains(&port.to_string()),
            "{text}"
        );

        // Redelivery on demand is refused the same way: no probe on request either.
        let event = log["id"].as_str().unwrap();
        let (status, _) = app
            .post(&creds, &format!("/command/callbacks/{event}/redeliver"), json!({}))
            .await;
        assert!(status < 300, "redeliver: {status}");
        eventually(Duration::from_secs(10), "the redelivery is recorded", || async {
            let (_, list) = app.get(&creds, &format!("/command/{id}/callbacks")).await;
            list[0]["attempts"].as_i64().unwrap_or(0) >= 2
        })
        .await;
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "no connection reached the internal listener"
    );
}

#[tokio::test]
async fn the_operator_can_allow_an_internal_receiver_and_its_answer_is_never_kept() {
    let (port, seen) = watched_listener().await;
    let app = TestApp::start_with(|s| {
        s.admin.operator_key = Some(hermod::config::Secret::new(OPERATOR_KEY));
        s.egress.allow = vec!["127.0.0.1".into()];
    })
    .await;
    let operator = AdminApi::operator(&app.base);
    let admin = operator.create_tenant("acme", json!({})).await;
    admin.create_group("acme", "staff").await;
    let url = format!("http://127.0.0.1:{port}/hook");
    admin.create_client("acme", "allowed", "staff", Some(&url)).await;
    let (_, creds) = admin.issue_key("acme", "allowed").await;
    let mut device = app.enrol(&creds, "ada").await;
    let created = app.create_ok(&creds, "authenticate", json!({ "user_id": "ada" })).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let page = device.poll(5).await.unwrap();
    device
        .respond(&page.items[0].command.id, Decision::Approved, None)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the callback is delivered", || async {
        let (_, list) = app.get(&creds, &format!("/command/{id}/callbacks")).await;
        list[0]["status"] == "delivered"
    })
    .await;
    let log = app.get(&creds, &format!("/command/{id}/callbacks")).await.1[0].clone();
    assert!(seen.load(Ordering::SeqCst) >= 1);
    assert_eq!(log["attempt_log"][0]["status_code"], 200);
    assert!(!log.to_string().contains("INTERNAL-SECRET"), "{log}");
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test]
async fn a_receiver_answering_400_mb_costs_no_memory() {
    // The receiver answers 200 with a 400 MB body, streamed from one small buffer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut request = vec![0u8; 16 * 1024];
                let _ = socket.read(&mut request).await;
                let total: usize = 400 << 20;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n");
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut written = 0;
                while written < total {
                    if socket.write_all(&chunk).await.is_err() {
                        break;
                    }
                    written += chunk.len();
                    counter.fetch_add(chunk.len(), Ordering::Relaxed);
                }
            });
        }
    });
    let app = TestApp::start_with(|s| s.allowed_clients[0].callback_url = Some(url.clone())).await;
    let mut device = app.enrol(&Creds::idm(), "ada").await;
    let before = rss_bytes();
    let created = app
        .create_ok(&Creds::idm(), "authenticate", json!({ "user_id": "ada" }))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let page = device.poll(5).await.unwrap();
    device
        .respond(&page.items[0].command.id, Decision::Approved, None)
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "the callback is delivered", || async {
        let (_, list) = app.get(&Creds::idm(), &format!("/command/{id}/callbacks")).await;
        list[0]["status"] == "delivered"
    })
    .await;
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 100 << 20, "memory grew by {} MB", grown >> 20);
    assert!(
        sent.load(Ordering::Relaxed) < 400 << 20,
        "the answer was not read to its end"
    );
}
