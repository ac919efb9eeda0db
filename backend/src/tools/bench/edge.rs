//! The edge scenario (`--scenario edge`): devices long-polling through the edge Worker under
//! `wrangler dev` for a stated time with nothing sent, then a command to each, then creates for a
//! user with one device and for a user with many; and the same against the backend directly.
//! What reaches the backend is read from the backend's own metrics (`hermod_http_requests_total`).
//!
//! [`WranglerDev`] is also how the test suite runs the edge.

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::driver::{self, Percentiles};
use super::{progress, start_hermod, Ctx, DbKind};
use crate::config::Secret;
use hermod_shared::wire::MailboxEventKind;

/// `wrangler dev` serving the built Worker (`edge/build/index.js`) from a config of its own, in
/// its own process group, stopped with the group when dropped.
pub struct WranglerDev {
    child: Child,
    pub base: String,
    dir: tempfile::TempDir,
}

impl Drop for WranglerDev {
    fn drop(&mut self) {
        // wrangler starts node, then workerd, all in the group the child leads. `pkill -g`
        // names that group explicitly (a bare negative pid to `kill` can be read as -1: every
        // process).
        let group = self.child.id().to_string();
        if group != "0" {
            let _ = Command::new("pkill").args(["-TERM", "-g", &group]).status();
            for _ in 0..50 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("pkill").args(["-KILL", "-g", &group]).status();
        }
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (for the edge, whose address the backend's config must name first).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl WranglerDev {
    /// Starts the Worker built in `repo` on 127.0.0.1:`port` in front of `backend`, with the
    /// edge secret, the server key and any further `vars`, and waits (at most 90 s) until it
    /// answers `/ms/time`.
    pub async fn start(
        repo: &Path,
        port: u16,
        backend: &str,
        edge_secret: &str,
        server_key: &str,
        vars: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        // Absolute: wrangler runs in a folder of its own.
        let repo = &repo
            .canonicalize()
            .with_context(|| format!("finding {}", repo.display()))?;
        let worker = repo.join("edge/build/index.js");
        let wrangler = repo.join("node_modules/.bin/wrangler");
        if !worker.exists() || !wrangler.exists() {
            bail!(
                "the edge is not built in {}: ./scripts/test.sh builds it (worker-build, npm ci)",
                repo.display()
            );
        }
        let dir = tempfile::tempdir()?;
        let mut config = format!(
            "name = \"hermod-edge-local\"\nmain = \"{}\"\ncompatibility_date = \"2025-09-01\"\n\
             [[kv_namespaces]]\nbinding = \"HERMOD_EDGE_CACHE\"\nid = \"1\"\n\
             [durable_objects]\nbindings = [{{ name = \"MAILBOX\", class_name = \"Mailbox\" }}]\n\
             [[migrations]]\ntag = \"v1\"\nnew_sqlite_classes = [\"Mailbox\"]\n[vars]\n\
             BACKEND_URL = \"{backend}\"\nEDGE_SECRET = \"{edge_secret}\"\nSERVER_KEY = \"{server_key}\"\n",
            worker.canonicalize()?.display()
        );
        for (k, v) in vars {
            config.push_str(&format!("{k} = \"{v}\"\n"));
        }
        let toml = dir.path().join("wrangler.toml");
        std::fs::write(&toml, config)?;
        let log = std::fs::File::create(dir.path().join("wrangler.log"))?;
        let child = Command::new(wrangler)
            .arg("dev")
            .arg("-c")
            .arg(&toml)
            .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
            .args(["--inspector-port", &free_port()?.to_string()])
            .arg("--persist-to")
            .arg(dir.path().join("state"))
            .current_dir(dir.path())
            .env("CI", "1")
            .env("WRANGLER_SEND_METRICS", "false")
            .env("XDG_CONFIG_HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting wrangler dev")?;
        let edge = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/ms/time", edge.base)).await {
                if r.status().is_success() {
                    return Ok(edge);
                }
            }
            if Instant::now() > deadline {
                bail!("wrangler dev did not start within 90 s:\n{}", edge.log());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// What wrangler printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("wrangler.log")).unwrap_or_default()
    }
}

/// One edge-scenario run, through the edge or straight to the backend.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeResult {
    /// `edge` (through `wrangler dev`) or `direct`.
    pub via: String,
    pub db: DbKind,
    pub devices: usize,
    pub wait_secs: u32,
    pub idle_secs: u64,
    /// Long-polls the devices made in the idle window (each answered empty).
    pub idle_polls: u64,
    /// Requests the backend answered in the idle window, from its own metrics.
    pub backend_requests_idle: u64,
    pub backend_requests_per_device: f64,
    /// Devices that got the command created for them while they long-polled.
    pub woken: usize,
    /// From sending the create to the device's long-poll returning the command.
    pub wake: Option<Percentiles>,
    /// Create's round trip for a user with one device.
    pub create_one_device: Option<Percentiles>,
    /// Create's round trip for a user with `fan_out_devices` devices.
    pub create_many_devices: Option<Percentiles>,
    pub fan_out_devices: usize,
    pub errors: u64,
}

/// Runs the scenario for `db`, through the edge and then directly.
pub(super) async fn run(ctx: &mut Ctx, db: DbKind) -> anyhow::Result<Vec<EdgeResult>> {
    let mut out = Vec::new();
    for via_edge in [true, false] {
        out.push(one(ctx, db, via_edge).await?);
    }
    Ok(out)
}

async fn backend_requests(http: &reqwest::Client, backend: &str) -> anyhow::Result<u64> {
    let text = http.get(format!("{backend}/metrics")).send().await?.text().await?;
    let line = text
        .lines()
        .find(|l| l.starts_with("hermod_http_requests_total "))
        .context("no hermod_http_requests_total in /metrics")?;
    // The scrape counts itself.
    Ok(line.rsplit(' ').next().unwrap_or_default().parse::<f64>()? as u64)
}

async fn one(ctx: &mut Ctx, db: DbKind, via_edge: bool) -> anyhow::Result<EdgeResult> {
    let a = ctx.args.clone();
    let via = if via_edge { "edge" } else { "direct" };
    let dir = ctx.run_dir(&format!("edge-{via}-{}", format!("{db:?}").to_lowercase()))?;
    progress(&format!(
        "edge scenario {via} on {}: {} devices long-polling with wait={} for {} s",
        db.name(),
        a.edge_devices,
        a.edge_wait,
        a.edge_secs
    ));
    let track = driver::Track::new(0, false, ctx.secret.clone());
    let receiver = driver::start_receiver(track).await?;
    let database = ctx.database(db, &dir).await?;
    let mut settings = ctx.settings(ctx.client(&receiver.url)?, &database.url);
    let edge_port = free_port()?;
    let edge_secret = hex::encode(rand::random::<[u8; 24]>());
    if via_edge {
        settings.edge.secret = Some(Secret::new(edge_secret.clone()));
        settings.public_url = Some(format!("http://127.0.0.1:{edge_port}/ms"));
    }
    let backend = start_hermod(&dir, &settings)?;
    let edge = if via_edge {
        let key = settings
            .server_key
            .as_ref()
            .map(|k| k.expose().to_owned())
            .unwrap_or_default();
        Some(
            WranglerDev::start(
                &a.edge_repo,
                edge_port,
                &backend.base,
                &edge_secret,
                &key,
                // The bench's own devices share one address and poll far more than one device.
                &[("RATE_LIMIT_IP", "1000000/60"), ("RATE_LIMIT_DEVICE", "100000/60")],
            )
            .await?,
        )
    } else {
        None
    };
    let base = edge.as_ref().map_or(backend.base.clone(), |e| e.base.clone());
    let result = measure(ctx, &base, &backend.base, &a).await;
    drop(edge);
    drop(backend);
    drop(receiver);
    database.cleanup().await;
    let mut r = result?;
    r.via = via.into();
    r.db = db;
    progress(&format!(
        "  {} long-polls, {} backend requests ({:.2} per device); woken {}/{} (p50 {}); create 1 device p50 {} / {} devices p50 {}",
        r.idle_polls,
        r.backend_requests_idle,
        r.backend_requests_per_device,
        r.woken,
        r.devices,
        r.wake.map_or("–".into(), |p| format!("{:.1} ms", p.p50_ms)),
        r.create_one_device.map_or("–".into(), |p| format!("{:.1} ms", p.p50_ms)),
        r.fan_out_devices,
        r.create_many_devices.map_or("–".into(), |p| format!("{:.1} ms", p.p50_ms)),
    ));
    Ok(r)
}

async fn measure(ctx: &Ctx, base: &str, backend: &str, a: &super::BenchArgs) -> anyhow::Result<EdgeResult> {
    let api_key = ctx.api_key();
    let http = driver::http_client();
    let devices = driver::enrol_devices(base, &api_key, a.edge_devices, 16).await?;
    // Each device's first poll: through the edge it is forwarded (the edge knows nothing yet).
    let mut primed = Vec::new();
    for mut d in devices {
        d.poll(0).await.context("a device's first poll")?;
        primed.push(d);
    }

    // Idle: every device long-polls in a loop; nothing is sent.
    let errors = Arc::new(AtomicU64::new(0));
    let polls = Arc::new(AtomicU64::new(0));
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let loops: Vec<_> = primed
        .into_iter()
        .map(|mut d| {
            let (errors, polls, arrivals) = (Arc::clone(&errors), Arc::clone(&polls), Arc::clone(&arrivals));
            let wait = a.edge_wait;
            tokio::spawn(async move {
                loop {
                    match d.poll(wait).await {
                        Ok(page) => {
                            polls.fetch_add(1, Ordering::Relaxed);
                            let now = Instant::now();
                            let mut seen = arrivals.lock().expect("arrivals");
                            for item in page.items.iter().filter(|i| i.kind == MailboxEventKind::Command) {
                                seen.entry(item.command.id.to_string()).or_insert(now);
                            }
                        }
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("bench: a long-poll failed: {e:#}");
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            })
        })
        .collect();
    let before = backend_requests(&http, backend).await?;
    let polls_before = polls.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(a.edge_secs)).await;
    let after = backend_requests(&http, backend).await?;
    let idle_polls = polls.load(Ordering::Relaxed) - polls_before;
    // The second scrape counted itself.
    let idle_requests = after.saturating_sub(before + 1);

    // A command to each device while it long-polls, one every 50 ms.
    let mut sent = Vec::new();
    for i in 0..a.edge_devices {
        let at = Instant::now();
        let created: Value = create(&http, base, &api_key, &format!("bench-user-{i}")).await?;
        sent.push((created["id"].as_str().unwrap_or_default().to_owned(), at));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while arrivals.lock().expect("arrivals").len() < sent.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for l in &loops {
        l.abort();
    }
    let wake: Vec<u64> = {
        let seen = arrivals.lock().expect("arrivals");
        sent.iter()
            .filter_map(|(id, at)| seen.get(id).map(|t| t.duration_since(*at).as_micros() as u64))
            .collect()
    };
    let woken = wake.len();

    // Create latency: a user with one device against a user with many, taking turns.
    driver::enrol_devices_for(base, &api_key, "bench-solo", 1).await?;
    driver::enrol_devices_for(base, &api_key, "bench-many", a.edge_fan_out).await?;
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for _ in 0..a.edge_creates {
        for (user, into) in [("bench-solo", &mut one), ("bench-many", &mut many)] {
            let at = Instant::now();
            create(&http, base, &api_key, user).await?;
            into.push(at.elapsed().as_micros() as u64);
        }
    }
    Ok(EdgeResult {
        via: String::new(),
        db: DbKind::Sqlite,
        devices: a.edge_devices,
        wait_secs: a.edge_wait,
        idle_secs: a.edge_secs,
        idle_polls,
        backend_requests_idle: idle_requests,
        backend_requests_per_device: idle_requests as f64 / a.edge_devices.max(1) as f64,
        woken,
        wake: Percentiles::of(wake),
        create_one_device: Percentiles::of(one),
        create_many_devices: Percentiles::of(many),
        fan_out_devices: a.edge_fan_out,
        errors: errors.load(Ordering::Relaxed),
    })
}

async fn create(http: &reqwest::Client, base: &str, api_key: &str, user: &str) -> anyhow::Result<Value> {
    let r = http
        .post(format!("{base}/command/authenticate"))
        .header("x-api-key", api_key)
        .json(&json!({ "user_id": user }))
        .send()
        .await?;
    if r.status() != reqwest::StatusCode::CREATED {
        bail!("create refused: {} {}", r.status(), r.text().await.unwrap_or_default());
    }
    Ok(r.json().await?)
}

/// The bounds: at most one backend request per idle device through the edge, a wake
/// p50 under 50 ms, and a create for many devices within 2× of one device's.
pub fn check_targets(runs: &[EdgeResult]) -> Vec<super::TargetCheck> {
    let mut checks = Vec::new();
    for r in runs.iter().filter(|r| r.via == "edge") {
        let on = r.db.name();
        checks.push(super::TargetCheck {
            target: format!(
                "edge on {on}: {} devices long-polling (wait={}) for {} s cost the backend ≤ 1 request each",
                r.devices, r.wait_secs, r.idle_secs
            ),
            measured: format!(
                "{} requests ({:.2} each)",
                r.backend_requests_idle, r.backend_requests_per_device
            ),
            met: Some(r.backend_requests_idle <= r.devices as u64),
        });
        checks.push(super::TargetCheck {
            target: format!("edge on {on}: every device woken, p50 < 50 ms"),
            measured: format!(
                "{}/{} woken, p50 {}",
                r.woken,
                r.devices,
                r.wake.map_or("–".into(), |p| format!("{:.1} ms", p.p50_ms))
            ),
            met: Some(r.woken == r.devices && r.wake.is_some_and(|p| p.p50_ms < 50.0)),
        });
        let (one, many) = (r.create_one_device, r.create_many_devices);
        checks.push(super::TargetCheck {
            target: format!(
                "edge on {on}: create for a user with {} devices, p50 within 2× of one device's",
                r.fan_out_devices
            ),
            measured: match (one, many) {
                (Some(o), Some(m)) => format!("{:.1} ms vs {:.1} ms ({:.2}×)", m.p50_ms, o.p50_ms, m.p50_ms / o.p50_ms),
                _ => "–".into(),
            },
            met: one.zip(many).map(|(o, m)| m.p50_ms <= 2.0 * o.p50_ms),
        });
    }
    checks
}

/// The edge runs as a table.
pub fn render(runs: &[EdgeResult], markdown: bool) -> String {
    let header = [
        "edge scenario",
        "db",
        "devices",
        "wait s",
        "idle s",
        "long-polls",
        "backend requests",
        "per device",
        "woken",
        "wake ms p50/p99/max",
        "create 1 device ms p50/p99",
        "create N devices ms p50/p99",
        "errors",
    ];
    let two = |p: Option<Percentiles>| p.map_or("–".into(), |p| format!("{:.1} / {:.1}", p.p50_ms, p.p99_ms));
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.via.clone(),
                r.db.name().into(),
                r.devices.to_string(),
                r.wait_secs.to_string(),
                r.idle_secs.to_string(),
                r.idle_polls.to_string(),
                r.backend_requests_idle.to_string(),
                format!("{:.2}", r.backend_requests_per_device),
                format!("{}/{}", r.woken, r.devices),
                super::pct(r.wake),
                two(r.create_one_device),
                format!("{} (N = {})", two(r.create_many_devices), r.fan_out_devices),
                r.errors.to_string(),
            ]
        })
        .collect();
    super::table(&header, &rows, markdown)
}
