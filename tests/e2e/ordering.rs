//! Cursors that never skip: two replicas on one PostgreSQL database, many concurrent writers,
//! and readers that page with a cursor. Every command reaches each device it is addressed to
//! exactly once and in the order its creator created them; every audit record is read once.
//!
//! These run in the PostgreSQL pass only: the flaw they guard against (a sequence whose values
//! become visible out of order) cannot happen behind SQLite's one writer, and each run takes
//! tens of seconds.

use crate::harness::*;
use hermod_device::Device;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SERVER_KEY: &str = "Y3Vyc29ycyBuZXZlciBza2lwIGFueXRoaW5nIGluIHRoZSB0ZXN0cw==";
const CREATORS: usize = 32;
const COMMANDS: usize = 10_000;

async fn two_replicas(tweak: fn(&mut hermod::Settings)) -> (TestApp, TestApp) {
    let db = TestDb::postgres().await;
    let url = db.url.clone();
    let key = |s: &mut hermod::Settings| s.server_key = Some(hermod::config::Secret::new(SERVER_KEY));
    let a = TestApp::start_on(db, tempfile::tempdir().unwrap(), |s| {
        key(s);
        tweak(s)
    })
    .await;
    let b = TestApp::start_on(TestDb::borrowed(&url), tempfile::tempdir().unwrap(), |s| {
        key(s);
        tweak(s)
    })
    .await;
    (a, b)
}

/// Which creator made a command, and its place in that creator's sequence.
#[derive(Debug, Clone, Copy)]
struct Made {
    creator: usize,
    n: usize,
}

/// Every command created: who made it, and the devices (by index) it is addressed to.
type Ledger = HashMap<String, (Made, Vec<usize>)>;

#[tokio::test]
async fn every_command_reaches_its_devices_once_and_in_order_across_two_replicas() {
    if !on_postgres() {
        println!("runs in the PostgreSQL pass");
        return;
    }
    let (a, b) = two_replicas(|s| s.commands.max_wait = 5).await;
    let idm = Creds::idm();
    // Two users with two devices each; one device of each user polls each replica.
    let mut devices = Vec::new();
    for user in ["ada", "bob"] {
        for replica in [&a, &b] {
            let provision = a.create_ok(&idm, "provision", json!({ "user_id": user })).await;
            let token = provision["enrolment"]["token"].as_str().unwrap();
            let device = Device::enrol(token, Some(&replica.ms_url()), None).await.unwrap();
            devices.push((user, device));
        }
    }
    // Half the commands go to a user (every device of the user gets them), half to one device.
    let targets: Vec<(Value, Vec<usize>)> = vec![
        (json!({ "user_id": "ada" }), vec![0, 1]),
        (json!({ "user_id": "bob" }), vec![2, 3]),
        (json!({ "device_id": devices[0].1.state.device_id }), vec![0]),
        (json!({ "device_id": devices[1].1.state.device_id }), vec![1]),
        (json!({ "device_id": devices[2].1.state.device_id }), vec![2]),
        (json!({ "device_id": devices[3].1.state.device_id }), vec![3]),
    ];
    let targets = Arc::new(targets);
    let made: Arc<std::sync::Mutex<Ledger>> = Arc::default();

    // Devices long-poll until the creators are done and their mailbox is drained.
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut pollers = Vec::new();
    for (index, (_, device)) in devices.into_iter().enumerate() {
        let finished = Arc::clone(&finished);
        let mut device = Device::from_state(device.state.clone()).unwrap();
        pollers.push(tokio::spawn(async move {
            let mut seen: Vec<String> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(240);
            loop {
                let done_before_poll = finished.load(std::sync::atomic::Ordering::SeqCst);
                let page = device.poll(2).await.unwrap();
                let got = page.items.len();
                seen.extend(page.items.into_iter().map(|i| i.command.id.to_string()));
                // An empty page after the creators finished means the mailbox is drained.
                if done_before_poll && got == 0 {
                    return (index, seen);
                }
                assert!(Instant::now() < deadline, "device {index} still polling");
            }
        }));
    }

    let mut creators = Vec::new();
    for creator in 0..CREATORS {
        let (made, targets) = (Arc::clone(&made), Arc::clone(&targets));
        let base = if creator % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let token = idm.0.token();
        creators.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for n in 0..COMMANDS / CREATORS + 1 {
                let i = creator * (COMMANDS / CREATORS + 1) + n;
                if i >= COMMANDS {
                    break;
                }
                let (body, to) = &targets[i % targets.len()];
                let mut body = body.clone();
                body["timeout"] = json!(600);
                body["lifespan"] = json!(1200);
                let response = http
                    .post(format!("{base}/command/ping"))
                    .header("x-api-key", &token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
                let created: Value = response.json().await.unwrap();
                made.lock().unwrap().insert(
                    created["id"].as_str().unwrap().to_owned(),
                    (Made { creator, n }, to.clone()),
                );
            }
        }));
    }
    for c in creators {
        c.await.unwrap();
    }
    finished.store(true, std::sync::atomic::Ordering::SeqCst);
    let made = made.lock().unwrap().clone();
    assert_eq!(made.len(), COMMANDS);

    let mut missing = 0;
    for poller in pollers {
        let (index, seen) = poller.await.unwrap();
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "device {index} got a command twice");
        let expected: HashSet<&String> = made
            .iter()
            .filter(|(_, (_, to))| to.contains(&index))
            .map(|(id, _)| id)
            .collect();
        missing += expected.difference(&unique).count();
        assert!(unique.is_subset(&expected), "device {index} got another's command");
        // Per creator, the commands arrive in the order they were created.
        let mut last: HashMap<usize, usize> = HashMap::new();
        for id in &seen {
            let (m, _) = made[id];
            if let Some(prev) = last.insert(m.creator, m.n) {
                assert!(
                    prev < m.n,
                    "device {index}: creator {} sent {} after {}",
                    m.creator,
                    m.n,
                    prev
                );
            }
        }
    }
    assert_eq!(
        missing, 0,
        "commands that never reached a device they were addressed to"
    );
}

