//! Callback delivery: retried on the configured schedule with the same webhook-id until the
//! receiver takes it; `410 Gone` and an exhausted schedule leave a dead letter.

use crate::harness::*;
use hermod_shared::wire::Decision;
use serde_json::json;
use std::time::Duration;

/// Creates an authenticate command for `user`, has the device approve it, returns its id.
async fn approved_command(
    app: &TestApp,
    device: &mut hermod::device_sim::DeviceClient,
    user: &str,
) -> String {
    let created = app
        .create_ok(&Creds::idm(), "authenticate", json!({ "user_id": user }))
        .await;
    let page = device.poll(5).await.unwrap();
    assert_eq!(
        device
            .respond(&page.items[0].command.id, Decision::Approved, None)
            .await
            .unwrap()
            .status(),
        200
    );
    created["id"].as_str().unwrap().to_owned()
}

fn deliveries_of(app: &TestApp, id: &str) -> Vec<Received> {
    app.receiver
        .received()
        .into_iter()
        .filter(|r| r.event().data.id.as_str() == id)
        .collect()
}

async fn event_status(app: &TestApp, command_id: &str) -> (String, i64) {
    sqlx::query_as("SELECT status, attempts FROM callback_events WHERE command_id = $1")
        .bind(command_id)
        .fetch_one(&app.state.db.write)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_the_event_three_times_with_one_webhook_id_on_schedule() {
    // Schedule 0.2 s, 0.4 s, 0.8 s with ±20 % jitter (the harness's settings).
    let app = TestApp::start().await;
    let mut device = app.enrol(&Creds::idm(), "nina").await;
    app.receiver
        .wait_for(Duration::from_secs(5), |_| true)
        .await; // the provisioning callback
    app.receiver.fail_next(2);
    let id = approved_command(&app, &mut device, "nina").await;

    app.receiver
        .wait_for(Duration::from_secs(10), |r| {
            r.event().data.id.as_str() == id && deliveries_of(&app, &id).len() >= 3
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let got = deliveries_of(&app, &id);
    assert_eq!(got.len(), 3, "two failures and one success, nothing after");
    assert!(got
        .iter()
        .all(|r| r.header("webhook-id") == got[0].header("webhook-id")));
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps[0] >= Duration::from_millis(155) && gaps[0] < Duration::from_millis(450),
        "first retry after {:?}",
        gaps[0]
    );
    assert!(
        gaps[1] >= Duration::from_millis(315) && gaps[1] < Duration::from_millis(750),
        "second retry after {:?}",
        gaps[1]
    );
    for r in &got {
        verify_signature(r, IDM_SECRET).expect("every attempt is signed afresh");
    }
    assert_eq!(event_status(&app, &id).await, ("delivered".to_owned(), 3));
}

#[tokio::test]
async fn an_event_that_exhausts_its_retries_is_kept_as_a_dead_letter() {
    let app = TestApp::start().await;
    let mut device = app.enrol(&Creds::idm(), "omar").await;
    app.receiver
        .wait_for(Duration::from_secs(5), |_| true)
        .await;
    app.receiver.fail_next(100);
    let id = approved_command(&app, &mut device, "omar").await;
    // 1 attempt + 3 retries (0.2 + 0.4 + 0.8 s, ±20 %).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(deliveries_of(&app, &id).len(), 4);
    assert_eq!(event_status(&app, &id).await, ("dead".to_owned(), 4));
    let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM callback_attempts a JOIN callback_events e ON e.id = a.event_id WHERE e.command_id = $1")
        .bind(&id)
        .fetch_one(&app.state.db.write)
        .await
        .unwrap();
    assert_eq!(attempts, 4, "every attempt is logged");
}
