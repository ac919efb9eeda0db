//! Killed under load: `kill -9` of a `hermod serve` while clients create commands and a device
//! answers them, then a restart on the same database. Every command whose create was answered
//! 201 is still there, and every command whose answer was accepted still gets its callback. On
//! SQLite (its own pass) and on PostgreSQL (its pass).

use crate::harness::*;
use hermod_device::Device;
use hermod_shared::wire::Decision;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SERVER_KEY: &str = "a2lsbGVkIHVuZGVyIGxvYWQgYW5kIHN0YXJ0ZWQgYWdhaW4gaW4gdGVzdHM=";

#[tokio::test]
async fn a_kill_under_load_loses_no_accepted_command_and_no_callback_owed() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let receiver = Receiver::start().await;
    // A slow receiver taking two callbacks at a time, so that callbacks are owed (in the
    // outbox, not yet delivered) at the kill however fast the machine is.
    receiver.behave("/ws/hermod", Duration::from_millis(250), 204);
    let config = dir.path().join("hermod-conf.yml");
    std::fs::write(
        &config,
        format!(
            "server:\n  address: 127.0.0.1\nserver-key: {SERVER_KEY}\n\
             callbacks:\n  request-timeout: 2\n  per-receiver-concurrency: 2\n  retry-schedule: [0.2, 0.5, 1]\n\
             allowed-clients:\n  - client-id: idm\n    key: {IDM_KEY}\n    group: smartid\n    callback-url: {}\n",
            receiver.url
        ),
    )
    .unwrap();
    let first = hermod_serve(&config, dir.path(), &db.url);
    let token = Creds::idm().0.token();
    let provision: Value = post_command(&first.base, &token, "provision", json!({ "user_id": "kim" })).await;
    let enrolment = provision["enrolment"]["token"].as_str().unwrap();
    let device = Device::enrol(enrolment, Some(&format!("{}/ms", first.base)), None)
        .await
        .unwrap();

    let created: Arc<Mutex<HashSet<String>>> = Arc::default();
    let answered: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut creators = Vec::new();
    for _ in 0..8 {
        let (created, stop, base, token) = (
            Arc::clone(&created),
            Arc::clone(&stop),
            first.base.clone(),
            token.clone(),
        );
        creators.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::SeqCst) {
                let sent = http
                    .post(format!("{base}/command/authenticate"))
                    .header("x-api-key", &token)
                    .json(&json!({ "user_id": "kim", "timeout": 600, "lifespan": 1200 }))
                    .send()
                    .await;
                // Only a 201 promises anything; a request cut by the kill promises nothing.
                let Ok(r) = sent else { break };
                if r.status() != 201 {
                    break;
                }
                let Ok(body) = r.json::<Value>().await else { break };
                created.lock().unwrap().insert(body["id"].as_str().unwrap().to_owned());
            }
        }));
    }
    let answerer = {
        let (answered, stop) = (Arc::clone(&answered), Arc::clone(&stop));
        let mut device = Device::from_state(device.state.clone()).unwrap();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let Ok(page) = device.poll(1).await else { break };
                for item in page.items {
                    match device.respond(&item.command.id, Decision::Approved, None).await {
                        Ok(r) if r.status() == 200 => {
                            answered.lock().unwrap().insert(item.command.id.to_string());
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            }
        })
    };

    // Kill it mid-stream, once commands are flowing and callbacks are being delivered.
    eventually(Duration::from_secs(60), "load is flowing", || async {
        answered.lock().unwrap().len() >= 150 && receiver.received().len() >= 10
    })
    .await;
    let mut first = first;
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    for c in creators {
        c.await.unwrap();
    }
    answerer.await.unwrap();
    let created = created.lock().unwrap().clone();
    let answered = answered.lock().unwrap().clone();
    let approved_callbacks = |receiver: &Receiver| -> HashSet<String> {
        receiver
            .received()
            .iter()
            .map(|r| r.event())
            .filter(|e| e.event_type == "command.approved")
            .map(|e| e.data.id.to_string())
            .collect()
    };
    let owed = answered.difference(&approved_callbacks(&receiver)).count();
    assert!(owed > 0, "the kill came while callbacks were owed");
    receiver.behave_normally();

    let second = hermod_serve(&config, dir.path(), &db.url);
    let started = Instant::now();
    let http = reqwest::Client::new();
    let mut missing = Vec::new();
    for id in &created {
        let r = http
            .get(format!("{}/command/{id}", second.base))
            .header("x-api-key", &token)
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            missing.push(id.clone());
            continue;
        }
        if answered.contains(id) {
            let view: Value = r.json().await.unwrap();
            assert_eq!(view["status"], "approved", "{id}: an accepted answer was lost");
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} created commands are gone",
        missing.len(),
        created.len()
    );
    eventually(
        Duration::from_secs(60),
        "every answered command's callback arrived",
        || async { answered.is_subset(&approved_callbacks(&receiver)) },
    )
    .await;
    println!(
        "killed after {} creates and {} answers with {owed} callbacks owed; every command kept, \
         every callback delivered {:?} after the restart",
        created.len(),
        answered.len(),
        started.elapsed()
    );
}
