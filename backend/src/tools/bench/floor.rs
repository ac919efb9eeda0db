//! The floor: a minimal HTTP server that answers the same exchanges per command as Hermod, from
//! memory, with no storage and no checks. Create → 201 with an id; a device's long-poll is
//! answered as soon as a command for it arrives; a device's response → 200, then a POST of the
//! callback to the receiver (retried while the receiver fails). No signature is verified, no
//! nonce recorded, nothing written to disk. What Hermod reaches is judged against it.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hermod_shared::signing::HEADER_DEVICE;
use hermod_shared::webhook::{self, WebhookSecret};
use hermod_shared::wire::{rfc3339, MailboxCommand, MailboxEventKind, MailboxItem, MailboxPage};
use hermod_shared::{CommandId, DeviceId};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

use crate::store::now_ms;

#[derive(clap::Args, Debug)]
pub struct FloorArgs {
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Where callbacks go.
    #[arg(long)]
    pub callback_url: String,
    /// The whsec_ secret callbacks are signed with (as Hermod signs them).
    #[arg(long)]
    pub secret: String,
}

struct Mailbox {
    items: Mutex<Vec<MailboxItem>>,
    changed: watch::Sender<u64>,
}

struct Floor {
    mailboxes: Mutex<HashMap<String, Arc<Mailbox>>>,
    /// Open commands: id → (device, payload).
    commands: Mutex<HashMap<String, (String, Value)>>,
    /// Enrolment tokens → user.
    tokens: Mutex<HashMap<String, String>>,
    seq: AtomicI64,
    http: reqwest::Client,
    callback_url: String,
    secret: WebhookSecret,
    public_url: String,
}

impl Floor {
    fn mailbox(&self, device: &str) -> Arc<Mailbox> {
        let mut boxes = self.mailboxes.lock().expect("lock");
        Arc::clone(boxes.entry(device.to_owned()).or_insert_with(|| {
            Arc::new(Mailbox {
                items: Mutex::default(),
                changed: watch::channel(0).0,
            })
        }))
    }
}

fn hex16() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

pub async fn run(args: FloorArgs) -> anyhow::Result<()> {
    let secret = WebhookSecret::parse(&args.secret).ok_or_else(|| anyhow::anyhow!("--secret must be whsec_"))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    let port = listener.local_addr()?.port();
    let floor = Arc::new(Floor {
        mailboxes: Mutex::default(),
        commands: Mutex::default(),
        tokens: Mutex::default(),
        seq: AtomicI64::new(0),
        http: reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?,
        callback_url: args.callback_url,
        secret,
        public_url: format!("http://127.0.0.1:{port}/ms"),
    });
    let router = Router::new()
        .route("/command/{kind}", post(create))
        .route("/ms/enrol", post(enrol))
        .route("/ms/mailbox", get(mailbox))
        .route("/ms/commands/{id}/response", post(respond))
        .with_state(floor);
    eprintln!("floor listening port={port}");
    axum::serve(listener, router).await?;
    Ok(())
}

#[derive(Deserialize)]
struct Create {
    device_id: Option<String>,
    user_id: Option<String>,
    payload: Option<Value>,
}

async fn create(State(floor): State<Arc<Floor>>, Path(kind): Path<String>, Json(req): Json<Create>) -> Response {
    let id = CommandId::from_random(rand::random());
    let now = now_ms();
    let payload = req.payload.unwrap_or_else(|| json!({}));
    let mut view = json!({
        "id": id, "type": kind, "status": "pending", "payload": payload, "timeout": 120, "lifespan": 86400,
        "created_at": rfc3339(now), "timeout_at": rfc3339(now + 120_000), "expires_at": rfc3339(now + 86_400_000),
    });
    if kind == "provision" {
        let token = hex16();
        let user = req.user_id.unwrap_or_default();
        view["user_id"] = json!(user);
        floor.tokens.lock().expect("lock").insert(token.clone(), user);
        view["enrolment"] = json!({
            "link": hermod_shared::enrolment::deep_link(&floor.public_url, &token),
            "qr_url": format!("/command/{id}/qr"),
            "token": token,
        });
        return (StatusCode::CREATED, Json(view)).into_response();
    }
    let Some(device) = req.device_id else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    view["device_id"] = json!(device);
    floor
        .commands
        .lock()
        .expect("lock")
        .insert(id.to_string(), (device.clone(), payload.clone()));
    let mailbox = floor.mailbox(&device);
    let seq = floor.seq.fetch_add(1, Ordering::Relaxed) + 1;
    mailbox.items.lock().expect("lock").push(MailboxItem {
        seq,
        kind: MailboxEventKind::Command,
        reason: None,
        command: MailboxCommand {
            id: id.clone(),
            command_type: kind,
            payload,
            created_at: rfc3339(now),
            timeout_at: rfc3339(now + 120_000),
            verification_code: None,
            binding_message: None,
            number_choices: None,
        },
    });
    mailbox.changed.send_modify(|v| *v += 1);
    (StatusCode::CREATED, Json(view)).into_response()
}

