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

/// A poll passes the finished commands behind its cursor for good: with more than a page of
/// them (answered) before it, a new command still wakes the waiting device at once.
#[tokio::test]
async fn a_new_command_wakes_a_device_whose_cursor_has_a_page_of_finished_commands_behind_it() {
    let app = TestApp::start().await;
    let idm = Creds::idm();
    let mut device = app.enrol(&idm, "nora").await;
    for _ in 0..110 {
        app.create_ok(&idm, "ping", json!({ "user_id": "nora" })).await;
    }
    let mut answered = 0;
    while answered < 110 {
        let page = device.poll(5).await.unwrap();
        for item in page.items {
            let r = device
                .respond(&item.command.id, hermod_shared::wire::Decision::Approved, None)
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            answered += 1;
        }
    }
    // From the start of the mailbox again: 110 finished commands lie before anything new.
    device.state.cursor = 0;
    let before = app.state.wakeups.waiting();
    let mut poller = hermod_device::Device::from_state(device.state.clone()).unwrap();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let page = poller.poll(30).await.unwrap();
        (started.elapsed(), page)
    });
    wait_until(Duration::from_secs(10), "the long-poll waits", || {
        app.state.wakeups.waiting() >= before + 2
    })
    .await;
    let created = app.create_ok(&idm, "ping", json!({ "user_id": "nora" })).await;
    let (waited, page) = poll.await.unwrap();
    assert_eq!(page.items.len(), 1, "{page:?}");
    assert_eq!(page.items[0].command.id.as_str(), created["id"].as_str().unwrap());
    assert!(
        waited < Duration::from_secs(10),
        "woken by the command, not by the 30 s wait: {waited:?}"
    );
}
