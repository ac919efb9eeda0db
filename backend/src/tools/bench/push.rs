//! The push scenario: how long from a create to the push arriving at a real push service
//! (`web-push-testing` from npm, run with the machine's `node`: it checks the VAPID signature and
//! decrypts each push, as a browser's push service would). `--push-devices` devices subscribe
//! there and register; then `--push-commands` commands go to them one at a time, each timed from
//! sending the create to the push service holding the device's new push (checked every 2 ms).
//! No device long-polls, so every command is pushed.

use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

use super::driver::{self, Percentiles};
use super::edge::free_port;
use super::{progress, start_hermod, Ctx, DbKind};
use crate::config::Secret;
use hermod_device::push::Subscription;

#[derive(Debug, Clone, Serialize)]
pub struct PushResult {
    pub db: DbKind,
    pub devices: usize,
    pub commands: usize,
    /// Pushes that arrived within 5 s of their create.
    pub received: usize,
    /// From sending the create to the push service holding the push.
    pub create_to_push: Option<Percentiles>,
    /// Pushes the server counted as sent (`hermod_push_sent_total`).
    pub sent: u64,
}

/// `node …/web-push-testing/src/bin/server.js PORT`, stopped when dropped.
struct PushService {
    child: std::process::Child,
    base: String,
}

impl Drop for PushService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PushService {
    async fn start(repo: &Path, dir: &Path) -> anyhow::Result<Self> {
        let server = repo
            .canonicalize()
            .with_context(|| format!("--edge-repo {}", repo.display()))?
            .join("node_modules/web-push-testing/src/bin/server.js");
        anyhow::ensure!(
            server.exists(),
            "{} is missing: run `npm ci` in the repository",
            server.display()
        );
        let port = free_port()?;
        let child = std::process::Command::new("node")
            .arg(&server)
            .arg(port.to_string())
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting web-push-testing with node")?;
        let service = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http
            .post(format!("{}/status", service.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            anyhow::ensure!(Instant::now() < deadline, "web-push-testing did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(service)
    }
}

pub(super) async fn run(ctx: &mut Ctx, db: DbKind) -> anyhow::Result<PushResult> {
    let a = ctx.args.clone();
    let dir = ctx.run_dir(&format!("push-{}", db.name()))?;
    progress(&format!(
        "push scenario on {}: {} devices subscribed at web-push-testing, {} commands",
        db.name(),
        a.push_devices,
        a.push_commands
    ));
    let service = PushService::start(&a.edge_repo, &dir).await?;
    let track = driver::Track::new(0, false, ctx.secret.clone());
    let receiver = driver::start_receiver(track).await?;
    let database = ctx.database(db, &dir).await?;
    let mut settings = ctx.settings(ctx.client(&receiver.url)?, &database.url);
    let (vapid, _) = crate::engine::push::generate_vapid_keys();
    settings.push.webpush.vapid_private_key = Some(Secret::new(vapid));
    // web-push-testing names itself `localhost` in its endpoints.
    settings.egress.allow = vec!["localhost".into()];
    let backend = start_hermod(&dir, &settings)?;
    let result = measure(ctx, &backend.base, &service.base, &a).await;
    drop(backend);
    drop(receiver);
    drop(service);
    database.cleanup().await;
    let r = result?;
    progress(&format!(
        "push on {}: {}/{} pushes, create → push {}",
        db.name(),
        r.received,
        r.commands,
        super::pct(r.create_to_push)
    ));
    Ok(PushResult { db, ..r })
}

async fn measure(ctx: &Ctx, base: &str, service: &str, a: &super::BenchArgs) -> anyhow::Result<PushResult> {
    let api_key = ctx.api_key();
    let http = driver::http_client();
    let devices = driver::enrol_devices(base, &api_key, a.push_devices, 16).await?;
    let mut subscriptions = Vec::new();
    for d in &devices {
        let vapid = d
            .push_status()
            .await?
            .webpush_vapid_public_key
            .context("the server offers no Web Push")?;
        let sub = Subscription::create(&http, service, &vapid).await?;
        let r = d.register_push(&sub).await?;
        anyhow::ensure!(r.status().is_success(), "registration refused: {}", r.text().await?);
        subscriptions.push((d.state.user_id.as_str().to_owned(), sub));
    }
    let mut latencies = Vec::new();
    for i in 0..a.push_commands {
        let (user, sub) = &subscriptions[i % subscriptions.len()];
        let seen = sub.received(&http).await?.len();
        let at = Instant::now();
        let r = http
            .post(format!("{base}/command/authenticate"))
            .header("x-api-key", &api_key)
            .json(&json!({ "user_id": user, "timeout": 60 }))
            .send()
            .await?;
        anyhow::ensure!(r.status() == reqwest::StatusCode::CREATED, "create: {}", r.status());
        let deadline = at + Duration::from_secs(5);
        loop {
            if sub.received(&http).await?.len() > seen {
                latencies.push(at.elapsed().as_micros() as u64);
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let metrics = http.get(format!("{base}/metrics")).send().await?.text().await?;
    let sent = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hermod_push_sent_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64;
    Ok(PushResult {
        db: DbKind::Sqlite,
        devices: devices.len(),
        commands: a.push_commands,
        received: latencies.len(),
        create_to_push: Percentiles::of(latencies),
        sent,
    })
}

pub fn render(runs: &[PushResult], markdown: bool) -> String {
    let header = [
        "push scenario",
        "devices",
        "commands",
        "pushes received",
        "create → push ms p50/p99/max",
        "sent (server)",
    ];
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.db.name().into(),
                r.devices.to_string(),
                r.commands.to_string(),
                format!("{}/{}", r.received, r.commands),
                super::pct(r.create_to_push),
                r.sent.to_string(),
            ]
        })
        .collect();
    super::table(&header, &rows, markdown)
}
