//! Retention: rows past their period are removed by the sweeper, and nothing still owed or in
//! use is touched. The rows are made through the API by one app; a second app on the same
//! database, with every period at zero, sweeps them; the test counts what is left.

use crate::harness::*;
use hermod_shared::wire::Decision;
use serde_json::json;
use std::time::Duration;

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(&app.state.db.write)
        .await
        .unwrap()
}

async fn approve_latest(device: &mut hermod_device::Device) {
    let page = device.poll(5).await.unwrap();
    let item = page.items.last().unwrap();
    assert_eq!(
        device
            .respond(&item.command.id, Decision::Approved, None)
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn rows_past_their_period_are_removed_and_nothing_owed_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let url = db.url.clone();
    let app = TestApp::start_on(db, dir, |s| {
        s.admin.operator_key = Some(hermod::config::Secret::new(OPERATOR_KEY));
        s.callbacks.retry_schedule = vec![3600.0];
    })
    .await;
    // Audit records: a tenant made through the admin API.
    AdminApi::operator(&app.base).create_tenant("acme", json!({})).await;
    // A delivered callback (idm), a dead letter (da: its receiver answers 410), a callback
    // still owed (other: its receiver answers 503, retried in an hour).
    app.receiver.behave("/da", Duration::ZERO, 410);
    app.receiver.behave("/other", Duration::ZERO, 503);
    let mut ada = app.enrol(&Creds::idm(), "ada").await;
    let revoked = app.enrol(&Creds::idm(), "ada").await;
    let mut olga = app.enrol(&Creds::other(), "olga").await;
    let (status, _) = app
        .delete(&Creds::idm(), &format!("/command/devices/{}", revoked.state.device_id))
        .await;
    assert!(status < 300);
    for creds in [Creds::idm(), Creds::da()] {
        app.create_ok(&creds, "authenticate", json!({ "user_id": "ada" })).await;
        approve_latest(&mut ada).await;
    }
    app.create_ok(&Creds::other(), "authenticate", json!({ "user_id": "olga" }))
        .await;
    approve_latest(&mut olga).await;
    // The enrolments (provision commands) sent callbacks too; wait until every event has had
    // its first attempt.
    eventually(Duration::from_secs(10), "every callback was attempted", || async {
        count(&app, "SELECT COUNT(*) FROM callback_events WHERE attempts = 0").await == 0
    })
    .await;
    let open = app
        .create_ok(&Creds::idm(), "authenticate", json!({ "user_id": "ada" }))
        .await;

    let delivered = count(&app, "SELECT COUNT(*) FROM callback_events WHERE status = 'delivered'").await;
    let dead = count(&app, "SELECT COUNT(*) FROM callback_events WHERE status = 'dead'").await;
    let pending = count(&app, "SELECT COUNT(*) FROM callback_events WHERE status = 'pending'").await;
    let audit = count(&app, "SELECT COUNT(*) FROM audit_log").await;
    assert!(
        delivered >= 2 && dead >= 1 && pending >= 1 && audit >= 1,
        "{delivered} {dead} {pending} {audit}"
    );
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM devices WHERE revoked_at IS NOT NULL").await,
        1
    );
    let pending_attempts = count(
        &app,
        "SELECT COUNT(*) FROM callback_attempts a JOIN callback_events e ON e.id = a.event_id WHERE e.status = 'pending'",
    )
    .await;

    // A second app on the same database keeps nothing finished.
    let sweeper = TestApp::start_on(TestDb::borrowed(&url), tempfile::tempdir().unwrap(), |s| {
        s.retention.interval = 0.05;
        s.retention.batch = 1;
        s.retention.callbacks = 0;
        s.retention.dead_callbacks = 0;
        s.retention.audit = 0;
        s.retention.revoked_devices = 0;
    })
    .await;
    eventually(Duration::from_secs(20), "finished rows are removed", || async {
        count(
            &sweeper,
            "SELECT COUNT(*) FROM callback_events WHERE status <> 'pending'",
        )
        .await
            == 0
            && count(&sweeper, "SELECT COUNT(*) FROM audit_log").await == 0
            && count(&sweeper, "SELECT COUNT(*) FROM devices WHERE revoked_at IS NOT NULL").await == 0
    })
    .await;
    // Their attempts went with them; what is owed or in use stays.
    assert_eq!(
        count(&sweeper, "SELECT COUNT(*) FROM callback_attempts").await,
        pending_attempts
    );
    assert_eq!(
        count(
            &sweeper,
            "SELECT COUNT(*) FROM callback_events WHERE status = 'pending'"
        )
        .await,
        pending
    );
    assert_eq!(
        count(&sweeper, "SELECT COUNT(*) FROM devices WHERE revoked_at IS NULL").await,
        2
    );
    let (status, body) = app
        .get(&Creds::idm(), &format!("/command/{}", open["id"].as_str().unwrap()))
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pending")));
    let removed = metric(&sweeper.base, "hermod_retention_removed_total").await;
    assert!(removed >= (delivered + dead + audit + 1) as u64, "{removed}");
}
