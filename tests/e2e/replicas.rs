//! Several backend replicas on one PostgreSQL database (these tests use PostgreSQL in every
//! pass of the suite).

use crate::harness::*;
use hermod_device::Device;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const SERVER_KEY: &str = "cmVwbGljYXMgc2hhcmUgdGhpcyBzZXJ2ZXIga2V5IGZvciB0ZXN0cw==";

#[tokio::test]
async fn a_command_created_on_one_replica_wakes_a_device_long_polling_another() {
    let db = TestDb::postgres().await;
    let url = db.url.clone();
    let a = TestApp::start_on(db, tempfile::tempdir().unwrap(), |s| {
        s.server_key = Some(hermod::config::Secret::new(SERVER_KEY))
    })
    .await;
    let b = TestApp::start_on(TestDb::borrowed(&url), tempfile::tempdir().unwrap(), |s| {
        s.server_key = Some(hermod::config::Secret::new(SERVER_KEY))
    })
    .await;
    let idm = Creds::idm();
    let provision = a.create_ok(&idm, "provision", json!({ "user_id": "rhea" })).await;
    let token = provision["enrolment"]["token"].as_str().unwrap();
    // The device enrols and polls on replica B; commands come in on replica A.
    let mut device = Device::enrol(token, Some(&b.ms_url()), None).await.unwrap();
    let (a, idm) = (&a, &idm);
    assert_woken_by_a_new_command(&mut device, &b.state, move || async move {
        a.create_ok(idm, "authenticate", json!({ "user_id": "rhea" })).await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    })
    .await;
}

#[tokio::test]
async fn a_burst_of_1000_callbacks_through_two_replicas_survives_killing_one_of_them() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.behave("/ws/hermod", Duration::from_millis(10), 204);
    let config = dir.path().join("hermod-conf.yml");
    std::fs::write(
        &config,
        format!(
            "server:\n  address: 127.0.0.1\nserver-key: {SERVER_KEY}\ncommands:\n  sweep-interval-ms: 100\n\
             callbacks:\n  request-timeout: 2\n  per-receiver-concurrency: 8\n\
             allowed-clients:\n  - client-id: idm\n    key: {IDM_KEY}\n    group: smartid\n    callback-url: {}\n",
            receiver.url
        ),
    )
    .unwrap();
    let mut first = hermod_serve(&config, dir.path(), &db.url);
    let second = hermod_serve(&config, dir.path(), &db.url);
    let token = Creds::idm().0.token();
    let provision: serde_json::Value =
        post_command(&first.base, &token, "provision", json!({ "user_id": "burst" })).await;
    let enrolment = provision["enrolment"]["token"].as_str().unwrap();
    Device::enrol(enrolment, Some(&format!("{}/ms", second.base)), None)
        .await
        .unwrap();

    // 1,000 commands, half through each replica, all expiring after a second: 1,000 callbacks.
    const BURST: usize = 1000;
    let mut ids = HashSet::new();
    for i in 0..BURST {
        let base = if i % 2 == 0 { &first.base } else { &second.base };
        let created: serde_json::Value = post_command(
            base,
            &token,
            "ping",
            json!({ "user_id": "burst", "timeout": 1, "lifespan": 600 }),
        )
        .await;
        ids.insert(created["id"].as_str().unwrap().to_owned());
    }
    let expired = |r: &Received| r.event().event_type == "command.expired";
    // Counting (not parsing) what arrived keeps this wait cheap while the burst runs.
    let started = Instant::now();
    while receiver.received().len() < 200 {
        assert!(started.elapsed() < Duration::from_secs(30), "the burst did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.child.kill().unwrap(); // SIGKILL, mid-burst
    first.child.wait().unwrap();
    let at_kill = receiver.received().iter().filter(|r| expired(r)).count();

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: HashSet<String> = receiver
            .received()
            .iter()
            .filter(|r| expired(r))
            .map(|r| r.event().data.id.to_string())
            .collect();
        if ids.is_subset(&seen) {
            break;
        }
        if Instant::now() > deadline {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
                .await
                .unwrap();
            let states: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT status, COUNT(*), MAX(claimed_until) - (extract(epoch from now()) * 1000)::bigint FROM callback_events GROUP BY status",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            let logs: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .map(|e| {
                    std::fs::read_to_string(e.path())
                        .unwrap()
                        .lines()
                        .rev()
                        .take(15)
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .collect();
            panic!(
                "{} of {BURST} delivered; outbox {states:?}; logs:\n{}",
                seen.len(),
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in receiver.received().iter().filter(|r| expired(r)) {
        *per_id.entry(r.header("webhook-id").to_owned()).or_default() += 1;
    }
    let duplicates: usize = per_id.values().map(|n| n - 1).sum();
    println!(
        "{BURST} callbacks through two replicas, one killed after {at_kill}: none missing, {duplicates} duplicates"
    );
    assert!(at_kill < BURST, "the kill came mid-burst");
    assert_eq!(
        per_id.len(),
        BURST,
        "one webhook-id per command: no event written twice"
    );
}
