//! The test harness: Hermod on a random port with a database of its own, a callback receiver
//! that records what it gets (and can be told to fail), and helpers that speak real HTTP.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hermod::config::{AllowedClient, Settings};
use hermod::Application;
use hermod_device::Device;
use hermod_shared::credential::ClientCredential;
use hermod_shared::webhook::{self, WebhookSecret};
use hermod_shared::wire::CallbackEvent;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

pub const IDM_KEY: &str = "446020134ee8422db5769fbef9104a4157728610236d4dd1a4b37f935dab410a";
pub const DA_KEY: &str = "b20f0fd90a8b48c5aa9b694b8e7dd11e20040295afb646eabdc89801b65dde36";
pub const OTHER_KEY: &str = "0f0e0d0c0b0a09080706050403020100f0e0d0c0b0a090807060504030201000";
pub const IDM_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const CALLBACK_AUTH: (&str, &str) = ("prime", "s3cret-callback-password");

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn event(&self) -> CallbackEvent {
        serde_json::from_slice(&self.body).expect("callback body is a CallbackEvent")
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// How the receiver answers requests to paths under a prefix.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub prefix: String,
    pub delay: Duration,
    pub status: u16,
}

#[derive(Default)]
struct ReceiverState {
    got: Mutex<Vec<Received>>,
    fail_next: AtomicUsize,
    behaviours: Mutex<Vec<Behaviour>>,
    arrived: Notify,
}

/// A real HTTP callback receiver on a random port.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri.path().to_owned();
    state.got.lock().unwrap().push(Received {
        path: path.clone(),
        headers,
        body,
        at: Instant::now(),
    });
    state.arrived.notify_waiters();
    let behaviour = state
        .behaviours
        .lock()
        .unwrap()
        .iter()
        .find(|b| path.starts_with(&b.prefix))
        .cloned();
    if let Some(b) = behaviour {
        tokio::time::sleep(b.delay).await;
        return StatusCode::from_u16(b.status).unwrap();
    }
    let failing = state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NO_CONTENT
    }
}

impl Receiver {
    pub async fn start() -> Self {
        let state = Arc::new(ReceiverState::default());
        let router = axum::Router::new()
            .route("/{*path}", axum::routing::post(receive))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/ws/hermod", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, state }
    }

    /// The same receiver over HTTPS, with a certificate for `localhost` from the test CA.
    pub async fn start_https(pki: &crate::certs::TestPki) -> Self {
        let state = Arc::new(ReceiverState::default());
        let router = axum::Router::new()
            .route("/{*path}", axum::routing::post(receive))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://localhost:{}/ws/hermod", listener.local_addr().unwrap().port());
        let limits = hermod::http::listener::ConnectionLimits::from_settings(&Default::default());
        tokio::spawn(hermod::http::listener::serve(
            listener,
            Some(pki.server_config()),
            router,
            limits,
            Default::default(),
            std::future::pending(),
        ));
        Self { url, state }
    }

    /// Requests to paths under `prefix` wait `delay`, then get `status`.
    pub fn behave(&self, prefix: &str, delay: Duration, status: u16) {
        let mut behaviours = self.state.behaviours.lock().unwrap();
        behaviours.retain(|b| b.prefix != prefix);
        behaviours.push(Behaviour {
            prefix: prefix.to_owned(),
            delay,
            status,
        });
    }

    pub fn behave_normally(&self) {
        self.state.behaviours.lock().unwrap().clear();
    }

