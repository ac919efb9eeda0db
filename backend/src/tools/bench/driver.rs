//! The load: simulated devices long-polling their mailboxes and answering at once, client
//! workers creating `authenticate` commands, and a callback receiver that records when each
//! command's callback arrived. The same code drives Hermod and the floor.
//!
//! Every command carries its sequence number in its payload, which the device sees in its
//! mailbox and the receiver in the callback's `data.payload`, so each stage's time is recorded
//! against it without waiting for the create's answer. Each worker keeps one command in flight
//! from its create to its callback (a closed loop of `concurrency` commands).

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hermod_device::Device;
use hermod_shared::webhook::{self, WebhookSecret};
use hermod_shared::wire::{Decision, MailboxEventKind};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::store::now_ms;

/// One HTTP client per role, each with its own connection pool.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(120))
        .build()
        .expect("an HTTP client")
}

/// Provisions user `user` through the client API and enrols a device with the link it returns.
async fn enrol(http: &reqwest::Client, base: &str, api_key: &str, user: &str) -> anyhow::Result<Device> {
    let created = http
        .post(format!("{base}/command/provision"))
        .header("x-api-key", api_key)
        .json(&json!({ "user_id": user }))
        .send()
        .await?;
    if created.status() != StatusCode::CREATED {
        bail!("provision refused: {}", created.status());
    }
    let created: Value = created.json().await?;
    let link = created["enrolment"]["link"].as_str().context("no enrolment link")?;
    Device::enrol_with(http.clone(), link, None, Some(&format!("bench {user}"))).await
}

/// What happened to each command of a run, by sequence number; times are microseconds since
/// the run began (0: not yet).
pub struct Track {
    t0: Instant,
    accepted: Vec<AtomicBool>,
    created: Vec<AtomicU64>,
    received: Vec<AtomicU64>,
    responded: Vec<AtomicU64>,
    called_back: Vec<AtomicU64>,
    callbacks: Vec<AtomicU32>,
    waiters: Mutex<HashMap<usize, oneshot::Sender<()>>>,
    failing: bool,
    secret: WebhookSecret,
    pub receiver_calls: AtomicU64,
    pub receiver_refused: AtomicU64,
    pub bad_signatures: AtomicU64,
    pub create_errors: AtomicU64,
    pub respond_errors: AtomicU64,
    pub poll_errors: AtomicU64,
}

fn atomics<T: Default>(n: usize) -> Vec<T> {
    (0..n).map(|_| T::default()).collect()
}

