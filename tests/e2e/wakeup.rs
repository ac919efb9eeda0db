//! A long-polling device is woken by a new command at once, not by a polling loop.

use crate::harness::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_long_polling_device_is_woken_by_a_new_command_not_by_its_timeout() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let mut device = app.enrol(&idm, "lena").await;
    let (app, idm) = (&app, &idm);
    assert_woken_by_a_new_command(&mut device, &app.state, move || async move {
        app.create_ok(idm, "authenticate", json!({ "user_id": "lena" })).await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    })
    .await;
}

#[tokio::test]
async fn an_empty_long_poll_waits_its_time_and_returns_empty() {
    let app = TestApp::start().await;
    let mut device = app.enrol(&Creds::idm(), "mia").await;
    let started = Instant::now();
    let page = device.poll(1).await.unwrap();
    let waited = started.elapsed();
    assert!(page.items.is_empty());
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}
