//! `hermod bench`: drives the real server over real HTTP and reports how close it comes to
//! what the machine can do at all.
//!
//! The server under test is this binary running `hermod serve` as a child process (with a
//! generated config and a database of its own), so that its peak memory and CPU are read from
//! outside, in `/proc`. The floor is this binary running `hermod bench-floor`: a minimal server
//! answering the same exchanges from memory ([`floor`]). The same driver ([`driver`]) loads
//! both: devices long-polling and answering, client workers creating commands, and a callback
//! receiver. Every throughput is also given as a ratio to the floor's, so that numbers from a
//! noisy machine still compare. History and idle devices are written straight into the
//! database before the server starts ([`seed`]).

pub mod driver;
pub mod edge;
pub mod floor;
pub mod plot;
pub mod proc;
pub mod push;
pub mod seed;

use anyhow::Context;
use base64::Engine;
use clap::{Args, ValueEnum};
use hermod_shared::credential::ClientCredential;
use hermod_shared::signing::DeviceSecret;
use hermod_shared::webhook::WebhookSecret;
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{AllowedClient, Secret, Settings};
use crate::store::Db;
use driver::{LoadOutcome, Percentiles, Track};
use hermod_device::Device;
use proc::{Machine, ServerProcess, Usage};
use seed::BenchDb;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DbKind {
    Sqlite,
    Postgres,
}

impl DbKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            DbKind::Sqlite => "SQLite",
            DbKind::Postgres => "PostgreSQL",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Every scenario below.
    All,
    /// End-to-end throughput and latency with `--devices` devices, against the floor.
    E2e,
    /// `--idle-polls` devices long-polling and nothing else: memory and CPU while idle.
    Idle,
    /// Throughput with each of `--history` commands already in history.
    History,
    /// A callback receiver that fails every other call: nothing may be lost.
    Failing,
    /// `--rate` commands a second for `--soak-minutes`: CPU per command and answer → callback
    /// latency in the last five minutes against the first five. Not part of `all`.
    Soak,
    /// `--edge-devices` devices long-polling through the edge Worker (`wrangler dev`, built in
    /// `--edge-repo`) for `--edge-secs`, then a command to each, then creates for a user with one
    /// device and one with `--edge-fan-out`; and the same straight to the backend. Not part of
    /// `all`.
    Edge,
    /// `--push-devices` devices subscribed at `web-push-testing` (from `--edge-repo`'s
    /// node_modules): create → push received, one command at a time. Not part of `all`.
    Push,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Databases to run on (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sqlite")]
    pub db: Vec<DbKind>,
    /// What to run.
    #[arg(long, value_enum, default_value = "all")]
    pub scenario: Scenario,
    /// Enrolled devices (through real provisioning), each long-polling.
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Commands per throughput run.
    #[arg(long, default_value_t = 10_000)]
    pub commands: usize,
    /// Client workers, each with one command in flight from create to callback.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Commands in history for the history scenario (comma-separated; the first is the base).
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    pub history: Vec<u64>,
    /// Idle long-polls held in the idle scenario.
    #[arg(long, default_value_t = 10_000)]
    pub idle_polls: usize,
    /// Seconds over which idle CPU is measured.
    #[arg(long, default_value_t = 20)]
    pub idle_secs: u64,
    /// New idle long-polls started per second.
    #[arg(long, default_value_t = 2_000)]
    pub idle_ramp: usize,
    /// Commands a second in the soak (an open loop: created on time whatever the server does).
    #[arg(long, default_value_t = 60.0)]
    pub rate: f64,
    /// Minutes the soak lasts.
    #[arg(long, default_value_t = 20)]
    pub soak_minutes: u64,
    /// Devices long-polling in the edge scenario.
    #[arg(long, default_value_t = 100)]
    pub edge_devices: usize,
    /// Their long-polls' `wait`, in seconds.
    #[arg(long, default_value_t = 30)]
    pub edge_wait: u32,
    /// Seconds they long-poll with nothing sent.
    #[arg(long, default_value_t = 300)]
    pub edge_secs: u64,
    /// Devices of the user whose creates are timed against a user with one.
    #[arg(long, default_value_t = 30)]
    pub edge_fan_out: usize,
    /// Creates timed for each of the two users.
    #[arg(long, default_value_t = 50)]
    pub edge_creates: usize,
    /// Devices subscribed for Web Push in the push scenario.
    #[arg(long, default_value_t = 20)]
    pub push_devices: usize,
    /// Commands timed in the push scenario.
    #[arg(long, default_value_t = 500)]
    pub push_commands: usize,
    /// The repository where the edge Worker is built (`edge/build/index.js`) and wrangler
    /// installed (`node_modules/.bin/wrangler`).
    #[arg(long, default_value = ".")]
    pub edge_repo: PathBuf,
    /// Run the end-to-end and history scenarios with a receiver failing every other call.
    #[arg(long)]
    pub failing_receiver: bool,
    /// PostgreSQL server where a fresh `hermod_bench_<random>` database is made (and dropped)
    /// for every run.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres_admin_url: String,
    /// Use this PostgreSQL database as it is instead of a fresh one per run.
    #[arg(long)]
    pub database_url: Option<String>,
    /// A small smoke run: 20 devices, 300 commands, 200 idle polls, short windows.
    #[arg(long)]
    pub quick: bool,
    /// Also print the results as Markdown (the table of docs/PERFORMANCE.md).
    #[arg(long)]
    pub markdown: bool,
    /// Print the results as JSON only.
    #[arg(long)]
    pub json: bool,
    /// Keep the run folders (configs, server logs, SQLite files) in the temp directory.
    #[arg(long)]
    pub keep: bool,
    /// Also write the results as SVG charts into this folder (throughput against the floor,
    /// latency percentiles, idle memory: whichever scenarios ran).
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
}