    /// The next `n` requests fail with 503.
    pub fn fail_next(&self, n: usize) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    /// Waits until a request matching `pred` arrived (at most `within`).
    pub async fn wait_for(&self, within: Duration, pred: impl Fn(&Received) -> bool) -> Received {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.state.arrived.notified();
            if let Some(r) = self.received().into_iter().find(|r| pred(r)) {
                return r;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let got = self.received();
                let last: Vec<String> = got
                    .iter()
                    .rev()
                    .take(3)
                    .map(|r| String::from_utf8_lossy(&r.body).chars().take(300).collect())
                    .collect();
                panic!(
                    "no matching callback within {within:?}; got {} requests, the last: {last:?}",
                    got.len()
                );
            }
        }
    }

    /// Waits for the callback of one command.
    pub async fn callback_for(&self, command_id: &str) -> Received {
        self.wait_for(Duration::from_secs(10), |r| r.event().data.id.as_str() == command_id)
            .await
    }
}

/// A client's credentials.
#[derive(Debug, Clone)]
pub struct Creds(pub ClientCredential);

impl Creds {
    pub fn idm() -> Self {
        Self(ClientCredential {
            client_id: "idm".into(),
            key: IDM_KEY.into(),
        })
    }
    pub fn da() -> Self {
        Self(ClientCredential {
            client_id: "da".into(),
            key: DA_KEY.into(),
        })
    }
    pub fn other() -> Self {
        Self(ClientCredential {
            client_id: "other".into(),
            key: OTHER_KEY.into(),
        })
    }
}

pub struct TestApp {
    pub base: String,
    pub receiver: Receiver,
    pub http: reqwest::Client,
    pub state: hermod::engine::AppState,
    /// Kept for its lifetime: a PostgreSQL database is dropped with it.
    _db: TestDb,
    _dir: tempfile::TempDir,
}

/// Whether this run is the PostgreSQL pass of the suite (`HERMOD_TEST_DATABASE=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("HERMOD_TEST_DATABASE").is_ok_and(|v| v == "postgres")
}

/// The database of one test: a SQLite file in its folder, or, in the PostgreSQL pass, a fresh
/// database on the server at `HERMOD_TEST_POSTGRES` (127.0.0.1:5432 by default), dropped
/// afterwards. An unreachable server fails the test: PostgreSQL is never skipped.
pub struct TestDb {
    pub url: String,
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(dir: &std::path::Path) -> Self {
        Self::create(dir, on_postgres()).await
    }

    /// A PostgreSQL database whichever pass this is (for tests of several replicas).
    pub async fn postgres() -> Self {
        Self::create(std::path::Path::new("/nonexistent"), true).await
    }

