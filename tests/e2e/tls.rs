//! TLS in the process, from the PKCS12 key store of the seeds' `server.ssl` section.

use crate::certs::TestPki;
use crate::harness::*;
use hermod::config::SslSettings;
use hermod::Application;
use serde_json::json;

fn ssl(dir: &std::path::Path, pki: &TestPki, password: &str) -> SslSettings {
    let path = dir.join("smartidtls.p12");
    std::fs::write(&path, pki.pkcs12("changeit")).unwrap();
    SslSettings {
        enabled: true,
        key_store: Some(path),
        key_store_password: Some(password.into()),
        key_store_type: Some("PKCS12".to_owned()),
    }
}

#[tokio::test]
async fn serves_https_with_the_pkcs12_key_store_and_the_whole_api_works_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let pki = TestPki::new();
    let mut settings = test_settings(dir.path(), &receiver);
    settings.server.ssl = ssl(dir.path(), &pki, "changeit");
    let app = Application::build(settings).await.unwrap();
    let port = app.port();
    tokio::spawn(app.run_until(std::future::pending()));

    let trusting = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let base = format!("https://localhost:{port}");
    let provision = trusting
        .post(format!("{base}/hermod/rest/command/provision"))
        .header("x-api-key", Creds::idm().0.token())
        .json(&json!({ "user_id": "quinn" }))
        .send()
        .await
        .unwrap();
    assert_eq!(provision.status(), 201);
    let body: serde_json::Value = provision.json().await.unwrap();
    assert!(
        body["enrolment"]["link"].as_str().unwrap().contains("https%3A%2F%2F"),
        "the default public URL is https"
    );

    // A client that does not trust the CA is refused the handshake; plain HTTP gets no API.
    let untrusting = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    assert!(untrusting.get(format!("{base}/health")).send().await.is_err());
    let plain = reqwest::get(format!("http://localhost:{port}/health")).await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}

#[tokio::test]
async fn a_wrong_key_store_password_or_a_file_that_is_not_pkcs12_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let pki = TestPki::new();

    let mut settings = test_settings(dir.path(), &receiver);
    settings.server.ssl = ssl(dir.path(), &pki, "wrong password");
    let err = Application::build(settings).await.err().expect("refused").to_string();
    assert!(err.contains("not a PKCS12 key store that this password opens"), "{err}");
    assert!(!err.contains("wrong password"), "the password is not echoed");

    let mut settings = test_settings(dir.path(), &receiver);
    let pem = dir.path().join("server.pem");
    std::fs::write(&pem, &pki.server_cert_pem).unwrap();
    settings.server.ssl = SslSettings {
        key_store: Some(pem),
        ..ssl(dir.path(), &pki, "changeit")
    };
    let err = Application::build(settings).await.err().expect("refused").to_string();
    assert!(err.contains("is not a PKCS12 key store"), "{err}");

    let mut settings = test_settings(dir.path(), &receiver);
    settings.server.ssl = SslSettings {
        key_store_type: Some("JKS".into()),
        ..ssl(dir.path(), &pki, "changeit")
    };
    let err = Application::build(settings).await.err().expect("refused").to_string();
    assert!(err.contains("use a PKCS12 key store"), "{err}");
}

#[tokio::test]
async fn over_tls_a_stalled_handshake_is_closed_within_the_header_timeout_and_shutdown_drains_long_polls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let pki = TestPki::new();
    let mut settings = test_settings(dir.path(), &receiver);
    settings.server.ssl = ssl(dir.path(), &pki, "changeit");
    settings.server.header_read_timeout = 1.0;
    settings.server.shutdown_grace = 60.0;
    let app = Application::build(settings).await.unwrap();
    let port = app.port();
    let state = app.state().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));

    // A TLS handshake begun and never finished is closed like half-sent headers are.
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01, 0x00, 0x40]).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), stalled.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");

    // A long-poll over TLS is answered at once at shutdown, and the server stops.
    let trusting = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let base = format!("https://localhost:{port}");
    let link = provision_link(&trusting, &base, &Creds::idm(), "tess").await;
    let state_dev = hermod_device::Device::enrol_with(trusting.clone(), &link, None, None).await;
    let mut device = state_dev.unwrap();
    let poll = tokio::spawn(async move { device.poll(60).await });
    wait_until(std::time::Duration::from_secs(5), "the long-poll waits", || {
        state.long_polls.open() == 1
    })
    .await;
    let started = std::time::Instant::now();
    stop.send(()).unwrap();
    assert!(poll.await.unwrap().unwrap().items.is_empty());
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("stops within seconds")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