impl BenchArgs {
    fn apply_quick(&mut self) {
        if self.quick {
            self.devices = self.devices.min(20);
            self.commands = self.commands.min(300);
            self.concurrency = self.concurrency.min(8);
            self.history = vec![1_000, 5_000];
            self.idle_polls = self.idle_polls.min(200);
            self.idle_secs = self.idle_secs.min(3);
            self.edge_devices = self.edge_devices.min(5);
            self.edge_wait = self.edge_wait.min(2);
            self.edge_secs = self.edge_secs.min(5);
            self.edge_fan_out = self.edge_fan_out.min(5);
            self.edge_creates = self.edge_creates.min(5);
            self.push_devices = self.push_devices.min(3);
            self.push_commands = self.push_commands.min(20);
        }
    }
}

/// One throughput run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub scenario: String,
    /// `hermod` or `floor`.
    pub server: String,
    pub db: Option<DbKind>,
    pub devices: usize,
    pub concurrency: usize,
    pub history: u64,
    pub failing_receiver: bool,
    pub outcome: LoadOutcome,
    /// This run's throughput over the floor's (same load).
    pub ratio_to_floor: Option<f64>,
    pub server_peak_rss_mb: f64,
    /// CPU of the server during the load, percent of one core.
    pub server_cpu_percent: f64,
    pub server_cpu_ms_per_command: f64,
    /// CPU of the bench itself (devices, workers, receiver) during the load.
    pub driver_cpu_percent: f64,
    pub seed_seconds: Option<f64>,
}

/// One idle run.
#[derive(Debug, Clone, Serialize)]
pub struct IdleResult {
    pub server: String,
    pub db: Option<DbKind>,
    pub polls: usize,
    pub rss_before_mb: f64,
    pub rss_idle_mb: f64,
    pub peak_rss_mb: f64,
    pub cpu_percent: f64,
    pub window_secs: f64,
    /// Polls that returned during the window (none should: nothing is sent).
    pub returned_in_window: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
}

/// A soak: per minute, commands completed, the server's CPU per command and answer → callback
/// latency; and the last five minutes against the first five.
#[derive(Debug, Clone, Serialize)]
pub struct SoakResult {
    pub db: DbKind,
    pub rate: f64,
    pub minutes: u64,
    pub lost: usize,
    pub per_minute: Vec<SoakMinute>,
    /// Last five minutes over the first five (1.0 = unchanged).
    pub cpu_per_command_ratio: Option<f64>,
    pub callback_p50_ratio: Option<f64>,
    pub callback_p99_ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SoakMinute {
    pub completed: usize,
    pub server_cpu_ms_per_command: f64,
    pub answer_to_callback_p50_ms: Option<f64>,
    pub answer_to_callback_p99_ms: Option<f64>,
}

/// The end-to-end figures of one database, as a script reads them from `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct E2eSummary {
    pub cycles_per_second: f64,
    pub floor_cycles_per_second: Option<f64>,
    pub ratio_to_floor: Option<f64>,
    pub server_cpu_ms_per_cycle: f64,
    pub create_to_device_p99_ms: Option<f64>,
    pub answer_to_callback_p99_ms: Option<f64>,
    pub server_peak_rss_mb: f64,
    pub lost: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: String,
    pub machine: Machine,
    pub started_at: String,
    pub minutes: f64,
    /// The end-to-end run of each database (`sqlite`, `postgres`), beside the floor's.
    pub e2e: std::collections::BTreeMap<String, E2eSummary>,
    pub soak: Vec<SoakResult>,
    /// The edge scenario: through the edge and straight to the backend, per database.
    pub edge: Vec<edge::EdgeResult>,
    /// The push scenario, per database.
    pub push: Vec<push::PushResult>,
    pub load: Vec<LoadResult>,
    pub idle: Vec<IdleResult>,
    pub targets: Vec<TargetCheck>,
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

/// What every run of the bench shares: credentials, the server key, the callback secret.
struct Ctx {
    args: BenchArgs,
    root: PathBuf,
    runs: usize,
    client_key: String,
    server_key: Vec<u8>,
    secret: WebhookSecret,
}

impl Ctx {
    fn api_key(&self) -> String {
        ClientCredential {
            client_id: "bench".into(),
            key: self.client_key.clone(),
        }
        .token()
    }