    async fn create(dir: &std::path::Path, postgres: bool) -> Self {
        if !postgres {
            return Self {
                url: format!("sqlite://{}", dir.join("hermod.db").display()),
                postgres: None,
            };
        }
        let admin = std::env::var("HERMOD_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("hermod_t_{}", hex::encode(rand::random::<[u8; 8]>()));
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for this pass: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
        Self {
            url: format!("{base}/{name}"),
            postgres: Some((admin, name)),
        }
    }
}

impl TestDb {
    /// Another handle on a database that some other `TestDb` owns (and drops).
    pub fn borrowed(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            postgres: None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.postgres.take() {
            // A runtime of its own: the test's may be shutting down.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await {
                        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Settings for a test: its own SQLite file, port 0, fast sweeps and retries.
pub fn test_settings(dir: &std::path::Path, receiver: &Receiver) -> Settings {
    let mut s = Settings::default();
    s.server.address = [127, 0, 0, 1].into();
    s.server.port = 0;
    s.database.url = format!("sqlite://{}", dir.join("hermod.db").display());
    s.cacerts = dir.join("cacerts");
    s.commands.sweep_interval_ms = 50;
    s.callbacks.retry_schedule = vec![0.2, 0.4, 0.8];
    s.callbacks.request_timeout = 2.0;
    // Tenants' receivers in the tests listen on loopback, which the egress policy refuses
    // unless allowed.
    s.egress.allow = vec!["127.0.0.1".into()];
    // A key ring of one fresh key (HKDF derivations), as an operator's file would hold. A test
    // that names a `server-key` (shared by replicas, or with the edge) uses that instead.
    let keys = dir.join("hermod-server-keys");
    if !keys.exists() {
        let ring = hermod_shared::keys::KeyRing::single(hermod::engine::keys::generate("k1").unwrap());
        std::fs::write(&keys, ring.to_text()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    s.server_key_file = Some(keys);
    // Tests drive the admin API fast; the rate is tested on its own.
    s.admin.rate_limit = 100_000;
    s.allowed_clients = vec![
        AllowedClient {
            client_id: "idm".into(),
            key: IDM_KEY.into(),
            group: "smartid".into(),
            callback_url: Some(receiver.url.clone()),
            callback_basic_auth: Some(format!("{}:{}", CALLBACK_AUTH.0, CALLBACK_AUTH.1).into()),
            callback_signing_secrets: vec![IDM_SECRET.into()],
        },
        AllowedClient {
            client_id: "da".into(),
            key: DA_KEY.into(),
            group: "smartid".into(),
            callback_url: Some(receiver.url.replace("/ws/hermod", "/da")),
            callback_basic_auth: None,
            callback_signing_secrets: vec![],
        },
        AllowedClient {
            client_id: "other".into(),
            key: OTHER_KEY.into(),
            group: "elsewhere".into(),
            callback_url: Some(receiver.url.replace("/ws/hermod", "/other")),
            callback_basic_auth: None,
            callback_signing_secrets: vec![],
        },
    ];
    s
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(dir.path()).await;
        Self::start_on(db, dir, tweak).await
    }

    /// Starts an app on a given database (a second replica shares the first one's).
    pub async fn start_on(db: TestDb, dir: tempfile::TempDir, tweak: impl FnOnce(&mut Settings)) -> Self {
        let receiver = Receiver::start().await;
        let mut settings = test_settings(dir.path(), &receiver);
        settings.database.url = db.url.clone();
        tweak(&mut settings);
        if settings.server_key.is_some() {
            settings.server_key_file = None;
        }
        let app = Application::build(settings).await.expect("app builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        let state = app.state().clone();
        tokio::spawn(app.run_until(std::future::pending()));
        Self {
            base,
            receiver,
            http: reqwest::Client::new(),
            state,
            _db: db,
            _dir: dir,
        }
    }

    pub fn ms_url(&self) -> String {
        format!("{}/ms", self.base)
    }

    /// `POST /command/{type}` with a JSON body; returns the status and the body.
    pub async fn create(&self, creds: &Creds, command_type: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/command/{command_type}", self.base))
            .header("x-api-key", creds.0.token())
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Creates a command and insists on 201; returns the body.
    pub async fn create_ok(&self, creds: &Creds, command_type: &str, body: Value) -> Value {
        let (status, json) = self.create(creds, command_type, body).await;
        assert_eq!(status, 201, "{json}");
        json
    }

    pub async fn get(&self, creds: &Creds, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("x-api-key", creds.0.token())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, creds: &Creds, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-api-key", creds.0.token())
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, creds: &Creds, path: &str) -> (u16, Value) {
        let r = self
            .http
            .delete(format!("{}{path}", self.base))
            .header("x-api-key", creds.0.token())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Provisions `user` through `creds` and enrols a simulated device with the link.
    pub async fn enrol(&self, creds: &Creds, user: &str) -> Device {
        let provision = self
            .create_ok(creds, "provision", serde_json::json!({ "user_id": user }))
            .await;
        let link = provision["enrolment"]["link"].as_str().unwrap();
        Device::enrol(link, None, Some("test phone")).await.expect("enrols")
    }
}

/// Checks a callback's Standard Webhooks signature with the `shared` verifier.
pub fn verify_signature(r: &Received, secret: &str) -> Result<(), webhook::WebhookError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    webhook::verify(
        &[WebhookSecret::parse(secret).unwrap()],
        r.header(webhook::HEADER_ID),
        r.header(webhook::HEADER_TIMESTAMP),
        r.header(webhook::HEADER_SIGNATURE),
        &r.body,
        now,
        webhook::TOLERANCE_SECS,
    )
}

/// What a bad request must not change: commands with their status and result, devices, the
/// mailbox log and the callback outbox.
pub async fn snapshot(app: &TestApp) -> String {
    use sqlx::Row;
    let db = &app.state.db.write;
    let mut out = String::new();
    for (sql, cols) in [
        (
            "SELECT id, status, COALESCE(result, ''), COALESCE(answered_by, '') FROM commands ORDER BY id",
            4,
        ),
        ("SELECT id, group_id, user_id FROM devices ORDER BY id", 3),
        (
            "SELECT CAST(seq AS TEXT), command_id, kind FROM mailbox_events ORDER BY seq",
            3,
        ),
        ("SELECT id, command_id, event_type FROM callback_events ORDER BY seq", 3),
    ] {
        for row in sqlx::query(sql).fetch_all(db).await.unwrap() {
            for i in 0..cols {
                out.push_str(&row.try_get::<String, _>(i).unwrap());
                out.push('|');
            }
            out.push('\n');
        }
        out.push_str("--\n");
    }
    out
}

/// A `hermod serve` process of the real binary, stopped (SIGKILL) when dropped.
pub struct HermodProcess {
    pub child: std::process::Child,
    pub base: String,
    /// What it logged before it listened (the rest goes to `<config>.<pid>.log`).
    pub log: Vec<String>,
}

impl Drop for HermodProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `hermod serve --config <file>` in `dir` on port 0, with `DATABASE_URL` naming the
/// test's database (over the config), and reads the port from its log.
pub fn hermod_serve(config: &std::path::Path, dir: &std::path::Path, db_url: &str) -> HermodProcess {
    use std::io::{BufRead, BufReader, Write};
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_hermod"))
        .args(["serve", "--config"])
        .arg(config)
        .current_dir(dir)
        .env("DATABASE_URL", db_url)
        // The ring in the test's directory (made at the first start, kept across restarts): on
        // PostgreSQL a key is not made without being named.
        .env("HERMOD_SERVER_KEY_FILE", dir.join("hermod-server-keys"))
        .env("HERMOD_SERVER__PORT", "0")
        .env("HERMOD_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Owned at once, so that a failed start still kills and reaps the process.
    let mut server = HermodProcess {
        child,
        base: String::new(),
        log: Vec::new(),
    };
    let stderr = server.child.stderr.take().unwrap();
    let log_path = config.with_extension(format!("{}.log", server.child.id()));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut file = std::fs::File::create(log_path).unwrap();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(file, "{line}");
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no port in the log: {:#?}", server.log));
        if let Some(port) = line.split("port=").nth(1) {
            let port: u16 = port.split_whitespace().next().unwrap().parse().unwrap();
            server.base = format!("http://127.0.0.1:{port}");
            return server;
        }
        server.log.push(line);
    }
}

/// `POST {base}/command/{command_type}` with an API key and a JSON body; the JSON answer.
pub async fn post_command(base: &str, token: &str, command_type: &str, body: serde_json::Value) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{base}/command/{command_type}"))
        .header("x-api-key", token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Checks the wake-up mechanism over seven rounds: a device long-polls its mailbox for 30 s on
/// `server` (the poll is waited for until the server holds it, not for a fixed time), `create`
/// sends it a command (and returns the new command's id), and the poll returns that command.
/// A missed wake-up would cost the whole 30 s; the loose bound only tells the two apart (the
/// latency itself is the benchmark's to measure).
pub async fn assert_woken_by_a_new_command<F, Fut>(
    device: &mut hermod_device::Device,
    server: &hermod::engine::AppState,
    mut create: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let mut waits = Vec::new();
    for _ in 0..7 {
        let before = server.wakeups.waiting();
        let poller = {
            let mut d = hermod_device::Device::from_state(device.state.clone()).unwrap();
            tokio::spawn(async move {
                let page = d.poll(30).await.unwrap();
                (Instant::now(), page, d.state.cursor)
            })
        };
        // The poll subscribes to its device's and its user's wake-ups.
        wait_until(Duration::from_secs(10), "the long-poll reaches the server", || {
            server.wakeups.waiting() >= before + 2
        })
        .await;
        let sent = Instant::now();
        let created = create().await;
        let (woke, page, cursor) = poller.await.unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].command.id.as_str(), created);
        waits.push(woke.saturating_duration_since(sent));
        device.state.cursor = cursor;
    }
    let slowest = waits.iter().max().unwrap();
    assert!(
        *slowest < Duration::from_secs(5),
        "a wake-up took {slowest:?}, as if the poll ran out rather than being woken: {waits:?}"
    );
}

/// Polls an asynchronous `check` (a query, a request) every 20 ms until it holds; fails after
/// `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `condition` every 10 ms until it holds; fails after `within`.
pub async fn wait_until(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The operator token of hosted tests (`admin.operator-key`).
pub const OPERATOR_KEY: &str = "operator-token-for-the-tests-0123456789abcdef";

/// Starts an app whose admin API knows the operator token.
pub async fn start_hosted() -> TestApp {
    TestApp::start_with(|s| s.admin.operator_key = Some(hermod::config::Secret::new(OPERATOR_KEY))).await
}

/// A caller of the admin API with one bearer token.
#[derive(Clone)]
pub struct AdminApi {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl AdminApi {
    pub fn operator(base: &str) -> Self {
        Self::with_token(base, OPERATOR_KEY)
    }

    pub fn with_token(base: &str, token: &str) -> Self {
        Self {
            base: base.to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// Sends a request; returns the status, the headers and the JSON body (`null` when none).
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, HeaderMap, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (s, _, b) = self.call(reqwest::Method::GET, path, None).await;
        (s, b)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (s, _, b) = self.call(reqwest::Method::POST, path, Some(body)).await;
        (s, b)
    }

    pub async fn delete(&self, path: &str) -> u16 {
        self.call(reqwest::Method::DELETE, path, None).await.0
    }

    /// Insists on `expect`; returns the body.
    pub async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>, expect: u16) -> Value {
        let (status, _, json) = self.call(method.clone(), path, body).await;
        assert_eq!(status, expect, "{method} {path}: {json}");
        json
    }

    /// Creates a tenant (as the operator) and returns its admin.
    pub async fn create_tenant(&self, id: &str, quotas: Value) -> AdminApi {
        let created = self
            .ok(
                reqwest::Method::POST,
                "/admin/tenants",
                Some(serde_json::json!({ "id": id, "quotas": quotas })),
                201,
            )
            .await;
        AdminApi::with_token(&self.base, created["admin_key"]["token"].as_str().unwrap())
    }

    pub async fn create_group(&self, tenant: &str, group: &str) {
        self.ok(
            reqwest::Method::POST,
            &format!("/admin/tenants/{tenant}/groups"),
            Some(serde_json::json!({ "name": group })),
            201,
        )
        .await;
    }

    /// Creates a client; returns the answer (with its callback signing secret).
    pub async fn create_client(&self, tenant: &str, name: &str, group: &str, callback_url: Option<&str>) -> Value {
        self.ok(
            reqwest::Method::POST,
            &format!("/admin/tenants/{tenant}/clients"),
            Some(serde_json::json!({ "name": name, "group": group, "callback_url": callback_url })),
            201,
        )
        .await
    }

    /// Issues a key; returns its id and the credentials to use it.
    pub async fn issue_key(&self, tenant: &str, client: &str) -> (String, Creds) {
        let key = self
            .ok(
                reqwest::Method::POST,
                &format!("/admin/tenants/{tenant}/clients/{client}/keys"),
                None,
                201,
            )
            .await;
        let creds = Creds(ClientCredential {
            client_id: key["client_id"].as_str().unwrap().to_owned(),
            key: key["key"].as_str().unwrap().to_owned(),
        });
        assert_eq!(key["credential"], creds.0.token());
        (key["id"].as_str().unwrap().to_owned(), creds)
    }

    /// Makes a tenant with one group and one client per name (callbacks to the app's receiver
    /// under `/{tenant}/{client}`), each with a key.
    pub async fn tenant_with_clients(&self, app: &TestApp, tenant: &str, group: &str, clients: &[&str]) -> Vec<Creds> {
        let admin = self.create_tenant(tenant, serde_json::json!({})).await;
        admin.create_group(tenant, group).await;
        let mut creds = Vec::new();
        for client in clients {
            let url = app.receiver.url.replace("/ws/hermod", &format!("/{tenant}/{client}"));
            admin.create_client(tenant, client, group, Some(&url)).await;
            creds.push(admin.issue_key(tenant, client).await.1);
        }
        creds
    }
}

/// The state of tenants, groups, clients and keys, to show that a refused admin request changed
/// nothing (the audit log and `last_used_at` are left out: using a key is recorded).
pub async fn admin_snapshot(app: &TestApp) -> String {
    use sqlx::Row;
    let db = &app.state.db.write;
    let mut out = String::new();
    for sql in [
        "SELECT id || '|' || name || '|' || COALESCE(CAST(max_commands_per_second AS TEXT), '-') || '|' || COALESCE(CAST(max_devices AS TEXT), '-') FROM tenants ORDER BY id",
        "SELECT id FROM groups ORDER BY id",
        "SELECT client_id || '|' || group_id || '|' || COALESCE(callback_url, '-') || '|' || COALESCE(callback_basic_auth, '-') || '|' || COALESCE(CAST(disabled_at AS TEXT), '-') FROM clients ORDER BY client_id",
        "SELECT id || '|' || COALESCE(CAST(revoked_at AS TEXT), '-') FROM client_keys ORDER BY id",
        "SELECT id || '|' || COALESCE(CAST(revoked_at AS TEXT), '-') FROM admin_keys ORDER BY id",
    ] {
        for row in sqlx::query(sql).fetch_all(db).await.unwrap() {
            out.push_str(&row.try_get::<String, _>(0).unwrap());
            out.push('\n');
        }
        out.push_str("--\n");
    }
    out
}

/// Sleeps until just after the next whole second, so a burst lands in one one-second window.
pub async fn sleep_to_next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000 - u64::from(now.subsec_millis()) + 20)).await;
}

/// A counter of `/metrics` at `base` (0 when absent, or when `/metrics` could not be read: a
/// test at a connection cap polls it until it can).
pub async fn metric(base: &str, name: &str) -> u64 {
    let Ok(response) = reqwest::get(format!("{base}/metrics")).await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The enrolment link of a new `provision` command for `user`, made through `base` with `http`.
pub async fn provision_link(http: &reqwest::Client, base: &str, creds: &Creds, user: &str) -> String {
    let provision: Value = http
        .post(format!("{base}/command/provision"))
        .header("x-api-key", creds.0.token())
        .json(&serde_json::json!({ "user_id": user }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    provision["enrolment"]["link"].as_str().unwrap().to_owned()
}

/// Creates an authenticate command for `user` through `creds`, has `device` approve it, and
/// returns its id.
pub async fn approved_for(app: &TestApp, creds: &Creds, device: &mut Device, user: &str) -> String {
    let created = app
        .create_ok(creds, "authenticate", serde_json::json!({ "user_id": user }))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let page = device.poll(5).await.unwrap();
    let item = page.items.iter().find(|i| i.command.id.as_str() == id).unwrap();
    device
        .respond(&item.command.id, hermod_shared::wire::Decision::Approved, None)
        .await
        .unwrap();
    id
}