impl Track {
    pub fn new(commands: usize, failing: bool, secret: WebhookSecret) -> Arc<Self> {
        Arc::new(Self {
            t0: Instant::now(),
            accepted: atomics(commands),
            created: atomics(commands),
            received: atomics(commands),
            responded: atomics(commands),
            called_back: atomics(commands),
            callbacks: atomics(commands),
            waiters: Mutex::default(),
            failing,
            secret,
            receiver_calls: AtomicU64::new(0),
            receiver_refused: AtomicU64::new(0),
            bad_signatures: AtomicU64::new(0),
            create_errors: AtomicU64::new(0),
            respond_errors: AtomicU64::new(0),
            poll_errors: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64 + 1
    }

    fn mark(slot: Option<&AtomicU64>, t: u64) {
        if let Some(slot) = slot {
            let _ = slot.compare_exchange(0, t, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// The callback receiver: answers 204 (or, failing, 500 to every other call), checks the
/// signature, and records the first successful arrival of each command's callback.
async fn receive(State(track): State<Arc<Track>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let call = track.receiver_calls.fetch_add(1, Ordering::Relaxed);
    if track.failing && call % 2 == 1 {
        track.receiver_refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let at = track.now();
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let valid = webhook::verify(
        std::slice::from_ref(&track.secret),
        &h(webhook::HEADER_ID),
        &h(webhook::HEADER_TIMESTAMP),
        &h(webhook::HEADER_SIGNATURE),
        &body,
        now_ms() / 1000,
        webhook::TOLERANCE_SECS,
    );
    if valid.is_err() {
        track.bad_signatures.fetch_add(1, Ordering::Relaxed);
    }
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Some(seq) = event["data"]["payload"]["seq"].as_u64().map(|s| s as usize) {
        if let Some(count) = track.callbacks.get(seq) {
            Track::mark(track.called_back.get(seq), at);
            if count.fetch_add(1, Ordering::AcqRel) == 0 {
                if let Some(waiter) = track.waiters.lock().expect("lock").remove(&seq) {
                    let _ = waiter.send(());
                }
            }
        }
    }
    StatusCode::NO_CONTENT
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    pub url: String,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start_receiver(track: Arc<Track>) -> anyhow::Result<Receiver> {
    let router = axum::Router::new()
        .route("/{*path}", axum::routing::post(receive))
        .with_state(track);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/bench/callback", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(Receiver { url, task })
}

/// Enrols `count` devices through real provisioning commands, `parallel` at a time.
pub async fn enrol_devices(base: &str, api_key: &str, count: usize, parallel: usize) -> anyhow::Result<Vec<Device>> {
    use futures::StreamExt;
    let http = http_client();
    let devices: Vec<anyhow::Result<Device>> = futures::stream::iter(0..count)
        .map(|i| {
            let http = http.clone();
            async move { enrol(&http, base, api_key, &format!("bench-user-{i}")).await }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    devices.into_iter().collect()
}

/// `count` devices of one user, each through its own `provision`.
pub async fn enrol_devices_for(base: &str, api_key: &str, user: &str, count: usize) -> anyhow::Result<Vec<Device>> {
    let http = http_client();
    let mut devices = Vec::with_capacity(count);
    for _ in 0..count {
        devices.push(enrol(&http, base, api_key, user).await?);
    }
    Ok(devices)
}

/// A device that long-polls and answers every command at once (each answer in a task of its
/// own, so the next poll goes out without waiting).
async fn device_loop(mut device: Device, track: Arc<Track>, wait: u32) {
    loop {
        let page = match device.poll(wait).await {
            Ok(page) => page,
            Err(e) => {
                if track.poll_errors.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("bench: a poll failed: {e:#}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let at = track.now();
        for item in page.items {
            if item.kind != MailboxEventKind::Command {
                continue;
            }
            let Some(seq) = item.command.payload["seq"].as_u64().map(|s| s as usize) else {
                continue;
            };
            Track::mark(track.received.get(seq), at);
            let (device, track) = (device.clone(), Arc::clone(&track));
            tokio::spawn(async move {
                Track::mark(track.responded.get(seq), track.now());
                let answered = device
                    .respond(&item.command.id, Decision::Approved, Some(json!({ "simulated": true })))
                    .await
                    .map(|r| r.status());
                match answered {
                    Ok(s) if s.is_success() => {}
                    other => {
                        if track.respond_errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("bench: an answer failed: {other:?}");
                        }
                    }
                }
            });
        }
    }
}

/// p50, p99 and max, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples: usize,
}

impl Percentiles {
    pub fn of(mut micros: Vec<u64>) -> Option<Self> {
        if micros.is_empty() {
            return None;
        }
        micros.sort_unstable();
        let n = micros.len();
        let at = |q: f64| micros[((q * n as f64).ceil() as usize).clamp(1, n) - 1] as f64 / 1000.0;
        Some(Self {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: micros[n - 1] as f64 / 1000.0,
            samples: n,
        })
    }
}

/// What a load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadOutcome {
    pub commands: usize,
    pub accepted: usize,
    pub completed: usize,
    /// Accepted commands whose callback never arrived (after the drain).
    pub lost: usize,
    /// Callbacks that arrived more than once (at least once delivery; allowed).
    pub duplicates: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub create_to_receive: Option<Percentiles>,
    pub answer_to_callback: Option<Percentiles>,
    pub create_to_callback: Option<Percentiles>,
    pub receiver_calls: u64,
    pub receiver_refused: u64,
    pub bad_signatures: u64,
    pub create_errors: u64,
    pub respond_errors: u64,
    pub poll_errors: u64,
}

/// Runs `track`'s commands through `devices` with `concurrency` client workers, then waits up
/// to `drain` for callbacks still due.
pub async fn run_load(
    base: &str,
    api_key: &str,
    devices: &[Device],
    track: &Arc<Track>,
    concurrency: usize,
    drain: Duration,
    pace: Option<Duration>,
) -> LoadOutcome {
    let total = track.created.len();
    let pollers: Vec<JoinHandle<()>> = devices
        .iter()
        .map(|d| tokio::spawn(device_loop(d.clone(), Arc::clone(track), 30)))
        .collect();
    // Let every device's first poll reach the server before the clock starts.
    tokio::time::sleep(Duration::from_millis(500 + devices.len() as u64)).await;

    let started = track.now();
    let next = Arc::new(AtomicUsize::new(0));
    let devices = Arc::new(devices.to_vec());
    let client_http = http_client();
    let url = format!("{base}/command/authenticate");
    let workers: Vec<JoinHandle<()>> = match pace {
        // Open loop: one create every `interval`, whatever the server's pace (a soak).
        Some(interval) => {
            let (http, track, devices, url, key) = (
                client_http.clone(),
                Arc::clone(track),
                Arc::clone(&devices),
                url.clone(),
                api_key.to_owned(),
            );
            vec![tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                let mut creates = Vec::new();
                for seq in 0..total {
                    tokio::time::sleep_until(start + interval * seq as u32).await;
                    let (http, track, devices, url, key) = (
                        http.clone(),
                        Arc::clone(&track),
                        Arc::clone(&devices),
                        url.clone(),
                        key.clone(),
                    );
                    creates.push(tokio::spawn(async move {
                        create(&http, &url, &key, &devices[seq % devices.len()], seq, &track).await;
                    }));
                }
                for c in creates {
                    let _ = c.await;
                }
            })]
        }
        // Closed loop: each worker keeps one command in flight from its create to its callback.
        None => (0..concurrency.max(1))
            .map(|_| {
                let (http, track, next, devices) = (
                    client_http.clone(),
                    Arc::clone(track),
                    Arc::clone(&next),
                    Arc::clone(&devices),
                );
                let (url, key) = (url.clone(), api_key.to_owned());
                tokio::spawn(async move {
                    loop {
                        let seq = next.fetch_add(1, Ordering::Relaxed);
                        if seq >= total {
                            return;
                        }
                        let (tx, rx) = oneshot::channel();
                        track.waiters.lock().expect("lock").insert(seq, tx);
                        if !create(&http, &url, &key, &devices[seq % devices.len()], seq, &track).await {
                            track.waiters.lock().expect("lock").remove(&seq);
                            continue;
                        }
                        let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
                    }
                })
            })
            .collect(),
    };
    for w in workers {
        let _ = w.await;
    }
    let deadline = Instant::now() + drain;
    let outstanding = |t: &Track| {
        (0..total)
            .filter(|&s| t.accepted[s].load(Ordering::Acquire) && t.callbacks[s].load(Ordering::Acquire) == 0)
            .count()
    };
    while outstanding(track) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for p in pollers {
        p.abort();
    }

    let get = |v: &[AtomicU64], s: usize| v[s].load(Ordering::Acquire);
    let accepted: Vec<usize> = (0..total)
        .filter(|&s| track.accepted[s].load(Ordering::Acquire))
        .collect();
    let completed: Vec<usize> = accepted
        .iter()
        .copied()
        .filter(|&s| track.callbacks[s].load(Ordering::Acquire) > 0)
        .collect();
    let span = |from: &[AtomicU64], to: &[AtomicU64]| {
        Percentiles::of(
            completed
                .iter()
                .filter_map(|&s| {
                    let (a, b) = (get(from, s), get(to, s));
                    (a > 0 && b > 0).then(|| b.saturating_sub(a))
                })
                .collect(),
        )
    };
    let last = completed
        .iter()
        .map(|&s| get(&track.called_back, s))
        .max()
        .unwrap_or(started);
    let seconds = (last.saturating_sub(started)) as f64 / 1e6;
    LoadOutcome {
        commands: total,
        accepted: accepted.len(),
        completed: completed.len(),
        lost: accepted.len() - completed.len(),
        duplicates: completed
            .iter()
            .filter(|&&s| track.callbacks[s].load(Ordering::Acquire) > 1)
            .count(),
        seconds,
        per_second: if seconds > 0.0 {
            completed.len() as f64 / seconds
        } else {
            0.0
        },
        create_to_receive: span(&track.created, &track.received),
        answer_to_callback: span(&track.responded, &track.called_back),
        create_to_callback: span(&track.created, &track.called_back),
        receiver_calls: track.receiver_calls.load(Ordering::Relaxed),
        receiver_refused: track.receiver_refused.load(Ordering::Relaxed),
        bad_signatures: track.bad_signatures.load(Ordering::Relaxed),
        create_errors: track.create_errors.load(Ordering::Relaxed),
        respond_errors: track.respond_errors.load(Ordering::Relaxed),
        poll_errors: track.poll_errors.load(Ordering::Relaxed),
    }
}

/// Creates command `seq` for `device`; `true` when it was accepted (201).
async fn create(http: &reqwest::Client, url: &str, key: &str, device: &Device, seq: usize, track: &Track) -> bool {
    track.created[seq].store(track.now(), Ordering::Release);
    let sent = http
        .post(url)
        .header("x-api-key", key)
        .json(
            &json!({ "device_id": device.state.device_id, "payload": { "seq": seq, "text": "Log in to the portal?" } }),
        )
        .send()
        .await;
    match sent {
        Ok(r) if r.status() == StatusCode::CREATED => {
            let _ = r.bytes().await;
            track.accepted[seq].store(true, Ordering::Release);
            true
        }
        other => {
            if track.create_errors.fetch_add(1, Ordering::Relaxed) < 5 {
                eprintln!("bench: a create failed: {:?}", other.map(|r| r.status()));
            }
            false
        }
    }
}

/// Per window of `window` seconds (by creation time): commands completed, and answer →
/// callback p50 and p99 (ms).
pub fn windows(track: &Track, window: Duration) -> Vec<(usize, Option<Percentiles>)> {
    let get = |v: &[AtomicU64], s: usize| v[s].load(Ordering::Acquire);
    let width = window.as_micros() as u64;
    let mut buckets: Vec<Vec<u64>> = Vec::new();
    let first = (0..track.created.len())
        .map(|s| get(&track.created, s))
        .filter(|&t| t > 0)
        .min()
        .unwrap_or(0);
    for s in 0..track.created.len() {
        let (created, responded, called) = (
            get(&track.created, s),
            get(&track.responded, s),
            get(&track.called_back, s),
        );
        if created == 0 || responded == 0 || called == 0 {
            continue;
        }
        let w = ((created - first) / width.max(1)) as usize;
        if buckets.len() <= w {
            buckets.resize(w + 1, Vec::new());
        }
        buckets[w].push(called.saturating_sub(responded));
    }
    buckets.into_iter().map(|b| (b.len(), Percentiles::of(b))).collect()
}

/// Idle long-polls: each device polls with `wait` and polls again when it returns.
pub struct IdlePolls {
    tasks: Vec<JoinHandle<()>>,
    pub returned: Arc<AtomicU64>,
    pub errors: Arc<AtomicU64>,
}

impl Drop for IdlePolls {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts one long-poll per device, `per_second` new ones a second.
pub async fn hold_idle(devices: Vec<Device>, wait: u32, per_second: usize) -> IdlePolls {
    let returned = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(devices.len());
    let batch = (per_second / 20).max(1);
    for chunk in devices.chunks(batch) {
        for device in chunk {
            let (mut device, returned, errors) = (device.clone(), Arc::clone(&returned), Arc::clone(&errors));
            tasks.push(tokio::spawn(async move {
                loop {
                    match device.poll(wait).await {
                        Ok(_) => {
                            returned.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("bench: an idle poll failed: {e:#}");
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    IdlePolls {
        tasks,
        returned,
        errors,
    }
}