    fn run_dir(&mut self, label: &str) -> anyhow::Result<PathBuf> {
        self.runs += 1;
        let dir = self.root.join(format!("{:02}-{label}", self.runs));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn client(&self, callback_url: &str) -> anyhow::Result<AllowedClient> {
        Ok(serde_json::from_value(json!({
            "client-id": "bench",
            "key": self.client_key,
            "group": "bench",
            "callback-url": callback_url,
            "callback-signing-secrets": [self.secret.expose()],
        }))?)
    }

    /// The server's config: this client, the server key, and a short retry schedule (20
    /// attempts within about 16 s) so that a failing receiver is retried within the run.
    fn settings(&self, client: AllowedClient, db_url: &str) -> Settings {
        let mut s = Settings::default();
        s.server.address = std::net::IpAddr::from([127, 0, 0, 1]);
        s.server.port = 0;
        // Every device and client of the bench connects from 127.0.0.1, and the idle scenario
        // holds 10,000 long-polls: the per-address cap would refuse most of them.
        s.server.max_connections = 20_000;
        s.server.max_connections_per_ip = 20_000;
        s.long_polls.max = 20_000;
        s.server_key = Some(Secret::new(
            base64::engine::general_purpose::STANDARD.encode(&self.server_key),
        ));
        s.allowed_clients = vec![client];
        s.database.url = db_url.to_owned();
        let mut schedule = vec![0.05, 0.1, 0.2, 0.4, 0.8];
        schedule.extend([1.0; 15]);
        s.callbacks.retry_schedule = schedule;
        s.callbacks.jitter = 0.1;
        s.generate_client_page = false;
        s
    }

    async fn database(&self, kind: DbKind, dir: &Path) -> anyhow::Result<BenchDb> {
        match (kind, &self.args.database_url) {
            (DbKind::Sqlite, _) => Ok(BenchDb::sqlite(dir)),
            (DbKind::Postgres, Some(url)) => Ok(BenchDb::given(url)),
            (DbKind::Postgres, None) => BenchDb::fresh_postgres(&self.args.postgres_admin_url).await,
        }
    }
}

/// The config file the bench's server reads: what the bench sets, under the file's own keys.
/// (The settings are not `Serialize`: they hold secrets.)
fn config_file(s: &Settings) -> serde_json::Value {
    let client = &s.allowed_clients[0];
    let mut config = json!({
        "server": {
            "address": s.server.address.to_string(),
            "port": s.server.port,
            "max-connections": s.server.max_connections,
            "max-connections-per-ip": s.server.max_connections_per_ip,
        },
        "database": { "url": s.database.url },
        "allowed-clients": [{
            "client-id": client.client_id,
            "key": client.key.expose(),
            "group": client.group,
            "callback-url": client.callback_url,
            "callback-signing-secrets": client.callback_signing_secrets.iter().map(|s| s.expose()).collect::<Vec<_>>(),
        }],
        "callbacks": { "retry-schedule": s.callbacks.retry_schedule, "jitter": s.callbacks.jitter },
        "long-polls": { "max": s.long_polls.max },
        "generate-client-page": s.generate_client_page,
    });
    if let Some(key) = &s.server_key {
        config["server-key"] = json!(key.expose());
    }
    if let Some(url) = &s.public_url {
        config["public-url"] = json!(url);
    }
    if let Some(secret) = &s.edge.secret {
        config["edge"] = json!({ "secret": secret.expose() });
    }
    if let Some(key) = &s.push.webpush.vapid_private_key {
        config["push"] = json!({ "webpush": { "vapid-private-key": key.expose(), "subject": s.push.webpush.subject } });
    }
    if !s.egress.allow.is_empty() {
        config["egress"] = json!({ "allow": s.egress.allow });
    }
    config
}

fn start_hermod(dir: &Path, settings: &Settings) -> anyhow::Result<ServerProcess> {
    let config = dir.join("hermod-conf.yml");
    // JSON is YAML.
    std::fs::write(&config, serde_json::to_string_pretty(&config_file(settings))?)?;
    let config = config.to_string_lossy().into_owned();
    ServerProcess::start(
        &["serve", "--config", &config],
        &[
            ("DATABASE_URL", settings.database.url.clone()),
            ("HERMOD_SERVER__PORT", "0".into()),
            (
                "HERMOD_LOG",
                "info,hermod::commands=warn,sqlx=warn,tower_http=warn".into(),
            ),
        ],
        &dir.join("server.log"),
        Duration::from_secs(120),
    )
}

fn start_floor(dir: &Path, callback_url: &str, secret: &WebhookSecret) -> anyhow::Result<ServerProcess> {
    ServerProcess::start(
        &[
            "bench-floor",
            "--callback-url",
            callback_url,
            "--secret",
            &secret.expose(),
        ],
        &[("HERMOD_LOG", "warn".into())],
        &dir.join("floor.log"),
        Duration::from_secs(30),
    )
}

/// A throughput run, on Hermod (`db` given) or on the floor.
async fn load_run(
    ctx: &mut Ctx,
    scenario: &str,
    db: Option<DbKind>,
    history: u64,
    failing: bool,
) -> anyhow::Result<LoadResult> {
    let label = format!(
        "{scenario}-{}",
        db.map_or("floor".to_owned(), |d| format!("{d:?}").to_lowercase())
    );
    let dir = ctx.run_dir(&label)?;
    let a = ctx.args.clone();
    progress(&format!(
        "{scenario} on {}: {} devices, {} commands, {} in flight{}{}",
        db.map_or("the floor", DbKind::name),
        a.devices,
        a.commands,
        a.concurrency,
        if history > 0 {
            format!(", {history} in history")
        } else {
            String::new()
        },
        if failing {
            ", receiver failing half its calls"
        } else {
            ""
        }
    ));
    let track = Track::new(a.commands, failing, ctx.secret.clone());
    let receiver = driver::start_receiver(std::sync::Arc::clone(&track)).await?;
    let mut bench_db = None;
    let mut seed_seconds = None;
    let server = match db {
        None => start_floor(&dir, &receiver.url, &ctx.secret)?,
        Some(kind) => {
            let database = ctx.database(kind, &dir).await?;
            let settings = ctx.settings(ctx.client(&receiver.url)?, &database.url);
            bench_db = Some(database);
            if history > 0 {
                let db = Db::connect(&settings.database.url).await?;
                let (client_pk, group) = seed::prepare(&db, &settings.allowed_clients[0]).await?;
                let secs = seed::history(&db, &client_pk, &group, history).await?;
                progress(&format!("  seeded {history} commands of history in {secs:.1} s"));
                seed_seconds = Some(secs);
                db.read.close().await;
                db.write.close().await;
            }
            start_hermod(&dir, &settings)?
        }
    };
    let result = async {
        let api_key = ctx.api_key();
        let enrol_started = Instant::now();
        let devices = driver::enrol_devices(&server.base, &api_key, a.devices, 16).await?;
        progress(&format!(
            "  enrolled {} devices in {:.1} s",
            devices.len(),
            enrol_started.elapsed().as_secs_f64()
        ));
        let (server_before, driver_before, wall) = (server.usage(), Usage::of_self(), Instant::now());
        let drain = Duration::from_secs(if failing { 40 } else { 20 });
        let outcome = driver::run_load(&server.base, &api_key, &devices, &track, a.concurrency, drain, None).await;
        let wall = wall.elapsed();
        let (server_after, driver_after) = (server.usage(), Usage::of_self());
        let cpu = server_after.cpu.saturating_sub(server_before.cpu);
        progress(&format!(
            "  {} of {} completed in {:.1} s: {:.0}/s, lost {}",
            outcome.completed, outcome.commands, outcome.seconds, outcome.per_second, outcome.lost
        ));
        anyhow::Ok(LoadResult {
            scenario: scenario.to_owned(),
            server: if db.is_some() { "hermod" } else { "floor" }.into(),
            db,
            devices: devices.len(),
            concurrency: a.concurrency,
            history,
            failing_receiver: failing,
            ratio_to_floor: None,
            server_peak_rss_mb: mb(server_after.peak_rss),
            server_cpu_percent: proc::cpu_percent(server_before, server_after, wall),
            server_cpu_ms_per_command: cpu.as_secs_f64() * 1000.0 / outcome.completed.max(1) as f64,
            driver_cpu_percent: proc::cpu_percent(driver_before, driver_after, wall),
            seed_seconds,
            outcome,
        })
    }
    .await;
    drop(server);
    drop(receiver);
    if let Some(d) = bench_db {
        d.cleanup().await;
    }
    result
}

/// The idle run: `--idle-polls` devices long-polling with the longest wait, nothing sent.
async fn idle_run(ctx: &mut Ctx, db: Option<DbKind>) -> anyhow::Result<IdleResult> {
    let label = format!(
        "idle-{}",
        db.map_or("floor".to_owned(), |d| format!("{d:?}").to_lowercase())
    );
    let dir = ctx.run_dir(&label)?;
    let polls = ctx.args.idle_polls;
    progress(&format!(
        "idle on {}: {polls} long-polls",
        db.map_or("the floor", DbKind::name)
    ));
    let track = Track::new(0, false, ctx.secret.clone());
    let receiver = driver::start_receiver(track).await?;
    let settings_max_wait = Settings::default().commands.max_wait;
    let mut bench_db = None;
    let (server, ids) = match db {
        None => {
            let ids: Vec<_> = (0..polls)
                .map(|_| hermod_shared::DeviceId::from_random(rand::random()))
                .collect();
            (start_floor(&dir, &receiver.url, &ctx.secret)?, ids)
        }
        Some(kind) => {
            let database = ctx.database(kind, &dir).await?;
            let settings = ctx.settings(ctx.client(&receiver.url)?, &database.url);
            bench_db = Some(database);
            let db = Db::connect(&settings.database.url).await?;
            let (_, group) = seed::prepare(&db, &settings.allowed_clients[0]).await?;
            let ids = seed::devices(&db, &group, polls).await?;
            db.read.close().await;
            db.write.close().await;
            (start_hermod(&dir, &settings)?, ids)
        }
    };
    let result = async {
        let ms = format!("{}/ms", server.base);
        let http = driver::http_client();
        let devices: Vec<Device> = ids
            .into_iter()
            .enumerate()
            .map(|(n, id)| {
                let secret = match db {
                    Some(_) => DeviceSecret::derive(&ctx.server_key, &id),
                    None => DeviceSecret::from_bytes(rand::random()),
                };
                let user = hermod_shared::UserId::parse(&format!("idle-{n}")).expect("a valid user id");
                Device::from_parts(http.clone(), &ms, id, user, &secret)
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = server.usage();
        let idle = driver::hold_idle(devices, settings_max_wait, ctx.args.idle_ramp).await;
        tokio::time::sleep(Duration::from_secs(if ctx.args.quick { 1 } else { 5 })).await;
        let (start, returned_before, wall) = (
            server.usage(),
            idle.returned.load(std::sync::atomic::Ordering::Relaxed),
            Instant::now(),
        );
        tokio::time::sleep(Duration::from_secs(ctx.args.idle_secs)).await;
        let (end, wall) = (server.usage(), wall.elapsed());
        let returned = idle.returned.load(std::sync::atomic::Ordering::Relaxed) - returned_before;
        let errors = idle.errors.load(std::sync::atomic::Ordering::Relaxed);
        drop(idle);
        let r = IdleResult {
            server: if db.is_some() { "hermod" } else { "floor" }.into(),
            db,
            polls,
            rss_before_mb: mb(before.rss),
            rss_idle_mb: mb(end.rss),
            peak_rss_mb: mb(end.peak_rss),
            cpu_percent: proc::cpu_percent(start, end, wall),
            window_secs: wall.as_secs_f64(),
            returned_in_window: returned,
            errors,
        };
        progress(&format!(
            "  {:.1} MB held ({:.1} MB before), {:.2} % CPU over {:.0} s, {} polls returned, {} errors",
            r.rss_idle_mb, r.rss_before_mb, r.cpu_percent, r.window_secs, r.returned_in_window, r.errors
        ));
        anyhow::Ok(r)
    }
    .await;
    drop(server);
    drop(receiver);
    if let Some(d) = bench_db {
        d.cleanup().await;
    }
    result
}

fn progress(line: &str) {
    eprintln!("bench: {line}");
}

pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    args.apply_quick();
    anyhow::ensure!(
        args.devices > 0 && args.commands > 0,
        "--devices and --commands must be positive"
    );
    let started = Instant::now();
    let started_at = hermod_shared::wire::rfc3339(crate::store::now_ms());
    let root = std::env::temp_dir().join(format!("hermod-bench-{}", hex::encode(rand::random::<[u8; 4]>())));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let mut ctx = Ctx {
        args: args.clone(),
        root: root.clone(),
        runs: 0,
        client_key: hex::encode(rand::random::<[u8; 32]>()),
        server_key: rand::random::<[u8; 32]>().to_vec(),
        secret: WebhookSecret::from_bytes(rand::random()),
    };
    let machine = Machine::describe();
    if args.idle_polls > 0
        && machine
            .open_files_limit
            .is_some_and(|l| (l as usize) < args.idle_polls + 1000)
    {
        progress(&format!(
            "the open files limit ({:?}) is below --idle-polls + 1000: raise it with `ulimit -n 20000`",
            machine.open_files_limit
        ));
    }
    let result = run_scenarios(&mut ctx).await;
    if !args.keep {
        let _ = std::fs::remove_dir_all(&root);
    } else {
        progress(&format!("run folders kept in {}", root.display()));
    }
    let Runs {
        load,
        idle,
        soak,
        edge,
        push,
    } = result?;
    let mut targets = check_targets(&load, &idle);
    targets.extend(edge::check_targets(&edge));
    for r in &push {
        for (what, goal_ms, value) in [
            ("p50", 100.0, r.create_to_push.map(|p| p.p50_ms)),
            ("p99", 1000.0, r.create_to_push.map(|p| p.p99_ms)),
        ] {
            targets.push(TargetCheck {
                target: format!("push on {}: create → push received {what} < {goal_ms} ms", r.db.name()),
                measured: value.map_or("–".into(), |v| format!("{v:.1} ms")),
                met: value.map(|v| v < goal_ms && r.received == r.commands),
            });
        }
    }
    for r in &soak {
        for (what, ratio) in [
            ("CPU per command", r.cpu_per_command_ratio),
            ("answer → callback p50", r.callback_p50_ratio),
            ("answer → callback p99", r.callback_p99_ratio),
        ] {
            targets.push(TargetCheck {
                target: format!(
                    "soak on {}: {what} in the last 5 minutes within 20 % of the first 5",
                    r.db.name()
                ),
                measured: ratio.map_or("–".into(), |x| format!("{:+.0} %", (x - 1.0) * 100.0)),
                met: ratio.map(|x| x <= 1.2),
            });
        }
    }
    let floor = load.iter().find(|r| r.scenario == "e2e" && r.db.is_none());
    let e2e = load
        .iter()
        .filter(|r| r.scenario == "e2e")
        .filter_map(|r| {
            let db = match r.db? {
                DbKind::Sqlite => "sqlite",
                DbKind::Postgres => "postgres",
            };
            Some((
                db.to_owned(),
                E2eSummary {
                    cycles_per_second: r.outcome.per_second,
                    floor_cycles_per_second: floor.map(|f| f.outcome.per_second),
                    ratio_to_floor: r.ratio_to_floor,
                    server_cpu_ms_per_cycle: r.server_cpu_ms_per_command,
                    create_to_device_p99_ms: r.outcome.create_to_receive.map(|p| p.p99_ms),
                    answer_to_callback_p99_ms: r.outcome.answer_to_callback.map(|p| p.p99_ms),
                    server_peak_rss_mb: r.server_peak_rss_mb,
                    lost: r.outcome.lost as u64,
                },
            ))
        })
        .collect();
    let report = Report {
        e2e,
        soak,
        edge,
        push,
        command: std::env::args()
            .enumerate()
            .map(|(i, a)| if i == 0 { "hermod".to_owned() } else { a })
            .collect::<Vec<_>>()
            .join(" "),
        machine,
        started_at,
        minutes: started.elapsed().as_secs_f64() / 60.0,
        load,
        idle,
        targets,
    };
    if let Some(dir) = &args.plot {
        for chart in plot::write(&report, dir)? {
            eprintln!("bench: wrote {}", chart.display());
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report, false));
        if args.markdown {
            println!();
            print!("{}", render(&report, true));
        }
    }
    Ok(())
}

/// The soak: a constant rate for `--soak-minutes`, sampled each minute.
async fn soak_run(ctx: &mut Ctx, kind: DbKind) -> anyhow::Result<SoakResult> {
    let a = ctx.args.clone();
    let label = format!("soak-{}", format!("{kind:?}").to_lowercase());
    let dir = ctx.run_dir(&label)?;
    let total = (a.rate * 60.0 * a.soak_minutes as f64) as usize;
    progress(&format!(
        "soak on {}: {} commands a second for {} minutes ({total} commands), {} devices",
        kind.name(),
        a.rate,
        a.soak_minutes,
        a.devices
    ));
    let track = Track::new(total, false, ctx.secret.clone());
    let receiver = driver::start_receiver(std::sync::Arc::clone(&track)).await?;
    let database = ctx.database(kind, &dir).await?;
    let settings = ctx.settings(ctx.client(&receiver.url)?, &database.url);
    let server = start_hermod(&dir, &settings)?;
    let api_key = ctx.api_key();
    let devices = driver::enrol_devices(&server.base, &api_key, a.devices, 16).await?;
    // The server's CPU time at each minute, from when the first command goes out (the load
    // waits for the devices' first polls: 500 ms and a millisecond a device).
    let pid = server.pid;
    let samples: std::sync::Arc<std::sync::Mutex<Vec<Duration>>> = std::sync::Arc::default();
    let sampler = {
        let samples = std::sync::Arc::clone(&samples);
        let lead = Duration::from_millis(500 + devices.len() as u64);
        tokio::spawn(async move {
            tokio::time::sleep(lead).await;
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                samples.lock().expect("samples").push(Usage::of(pid).cpu);
            }
        })
    };
    let interval = Duration::from_secs_f64(1.0 / a.rate.max(0.01));
    let outcome = driver::run_load(
        &server.base,
        &api_key,
        &devices,
        &track,
        1,
        Duration::from_secs(20),
        Some(interval),
    )
    .await;
    sampler.abort();
    drop(server);
    drop(database);
    let cpu = samples.lock().expect("samples").clone();
    let per_minute: Vec<SoakMinute> = driver::windows(&track, Duration::from_secs(60))
        .into_iter()
        .enumerate()
        .map(|(i, (completed, p))| {
            let used = match (cpu.get(i), cpu.get(i + 1)) {
                (Some(a), Some(b)) => b.saturating_sub(*a).as_secs_f64() * 1000.0,
                _ => 0.0,
            };
            SoakMinute {
                completed,
                server_cpu_ms_per_command: if completed > 0 { used / completed as f64 } else { 0.0 },
                answer_to_callback_p50_ms: p.map(|p| p.p50_ms),
                answer_to_callback_p99_ms: p.map(|p| p.p99_ms),
            }
        })
        .collect();
    Ok(soak_summary(kind, &a, outcome.lost, per_minute))
}

fn soak_summary(db: DbKind, a: &BenchArgs, lost: usize, per_minute: Vec<SoakMinute>) -> SoakResult {
    let span = 5.min(per_minute.len() / 2);
    let mean = |xs: &[SoakMinute], f: &dyn Fn(&SoakMinute) -> Option<f64>| {
        let v: Vec<f64> = xs.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let ratio = |f: &dyn Fn(&SoakMinute) -> Option<f64>| {
        if span == 0 {
            return None;
        }
        let first = mean(&per_minute[..span], f)?;
        let last = mean(&per_minute[per_minute.len() - span..], f)?;
        (first > 0.0).then(|| last / first)
    };
    SoakResult {
        db,
        rate: a.rate,
        minutes: a.soak_minutes,
        lost,
        cpu_per_command_ratio: ratio(&|m| (m.server_cpu_ms_per_command > 0.0).then_some(m.server_cpu_ms_per_command)),
        callback_p50_ratio: ratio(&|m| m.answer_to_callback_p50_ms),
        callback_p99_ratio: ratio(&|m| m.answer_to_callback_p99_ms),
        per_minute,
    }
}

/// What the scenarios measured.
#[derive(Default)]
struct Runs {
    load: Vec<LoadResult>,
    idle: Vec<IdleResult>,
    soak: Vec<SoakResult>,
    edge: Vec<edge::EdgeResult>,
    push: Vec<push::PushResult>,
}

async fn run_scenarios(ctx: &mut Ctx) -> anyhow::Result<Runs> {
    let a = ctx.args.clone();
    let wants = |s: Scenario| a.scenario == Scenario::All || a.scenario == s;
    let failing_everywhere = a.failing_receiver;
    if a.scenario == Scenario::Soak {
        let mut soak = Vec::new();
        for &db in &a.db {
            soak.push(soak_run(ctx, db).await?);
        }
        return Ok(Runs {
            soak,
            ..Runs::default()
        });
    }
    if a.scenario == Scenario::Push {
        let mut runs = Vec::new();
        for &db in &a.db {
            runs.push(push::run(ctx, db).await?);
        }
        return Ok(Runs {
            push: runs,
            ..Runs::default()
        });
    }
    if a.scenario == Scenario::Edge {
        let mut runs = Vec::new();
        for &db in &a.db {
            runs.extend(edge::run(ctx, db).await?);
        }
        return Ok(Runs {
            edge: runs,
            ..Runs::default()
        });
    }
    let mut load = Vec::new();
    let mut idle = Vec::new();
    let needs_floor = wants(Scenario::E2e) || wants(Scenario::History);
    let floor = if needs_floor {
        Some(load_run(ctx, "e2e", None, 0, failing_everywhere).await?)
    } else {
        None
    };
    let failing_floor = if wants(Scenario::Failing) && !failing_everywhere {
        Some(load_run(ctx, "failing", None, 0, true).await?)
    } else {
        None
    };
    load.extend(floor.clone());
    load.extend(failing_floor.clone());
    if wants(Scenario::Idle) {
        idle.push(idle_run(ctx, None).await?);
    }
    for &db in &a.db {
        if wants(Scenario::E2e) {
            load.push(load_run(ctx, "e2e", Some(db), 0, failing_everywhere).await?);
        }
        if wants(Scenario::History) {
            for &h in &a.history {
                load.push(load_run(ctx, &format!("history {h}"), Some(db), h, failing_everywhere).await?);
            }
        }
        if wants(Scenario::Failing) {
            load.push(load_run(ctx, "failing", Some(db), 0, true).await?);
        }
        if wants(Scenario::Idle) {
            idle.push(idle_run(ctx, Some(db)).await?);
        }
    }
    for r in &mut load {
        let base = if r.failing_receiver && !failing_everywhere {
            &failing_floor
        } else {
            &floor
        };
        if let Some(f) = base.as_ref().filter(|f| f.outcome.per_second > 0.0) {
            r.ratio_to_floor = Some(r.outcome.per_second / f.outcome.per_second);
        }
    }
    Ok(Runs {
        load,
        idle,
        ..Runs::default()
    })
}

fn check_targets(load: &[LoadResult], idle: &[IdleResult]) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    let hermod = |scenario: &str, db: DbKind| load.iter().find(|r| r.scenario == scenario && r.db == Some(db));
    for (db, want) in [(DbKind::Sqlite, 0.30), (DbKind::Postgres, 0.15)] {
        if let Some(r) = hermod("e2e", db) {
            let ratio = r.ratio_to_floor.unwrap_or(0.0);
            checks.push(TargetCheck {
                target: format!(
                    "end-to-end throughput ≥ {:.0} % of the floor on {}",
                    want * 100.0,
                    db.name()
                ),
                measured: format!("{:.0} % ({:.0}/s)", ratio * 100.0, r.outcome.per_second),
                met: Some(ratio >= want),
            });
        }
    }
    if let Some(r) = hermod("e2e", DbKind::Sqlite) {
        checks.push(TargetCheck {
            target: "server CPU per cycle ≤ 0.6 ms on SQLite".into(),
            measured: format!("{:.2} ms", r.server_cpu_ms_per_command),
            met: Some(r.server_cpu_ms_per_command <= 0.6),
        });
    }
    for db in [DbKind::Sqlite, DbKind::Postgres] {
        let Some(r) = hermod("e2e", db) else { continue };
        if let Some(p) = r.outcome.create_to_receive {
            checks.push(TargetCheck {
                target: format!("create → device receives p99 < 10 ms on {}", db.name()),
                measured: format!("p99 {:.1} ms", p.p99_ms),
                met: Some(p.p99_ms < 10.0),
            });
        }
        if let Some(p) = r.outcome.answer_to_callback {
            checks.push(TargetCheck {
                target: format!("answer → callback p99 < 20 ms on {}", db.name()),
                measured: format!("p99 {:.1} ms", p.p99_ms),
                met: Some(p.p99_ms < 20.0),
            });
        }
        checks.push(TargetCheck {
            target: format!("server RSS < 64 MB on {}", db.name()),
            measured: format!("{:.0} MB", r.server_peak_rss_mb),
            met: Some(r.server_peak_rss_mb < 64.0),
        });
        checks.push(TargetCheck {
            target: format!("nothing lost on {}", db.name()),
            measured: format!("{} lost", r.outcome.lost),
            met: Some(r.outcome.lost == 0),
        });
    }
    for r in idle.iter().filter(|r| r.server == "hermod") {
        let db = r.db.map_or("", DbKind::name);
        checks.push(TargetCheck {
            target: format!("{} idle long-polls in < 150 MB on {db}", r.polls),
            measured: format!("{:.1} MB", r.rss_idle_mb),
            met: Some(r.rss_idle_mb < 150.0),
        });
        checks.push(TargetCheck {
            target: format!("{} idle long-polls at < 2 % CPU on {db}", r.polls),
            measured: format!("{:.2} %", r.cpu_percent),
            met: Some(r.cpu_percent < 2.0),
        });
    }
    for db in [DbKind::Sqlite, DbKind::Postgres] {
        let runs: Vec<&LoadResult> = load
            .iter()
            .filter(|r| r.db == Some(db) && r.scenario.starts_with("history"))
            .collect();
        if let (Some(first), Some(last)) = (runs.first(), runs.last()) {
            if runs.len() > 1 {
                let ratio = last.outcome.per_second / first.outcome.per_second.max(1e-9);
                checks.push(TargetCheck {
                    target: format!(
                        "throughput with {} in history ≥ 80 % of that with {} on {}",
                        last.history,
                        first.history,
                        db.name()
                    ),
                    measured: format!(
                        "{:.0} % ({:.0}/s vs {:.0}/s)",
                        ratio * 100.0,
                        last.outcome.per_second,
                        first.outcome.per_second
                    ),
                    met: Some(ratio >= 0.8),
                });
            }
        }
    }
    for r in load.iter().filter(|r| r.server == "hermod" && r.failing_receiver) {
        checks.push(TargetCheck {
            target: format!(
                "no callback lost with a receiver failing half its calls ({}, {})",
                r.db.map_or("", DbKind::name),
                r.scenario
            ),
            measured: format!(
                "{} lost of {} ({} calls, {} refused)",
                r.outcome.lost, r.outcome.accepted, r.outcome.receiver_calls, r.outcome.receiver_refused
            ),
            met: Some(r.outcome.lost == 0),
        });
    }
    checks
}

pub(crate) fn pct(p: Option<Percentiles>) -> String {
    match p {
        Some(p) => format!("{:.1} / {:.1} / {:.0}", p.p50_ms, p.p99_ms, p.max_ms),
        None => "–".into(),
    }
}

/// The report as aligned text, or as Markdown tables.
fn render(report: &Report, markdown: bool) -> String {
    let m = &report.machine;
    let mut out = String::new();
    let machine = format!(
        "{} × {} cores, {:.1} GB RAM, {}, Linux {}",
        m.cpu, m.cores, m.memory_gb, m.os, m.kernel
    );
    if markdown {
        out.push_str(&format!(
            "Machine: {machine}. Run {} ({:.0} min).\n\n```sh\n{}\n```\n\n",
            report.started_at, report.minutes, report.command
        ));
    } else {
        out.push_str(&format!("\nMachine: {machine}\nCommand: {}\n\n", report.command));
    }
    let header = [
        "scenario",
        "server",
        "db",
        "devices",
        "commands",
        "in flight",
        "completed/s",
        "× floor",
        "create→device ms p50/p99/max",
        "answer→callback ms p50/p99/max",
        "peak RSS MB",
        "CPU %",
        "CPU ms/cmd",
        "lost",
    ];
    let rows: Vec<Vec<String>> = report
        .load
        .iter()
        .map(|r| {
            vec![
                r.scenario.clone(),
                r.server.clone(),
                r.db.map_or("–", DbKind::name).into(),
                r.devices.to_string(),
                r.outcome.completed.to_string(),
                r.concurrency.to_string(),
                format!("{:.0}", r.outcome.per_second),
                r.ratio_to_floor.map_or("–".into(), |x| format!("{x:.2}")),
                pct(r.outcome.create_to_receive),
                pct(r.outcome.answer_to_callback),
                format!("{:.0}", r.server_peak_rss_mb),
                format!("{:.0}", r.server_cpu_percent),
                format!("{:.2}", r.server_cpu_ms_per_command),
                r.outcome.lost.to_string(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&table(&header, &rows, markdown));
        out.push('\n');
    }
    let idle_header = [
        "idle",
        "db",
        "long-polls",
        "RSS before MB",
        "RSS holding MB",
        "peak RSS MB",
        "CPU % idle",
        "returned",
        "errors",
    ];
    let idle_rows: Vec<Vec<String>> = report
        .idle
        .iter()
        .map(|r| {
            vec![
                r.server.clone(),
                r.db.map_or("–", DbKind::name).into(),
                r.polls.to_string(),
                format!("{:.1}", r.rss_before_mb),
                format!("{:.1}", r.rss_idle_mb),
                format!("{:.1}", r.peak_rss_mb),
                format!("{:.2}", r.cpu_percent),
                r.returned_in_window.to_string(),
                r.errors.to_string(),
            ]
        })
        .collect();
    if !idle_rows.is_empty() {
        out.push_str(&table(&idle_header, &idle_rows, markdown));
        out.push('\n');
    }
    if !report.edge.is_empty() {
        out.push_str(&edge::render(&report.edge, markdown));
        out.push('\n');
    }
    if !report.push.is_empty() {
        out.push_str(&push::render(&report.push, markdown));
        out.push('\n');
    }
    if !report.targets.is_empty() {
        let rows: Vec<Vec<String>> = report
            .targets
            .iter()
            .map(|t| {
                vec![
                    t.target.clone(),
                    t.measured.clone(),
                    match t.met {
                        Some(true) => "met".into(),
                        Some(false) => "NOT met".into(),
                        None => "–".into(),
                    },
                ]
            })
            .collect();
        out.push_str(&table(&["target", "measured", ""], &rows, markdown));
    }
    out
}

pub(crate) fn table(header: &[&str], rows: &[Vec<String>], markdown: bool) -> String {
    let mut out = String::new();
    if markdown {
        out.push_str(&format!("| {} |\n", header.join(" | ")));
        out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
        for r in rows {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        return out;
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
            + "\n"
    };
    out.push_str(&line(header.to_vec()));
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}