#[tokio::test]
async fn every_audit_record_is_read_once_while_two_replicas_write() {
    if !on_postgres() {
        println!("runs in the PostgreSQL pass");
        return;
    }
    const GROUPS: usize = 2_000;
    let (a, b) = two_replicas(|s| s.admin.operator_key = Some(hermod::config::Secret::new(OPERATOR_KEY))).await;
    let admin_a = AdminApi::operator(&a.base).create_tenant("acme", json!({})).await;
    let admin_b = AdminApi::with_token(&b.base, &admin_a.token);
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // A reader follows the log with its cursor, alternating replicas, while writers add to it.
    let reader = {
        let (ra, rb, finished) = (admin_a.clone(), admin_b.clone(), Arc::clone(&finished));
        tokio::spawn(async move {
            let mut cursor = 0i64;
            let mut seen: Vec<i64> = Vec::new();
            let mut groups: Vec<String> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(240);
            for turn in 0.. {
                let done_before_read = finished.load(std::sync::atomic::Ordering::SeqCst);
                let api = if turn % 2 == 0 { &ra } else { &rb };
                let page = api
                    .ok(
                        reqwest::Method::GET,
                        &format!("/admin/tenants/acme/audit?after={cursor}&limit=50"),
                        None,
                        200,
                    )
                    .await;
                let items = page["items"].as_array().unwrap();
                for item in items {
                    seen.push(item["seq"].as_i64().unwrap());
                    if item["action"] == "group.create" {
                        groups.push(item["target"].as_str().unwrap().to_owned());
                    }
                }
                cursor = page["next_cursor"].as_i64().unwrap();
                if done_before_read && items.is_empty() {
                    break;
                }
                assert!(Instant::now() < deadline, "the reader is still reading");
            }
            (seen, groups)
        })
    };
    let mut writers = Vec::new();
    for w in 0..CREATORS {
        let api = if w % 2 == 0 { admin_a.clone() } else { admin_b.clone() };
        writers.push(tokio::spawn(async move {
            for n in 0..GROUPS / CREATORS {
                api.create_group("acme", &format!("g{w}-{n}")).await;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    finished.store(true, std::sync::atomic::Ordering::SeqCst);
    let (seen, groups) = reader.await.unwrap();
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "an audit record was read twice");
    let groups: HashSet<String> = groups.into_iter().collect();
    let written = GROUPS / CREATORS * CREATORS;
    assert_eq!(
        groups.len(),
        written,
        "{} group.create records were never read by the cursor",
        written - groups.len()
    );
}