#[derive(Deserialize)]
struct Enrol {
    token: String,
}

async fn enrol(State(floor): State<Arc<Floor>>, Json(req): Json<Enrol>) -> Response {
    let user = floor
        .tokens
        .lock()
        .expect("lock")
        .remove(&req.token)
        .unwrap_or_default();
    let device = DeviceId::from_random(rand::random());
    let secret = hermod_shared::signing::DeviceSecret::from_bytes(rand::random()).to_base64();
    (
        StatusCode::CREATED,
        Json(json!({ "device_id": device, "user_id": user, "device_secret": secret, "server_time": now_ms() })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Poll {
    cursor: Option<i64>,
    wait: Option<u64>,
}

async fn mailbox(State(floor): State<Arc<Floor>>, headers: HeaderMap, Query(q): Query<Poll>) -> Response {
    let device = headers
        .get(HEADER_DEVICE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mailbox = floor.mailbox(device);
    let cursor = q.cursor.unwrap_or(0);
    let mut changed = mailbox.changed.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0));
    loop {
        let items: Vec<MailboxItem> = {
            let mut all = mailbox.items.lock().expect("lock");
            // The device has everything up to its cursor: forget it.
            all.retain(|i| i.seq > cursor);
            all.clone()
        };
        if !items.is_empty() || tokio::time::Instant::now() >= deadline {
            let next = items.last().map_or(cursor, |i| i.seq);
            return Json(MailboxPage {
                items,
                cursor: next,
                server_time: now_ms(),
            })
            .into_response();
        }
        tokio::select! {
            _ = changed.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

async fn respond(State(floor): State<Arc<Floor>>, Path(id): Path<String>, body: Bytes) -> Response {
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let status = answer["result"].as_str().unwrap_or("approved").to_owned();
    let Some((device, payload)) = floor.commands.lock().expect("lock").remove(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let now = now_ms();
    let event = json!({
        "type": format!("command.{status}"),
        "timestamp": rfc3339(now),
        "data": {
            "id": id, "type": "authenticate", "status": status, "device_id": device, "payload": payload,
            "result": answer["data"], "answered_by": device, "timeout": 120, "lifespan": 86400,
            "created_at": rfc3339(now), "timeout_at": rfc3339(now + 120_000), "expires_at": rfc3339(now + 86_400_000),
            "completed_at": rfc3339(now),
        }
    });
    tokio::spawn(deliver(Arc::clone(&floor), serde_json::to_vec(&event).expect("json")));
    Json(json!({ "id": id, "status": status, "server_time": now })).into_response()
}

/// Posts a callback until the receiver takes it: at once, then after 50 ms, doubling to 1 s.
async fn deliver(floor: Arc<Floor>, body: Vec<u8>) {
    let msg_id = format!("msg_{}", hex16());
    let mut pause = Duration::from_millis(50);
    for _ in 0..100 {
        let ts = now_ms() / 1000;
        let signature = webhook::signature_header(std::slice::from_ref(&floor.secret), &msg_id, ts, &body);
        let sent = floor
            .http
            .post(&floor.callback_url)
            .header("content-type", "application/json")
            .header(webhook::HEADER_ID, &msg_id)
            .header(webhook::HEADER_TIMESTAMP, ts.to_string())
            .header(webhook::HEADER_SIGNATURE, signature)
            .body(body.clone())
            .send()
            .await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
