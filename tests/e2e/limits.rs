//! The server's stated limits, over real connections: header timeout, connection caps,
//! long-poll caps, body timeout, and a shutdown that drains within its grace.

use crate::harness::*;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the server has closed `socket` (EOF or reset), waiting at most `within`.
async fn closed_within(socket: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(within, socket.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An answer (e.g. 408) before the close: keep reading until the close.
            Ok(Ok(_)) => continue,
        }
    }
}

async fn health(base: &str) -> bool {
    // A fresh connection each time: the one a server keeps alive would hide a full accept queue.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    matches!(http.get(format!("{base}/health")).send().await, Ok(r) if r.status() == 200)
}

#[tokio::test]
async fn two_thousand_half_sent_requests_are_closed_within_the_header_timeout_while_health_answers() {
    let app = TestApp::start_with(|s| {
        s.server.header_read_timeout = 1.0;
        s.server.max_connections = 5_000;
        s.server.max_connections_per_ip = 5_000;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        // Headers begun, never finished.
        s.write_all(b"GET /health HTTP/1.1\r\nHost: hermod\r\nX-Slow: ")
            .await
            .unwrap();
        sockets.push(s);
    }
    let opened = started.elapsed();

    // /health answers on new connections while the 2,000 are held.
    let prober = {
        let base = app.base.clone();
        tokio::spawn(async move {
            let mut answered = 0;
            let until = Instant::now() + Duration::from_millis(1_500);
            while Instant::now() < until {
                assert!(
                    health(&base).await,
                    "/health did not answer while 2,000 connections stalled"
                );
                answered += 1;
            }
            answered
        })
    };

    // Every stalled connection is closed within the header timeout (plus slack for 2 cores).
    let deadline = Duration::from_secs(1) + opened + Duration::from_secs(10);
    for (i, socket) in sockets.iter_mut().enumerate() {
        let left = deadline.saturating_sub(started.elapsed());
        assert!(
            closed_within(socket, left).await,
            "connection {i} still open {:?} after it was opened",
            started.elapsed()
        );
    }
    assert!(prober.await.unwrap() > 0);
    assert!(health(&app.base).await);
}

#[tokio::test]
async fn connections_over_the_per_address_and_total_caps_are_closed_at_once() {
    let app = TestApp::start_with(|s| {
        s.server.max_connections_per_ip = 3;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    // The fourth from the same address: closed before it could send anything.
    let mut fourth = TcpStream::connect(&addr).await.unwrap();
    assert!(closed_within(&mut fourth, Duration::from_secs(5)).await);
    // One place freed: a request gets through again (the accept loop sees the close first).
    drop(held.pop());
    eventually(Duration::from_secs(5), "a freed place serves", || health(&app.base)).await;
    eventually(Duration::from_secs(5), "/metrics counts the refusal", || async {
        metric(&app.base, "hermod_connections_refused_total").await > 0
    })
    .await;
    drop(held);

    let app = TestApp::start_with(|s| {
        s.server.max_connections = 2;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let _a = TcpStream::connect(&addr).await.unwrap();
    let _b = TcpStream::connect(&addr).await.unwrap();
    let mut third = TcpStream::connect(&addr).await.unwrap();
    assert!(closed_within(&mut third, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_refused() {
    let app = TestApp::start_with(|s| s.server.body_read_timeout = 0.5).await;
    let before = snapshot(&app).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /command/authenticate HTTP/1.1\r\nHost: hermod\r\nx-api-key: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"user_id\"",
        Creds::idm().0.token()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn a_devices_newer_long_poll_releases_its_oldest_and_clients_get_429_over_their_cap() {
    let app = TestApp::start_with(|s| {
        s.long_polls.per_device = 1;
        s.long_polls.per_client = 2;
    })
    .await;
    let device = app.enrol(&Creds::idm(), "lea").await;

    // Device: the first long-poll is answered (empty) as soon as a second one starts.
    let mut first = device.clone();
    let older = tokio::spawn(async move { first.poll(30).await.unwrap() });
    wait_until(Duration::from_secs(5), "the first long-poll waits", || {
        app.state.long_polls.open() == 1
    })
    .await;
    let started = Instant::now();
    let mut second = device.clone();
    let newer = tokio::spawn(async move { second.poll(30).await.unwrap() });
    let page = older.await.unwrap();
    assert!(page.items.is_empty());
    assert!(started.elapsed() < Duration::from_secs(10), "released, not timed out");
    // The newer one still waits, and a command wakes it.
    let created = app
        .create_ok(&Creds::idm(), "authenticate", json!({ "user_id": "lea" }))
        .await;
    let page = newer.await.unwrap();
    assert_eq!(page.items[0].command.id.as_str(), created["id"].as_str().unwrap());

    // Client: two status long-polls wait; the third is refused with 429 and Retry-After.
    let id = created["id"].as_str().unwrap().to_owned();
    let waits: Vec<_> = (0..2)
        .map(|_| {
            let (base, id) = (app.base.clone(), id.clone());
            tokio::spawn(async move {
                reqwest::Client::new()
                    .get(format!("{base}/command/{id}?wait=30"))
                    .header("x-api-key", Creds::idm().0.token())
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    wait_until(Duration::from_secs(5), "two status long-polls wait", || {
        app.state.long_polls.open() == 2
    })
    .await;
    let refused = reqwest::Client::new()
        .get(format!("{}/command/{id}?wait=30", app.base))
        .header("x-api-key", Creds::idm().0.token())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    // Without `wait`, a read is no long-poll and is never refused.
    let (status, _) = app.get(&Creds::idm(), &format!("/command/{id}")).await;
    assert_eq!(status, 200);
    app.delete(&Creds::idm(), &format!("/command/{id}")).await;
    for w in waits {
        assert_eq!(w.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn shutdown_answers_long_polls_at_once_and_drains_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let mut settings = test_settings(dir.path(), &receiver);
    let db = TestDb::new(dir.path()).await;
    settings.database.url = db.url.clone();
    // A long grace: the drain must come from releasing the long-polls, not from the grace.
    settings.server.shutdown_grace = 60.0;
    let app = hermod::Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let link = provision_link(&reqwest::Client::new(), &base, &Creds::idm(), "max").await;
    let mut device = hermod_device::Device::enrol(&link, None, None).await.unwrap();
    let poll = tokio::spawn(async move { device.poll(60).await });
    wait_until(Duration::from_secs(5), "the long-poll waits", || {
        state.long_polls.open() == 1
    })
    .await;
    let started = Instant::now();
    stop.send(()).unwrap();
    let page = poll.await.unwrap().expect("the long-poll is answered, not cut");
    assert!(page.items.is_empty());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops within seconds")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
}
