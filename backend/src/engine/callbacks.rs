//! The callback outbox and its delivery worker.
//!
//! Events are written in the transaction that changes a command's state ([`enqueue`]). The
//! worker picks due events (oldest first, one command's events in order, at most
//! `per-receiver-concurrency` in flight per receiver), claims them for a while with a guarded
//! update (so two workers never send the same attempt, and no transaction is held across the
//! HTTP call), delivers them with basic auth and Standard Webhooks signatures, and records every
//! attempt. A failure is retried on the configured schedule with jitter; `Retry-After` is
//! honoured within [delay, 2 × delay]; a timeout or 429 waits at least `overload-pause`;
//! `410 Gone` disables the receiver; an exhausted schedule leaves a dead letter, kept and
//! recoverable. Delivery is at least once: receivers deduplicate on `webhook-id`.

use hermod_shared::webhook::{self, WebhookSecret};
use hermod_shared::wire::{rfc3339, CallbackAttempt, CallbackDelivery, CallbackEvent, DeliveryStatus};
use hermod_shared::CommandId;
use rand::Rng;
use sqlx::AnyConnection;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};

use crate::config::CallbackSettings;
use crate::engine::egress::{coarse_reason, Egress};
use crate::engine::metrics::Metrics;
use crate::store::commands::CommandRow;
use crate::store::{now_ms, random_id, Db};

/// Most of a receiver's answer read (then dropped): enough to keep a small answer's connection
/// for the next delivery, never a large one in memory.
const RESPONSE_BODY_LIMIT: usize = 4096;
/// How long after a claim, beyond the request timeout, another worker may take the event over
/// (when the claiming process died mid-attempt).
const CLAIM_MARGIN_MS: i64 = 5_000;
/// While every due event waits for a busy receiver, how often the worker looks again anyway (for
/// claims of other replicas that lapse).
const BUSY_RECHECK: Duration = Duration::from_millis(500);
use crate::store::GONE;

/// Writes the callback event for a command's new final state, if its client has a callback URL.
pub async fn enqueue(conn: &mut AnyConnection, row: &CommandRow, now: i64) -> sqlx::Result<bool> {
    let receiver: Option<(Option<String>, Option<i64>)> =
        sqlx::query_as("SELECT callback_url, callback_disabled_at FROM clients WHERE id = $1")
            .bind(&row.client_pk)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((Some(_url), disabled)) = receiver else {
        return Ok(false);
    };
    let view = row.view(now, None);
    let event = CallbackEvent {
        event_type: format!("command.{}", view.status.as_str()),
        timestamp: rfc3339(now),
        data: view,
    };
    // A disabled receiver gets nothing, but the event is kept for a recovery.
    let (status, error) = match disabled {
        Some(_) => ("dead", Some(GONE)),
        None => ("pending", None),
    };
    sqlx::query(
        "INSERT INTO callback_events (id, client_pk, command_id, event_type, payload, status, next_attempt_at, created_at, last_error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
    )
    .bind(random_id("msg_"))
    .bind(&row.client_pk)
    .bind(&row.id)
    .bind(&event.event_type)
    .bind(serde_json::to_string(&event).expect("events serialise"))
    .bind(status)
    .bind(now)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(disabled.is_none())
}

/// Every `.cer` (PEM) file in `cacerts`, each logged once as the vendor's product does; a file
/// that is not a certificate stops the start.
pub fn trusted_certificates(cacerts: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let mut trusted = Vec::new();
    if cacerts.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(cacerts)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "cer"))
            .collect();
        files.sort();
        for file in files {
            let pem = std::fs::read(&file)?;
            let name = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| anyhow::anyhow!("{} is not a PEM certificate", file.display()))?;
            trusted.extend(certs);
            let alias = name.trim_end_matches(".cer");
            tracing::info!("Adding certificate {name} using alias {alias}");
        }
    }
    Ok(trusted)
}

/// The HTTP client for callbacks: rustls with the system's roots plus the `cacerts`
/// certificates; redirects are not followed (a 3xx is a failure); every address it connects
/// to has passed the egress policy.
pub fn http_client(
    settings: &CallbackSettings,
    trusted: &[reqwest::Certificate],
    egress: &Egress,
) -> anyhow::Result<reqwest::Client> {
    let mut builder = egress
        .client_builder()
        .timeout(Duration::from_secs_f64(settings.request_timeout))
        .connect_timeout(Duration::from_secs_f64(settings.request_timeout.min(5.0)))
        .user_agent(concat!("Hermod/", env!("CARGO_PKG_VERSION")));
    for cert in trusted {
        builder = builder.add_root_certificate(cert.clone());
    }
    Ok(builder.build()?)
}

use crate::store::outbox::{Attempt, Claimed, Next, Receiver, CANDIDATES_PG_SQL, NEXT_DUE_SQL};

/// Callback events a PostgreSQL replica claimed in the statement that wrote them (an answer's),
/// waiting for the delivery worker: their first attempt needs no query for candidates, no claim
/// statement and no read of the receiver. The worker takes them before it looks in the
/// database. One that waited so long that its claim could lapse mid-attempt is dropped
/// unsent: once the claim lapses, the database path delivers it (this replica's or another's).
#[derive(Default)]
pub struct Handoff {
    queue: Mutex<VecDeque<Claimed>>,
    ready: Notify,
}

impl Handoff {
    /// Events waiting at most; beyond, new events are written unclaimed for the database path.
    const MAX_WAITING: usize = 256;

    /// Whether an event about to be written should be claimed for hand-off.
    pub fn accepting(&self) -> bool {
        self.queue.lock().expect("handoff lock").len() < Self::MAX_WAITING
    }

    pub fn push(&self, event: Claimed) {
        self.queue.lock().expect("handoff lock").push_back(event);
        self.ready.notify_one();
    }

    /// Until when an event written now would be claimed.
    pub fn claim_until(settings: &CallbackSettings, now: i64) -> i64 {
        now + (settings.request_timeout * 1000.0) as i64 + CLAIM_MARGIN_MS
    }
}

/// The delivery worker.
#[derive(Clone)]
pub struct Outbox {
    pub db: Db,
    /// For tenants' receivers: held to the egress policy.
    pub http: reqwest::Client,
    pub egress: Egress,
    /// For the config file's clients: the operator named their receivers.
    pub http_config: reqwest::Client,
    pub settings: Arc<CallbackSettings>,
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    /// Deliveries in flight per client (its receiver) and per tenant.
    in_flight: Arc<Mutex<InFlight>>,
    /// Clients whose last attempt failed: when one answers again, its owed retries are brought
    /// forward (they would otherwise wait out their backoff, minutes after the receiver is back).
    failing: Arc<Mutex<HashSet<String>>>,
    /// Signalled when a delivery ends: a permit and a place at its receiver are free again.
    freed: Arc<Notify>,
    /// Events claimed by this process and not yet recorded.
    claimed: Arc<Mutex<HashSet<String>>>,
    /// Held while candidates are read and chosen, and to give a claim back: a delivery recorded
    /// after the read began cannot leave `claimed` before the choice is made, so a candidate
    /// read before its record is never taken as due again.
    choosing: Arc<tokio::sync::Mutex<()>>,
    /// Events claimed as they were written, to deliver first.
    handoff: Arc<Handoff>,
    /// Deliveries at once (`concurrency`).
    permits: Arc<Semaphore>,
}

/// A place in a receiver's bound of requests at once, given back when dropped.
struct ReceiverSlot {
    in_flight: Arc<Mutex<InFlight>>,
    client_pk: String,
    tenant_id: String,
}

/// Deliveries in flight per client (its receiver) and per tenant.
#[derive(Default)]
struct InFlight {
    clients: HashMap<String, usize>,
    tenants: HashMap<String, usize>,
}

fn decrement(map: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Drop for ReceiverSlot {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.lock().expect("in-flight lock");
        decrement(&mut in_flight.clients, &self.client_pk);
        decrement(&mut in_flight.tenants, &self.tenant_id);
    }
}

enum Outcome {
    Delivered,
    Retry { after: Duration },
    Dead { gone: bool },
}

/// What one attempt came to.
struct Sent {
    status_code: Option<u16>,
    error: Option<String>,
    retry_after: Option<Duration>,
    overloaded: bool,
}

impl Outbox {
    /// The worker of the server whose state this is: `http` for tenants' receivers (held to
    /// the egress policy), `http_config` for the config file's clients.
    pub fn new(state: &crate::engine::AppState, http: reqwest::Client, http_config: reqwest::Client) -> Self {
        let settings = state.settings.callbacks.clone();
        Self {
            permits: Arc::new(Semaphore::new(settings.concurrency)),
            handoff: Arc::clone(&state.handoff),
            db: state.db.clone(),
            http,
            egress: state.egress.clone(),
            http_config,
            settings: Arc::new(settings),
            wake: Arc::clone(&state.outbox),
            metrics: Arc::clone(&state.metrics),
            in_flight: Arc::default(),
            failing: Arc::default(),
            claimed: Arc::default(),
            choosing: Arc::default(),
            freed: Arc::default(),
        }
    }

    /// On one SQLite node no other process can hold a claim: release the claims of attempts
    /// that a crash interrupted, so they go out again at once.
    pub async fn release_stale_claims(&self) -> anyhow::Result<()> {
        sqlx::query("UPDATE callback_events SET claimed_until = 0 WHERE status = 'pending' AND claimed_until > 0")
            .execute(&self.db.write)
            .await?;
        Ok(())
    }

    /// Runs until the task is dropped.
    pub async fn run(self) {
        // Whether the database may hold events to claim now; until when it holds none due.
        let mut look = true;
        let mut deadline = tokio::time::Instant::now();
        loop {
            let waiting = self.start_handed_over();
            let free = self.permits.available_permits();
            let mut blocked = waiting || free == 0;
            if look && free > 0 {
                match self.claim(free).await {
                    Ok(events) if !events.is_empty() => {
                        for event in events {
                            let permit = Arc::clone(&self.permits).acquire_owned().await.expect("semaphore open");
                            self.spawn_delivery(event, permit);
                        }
                        continue;
                    }
                    Ok(_) => {
                        // Nothing claimable. With due events waiting for a receiver at its
                        // bound, only the end of a delivery changes that: wait for one (or a
                        // new event) instead of asking the database again at once.
                        let pause = self.until_next_due().await.unwrap_or(Duration::from_secs(1));
                        blocked |= pause.is_zero();
                        deadline = tokio::time::Instant::now() + if pause.is_zero() { BUSY_RECHECK } else { pause };
                        look = false;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "claiming callback events failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            if blocked {
                // A delivery ending (`freed`) is what changes things now; look anyway after a
                // while, for claims of other replicas that lapse.
                deadline = deadline.max(tokio::time::Instant::now() + BUSY_RECHECK);
            }
            tokio::select! {
                _ = self.freed.notified(), if blocked => look = true,
                _ = self.wake.notified() => look = true,
                // A handed-over event: started at the top of the loop, the database not asked.
                _ = self.handoff.ready.notified() => {}
                _ = tokio::time::sleep_until(deadline) => look = true,
            }
        }
    }

    fn spawn_delivery(&self, event: Claimed, permit: tokio::sync::OwnedSemaphorePermit) {
        let outbox = self.clone();
        tokio::spawn(async move {
            outbox.deliver(event).await;
            drop(permit);
            outbox.freed.notify_one();
        });
    }

    /// Starts the handed-over events that a permit and their receiver's bound allow; returns
    /// whether some still wait.
    fn start_handed_over(&self) -> bool {
        let now = now_ms();
        let least_left = (self.settings.request_timeout * 1000.0) as i64 + CLAIM_MARGIN_MS / 2;
        let mut queue = self.handoff.queue.lock().expect("handoff lock");
        let mut kept = VecDeque::new();
        while let Some(event) = queue.pop_front() {
            if event.claimed_until - now < least_left {
                // Its claim could lapse mid-attempt: the database path takes it once it has.
                continue;
            }
            let permit = match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    kept.push_back(event);
                    continue;
                }
            };
            {
                let mut in_flight = self.in_flight.lock().expect("in-flight lock");
                let busy = |map: &HashMap<String, usize>, key: &str| map.get(key).copied().unwrap_or(0);
                if busy(&in_flight.clients, &event.client_pk) >= self.settings.per_receiver_concurrency
                    || busy(&in_flight.tenants, &event.tenant_id) >= self.settings.per_tenant_concurrency
                {
                    kept.push_back(event);
                    continue;
                }
                *in_flight.clients.entry(event.client_pk.clone()).or_default() += 1;
                *in_flight.tenants.entry(event.tenant_id.clone()).or_default() += 1;
                self.claimed.lock().expect("claimed lock").insert(event.id.clone());
            }
            self.spawn_delivery(event, permit);
        }
        let waiting = !kept.is_empty();
        *queue = kept;
        waiting
    }

    /// How long until the next pending event is due (at most 5 s, for events that other
    /// processes add).
    async fn until_next_due(&self) -> anyhow::Result<Duration> {
        let next: Option<i64> = match &self.db.sqlite_read {
            Some(readers) => readers
                .run(|c| Ok(crate::store::sqlite::next_callback_due(c)?))
                .await
                .map_err(|e| anyhow::anyhow!("reading the outbox: {:?}", e.code))?,
            None => sqlx::query_scalar(NEXT_DUE_SQL).fetch_one(&self.db.read).await?,
        };
        let ms = next.map_or(5_000, |at| (at - now_ms()).clamp(0, 5_000));
        Ok(Duration::from_millis(ms as u64))
    }

    /// Picks due events, oldest first, skipping an event while an older one of the same command
    /// is pending (a command's callbacks arrive in order) and a receiver already at its bound;
    /// then claims them with an update that only succeeds on unclaimed rows.
    async fn claim(&self, free: usize) -> anyhow::Result<Vec<Claimed>> {
        let _choosing = self.choosing.lock().await;
        let now = now_ms();
        let limit = (free * 4 + 16) as i64;
        // Receivers and tenants at their bound are skipped by the query itself.
        let (busy_clients, busy_tenants) = {
            let in_flight = self.in_flight.lock().expect("in-flight lock");
            let busy = |map: &HashMap<String, usize>, bound: usize| {
                let ids: Vec<&String> = map.iter().filter(|(_, n)| **n >= bound).map(|(k, _)| k).collect();
                serde_json::to_string(&ids).expect("ids serialise")
            };
            (
                busy(&in_flight.clients, self.settings.per_receiver_concurrency),
                busy(&in_flight.tenants, self.settings.per_tenant_concurrency),
            )
        };
        let candidates: Vec<Claimed> = match &self.db.sqlite_read {
            Some(readers) => readers
                .run(move |c| {
                    Ok(crate::store::sqlite::callback_candidates(
                        c,
                        now,
                        limit,
                        &busy_clients,
                        &busy_tenants,
                    )?)
                })
                .await
                .map_err(|e| anyhow::anyhow!("reading the outbox: {:?}", e.code))?,
            None => {
                sqlx::query_as(CANDIDATES_PG_SQL)
                    .bind(now)
                    .bind(limit)
                    .bind(busy_clients)
                    .bind(busy_tenants)
                    .fetch_all(&self.db.read)
                    .await?
            }
        };
        let mut chosen: Vec<Claimed> = {
            let in_flight = self.in_flight.lock().expect("in-flight lock");
            let claimed = self.claimed.lock().expect("claimed lock");
            let mut taken_clients: HashMap<String, usize> = HashMap::new();
            let mut taken_tenants: HashMap<String, usize> = HashMap::new();
            let mut chosen = Vec::new();
            for event in candidates {
                if claimed.contains(&event.id) {
                    continue;
                }
                let count = |map: &HashMap<String, usize>, taken: &HashMap<String, usize>, key: &str| {
                    map.get(key).copied().unwrap_or(0) + taken.get(key).copied().unwrap_or(0)
                };
                let receiver_busy = count(&in_flight.clients, &taken_clients, &event.client_pk);
                let tenant_busy = count(&in_flight.tenants, &taken_tenants, &event.tenant_id);
                if receiver_busy < self.settings.per_receiver_concurrency
                    && tenant_busy < self.settings.per_tenant_concurrency
                {
                    *taken_clients.entry(event.client_pk.clone()).or_default() += 1;
                    *taken_tenants.entry(event.tenant_id.clone()).or_default() += 1;
                    chosen.push(event);
                    if chosen.len() == free {
                        break;
                    }
                }
            }
            chosen
        };
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        if self.db.sqlite.is_none() {
            // Several replicas deliver from one PostgreSQL database: a claim in the database
            // (`claimed_until`, taken only on unclaimed rows, SKIP LOCKED so replicas claiming
            // at once pass each other by) makes each attempt one replica's. On SQLite there is
            // one process, and the set of claimed ids in memory is the claim; a crash loses it,
            // and the events go out again at the restart.
            let until = now + (self.settings.request_timeout * 1000.0) as i64 + CLAIM_MARGIN_MS;
            let placeholders: Vec<String> = (0..chosen.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!(
                "UPDATE callback_events SET claimed_until = $1
                 WHERE id IN (SELECT id FROM callback_events
                              WHERE status = 'pending' AND claimed_until <= $2 AND id IN ({})
                              FOR UPDATE SKIP LOCKED)
                 RETURNING id, client_pk, payload, attempts,
                           (SELECT c.tenant_id FROM clients c WHERE c.id = callback_events.client_pk) AS tenant_id,
                           created_at",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_as::<_, Claimed>(&sql).bind(until).bind(now);
            for event in &chosen {
                query = query.bind(&event.id);
            }
            chosen = query.fetch_all(&self.db.write).await?;
        }
        let mut in_flight = self.in_flight.lock().expect("in-flight lock");
        let mut claimed = self.claimed.lock().expect("claimed lock");
        for event in &chosen {
            *in_flight.clients.entry(event.client_pk.clone()).or_default() += 1;
            *in_flight.tenants.entry(event.tenant_id.clone()).or_default() += 1;
            claimed.insert(event.id.clone());
        }
        Ok(chosen)
    }

    async fn deliver(&self, event: Claimed) {
        let mut slot = Some(ReceiverSlot {
            in_flight: Arc::clone(&self.in_flight),
            client_pk: event.client_pk.clone(),
            tenant_id: event.tenant_id.clone(),
        });
        let delivered = match self.try_deliver(&event, &mut slot).await {
            Ok(delivered) => delivered,
            Err(e) => {
                tracing::error!(event = %event.id, error = %e, "recording a callback attempt failed");
                false
            }
        };
        drop(slot);
        {
            let _choosing = self.choosing.lock().await;
            self.claimed.lock().expect("claimed lock").remove(&event.id);
        }
        // An event to try again: the loop may be asleep until this event's claim ran out, so
        // let it look again. (A receiver's bound freed wakes it when it waits for that.)
        if !delivered {
            self.wake.notify_one();
        }
    }

    /// One attempt: send, then record the attempt and the event's next state. True when the
    /// event was delivered.
    async fn try_deliver(&self, event: &Claimed, slot: &mut Option<ReceiverSlot>) -> anyhow::Result<bool> {
        let receiver: Receiver = match (&event.receiver, &self.db.sqlite_read) {
            (Some(receiver), _) => receiver.clone(),
            (None, Some(readers)) => {
                let pk = event.client_pk.clone();
                let (callback_url, callback_basic_auth, callback_secrets, callback_disabled_at, source) = readers
                    .run(move |c| Ok(crate::store::sqlite::receiver(c, &pk)?))
                    .await
                    .map_err(|e| anyhow::anyhow!("reading a receiver: {:?}", e.code))?;
                Receiver {
                    callback_url,
                    callback_basic_auth,
                    callback_secrets,
                    callback_disabled_at,
                    source,
                }
            }
            (None, None) => {
                sqlx::query_as(crate::store::outbox::RECEIVER_SQL)
                    .bind(&event.client_pk)
                    .fetch_one(&self.db.read)
                    .await?
            }
        };
        let started = Instant::now();
        let sent = match (&receiver.callback_url, receiver.callback_disabled_at) {
            (_, Some(_)) => Sent::failed(GONE),
            (None, _) => Sent::failed("the client has no callback URL"),
            (Some(url), None) => self.send(url, &receiver, event).await,
        };
        let duration_ms = started.elapsed().as_millis() as i64;
        // The receiver has answered: its place is free for the next request while this
        // attempt is recorded (the event stays claimed until then).
        drop(slot.take());
        self.freed.notify_one();
        let attempts = event.attempts + 1;
        let outcome = self.outcome(&sent, attempts, receiver.callback_disabled_at.is_some());
        let now = now_ms();
        let last_error = sent
            .error
            .clone()
            .or_else(|| sent.status_code.map(|c| format!("HTTP {c}")));
        let next = match outcome {
            Outcome::Delivered => {
                self.metrics.callbacks_delivered.inc();
                Next::Delivered
            }
            Outcome::Retry { after } => {
                self.metrics.callbacks_retried.inc();
                Next::Retry {
                    at: now + after.as_millis() as i64,
                    last_error,
                }
            }
            Outcome::Dead { gone } => {
                let disable_client = gone && receiver.callback_disabled_at.is_none();
                if disable_client {
                    self.metrics.callback_receivers_disabled.inc();
                    tracing::warn!(client = %event.client_pk, "callback receiver answered 410 Gone: disabled");
                }
                tracing::warn!(event = %event.id, attempts, "callback dead-lettered");
                self.metrics.callbacks_dead.inc();
                Next::Dead {
                    last_error: if gone { Some(GONE.to_owned()) } else { last_error },
                    disable_client,
                }
            }
        };
        let attempt = Attempt {
            event_id: event.id.clone(),
            client_pk: event.client_pk.clone(),
            at: now,
            status_code: sent.status_code.map(i64::from),
            duration_ms,
            error: sent.error,
            attempts,
            next,
        };
        let delivered = matches!(attempt.next, Next::Delivered);
        let exhausted = matches!(
            attempt.next,
            Next::Dead {
                disable_client: false,
                ..
            }
        ) && receiver.callback_disabled_at.is_none();
        match &self.db.sqlite {
            Some(writer) => writer
                .run(move |c| Ok(crate::store::sqlite::record_attempt(c, &attempt)?))
                .await
                .map_err(|e| anyhow::anyhow!("recording an attempt: {:?}", e.code))?,
            None => crate::store::outbox::record(&self.db, &attempt).await?,
        }
        let recovered = {
            let mut failing = self.failing.lock().expect("failing lock");
            if delivered {
                failing.remove(&event.client_pk)
            } else {
                failing.insert(event.client_pk.clone());
                false
            }
        };
        if exhausted {
            self.disable_if_failing_throughout(event).await?;
        }
        if recovered {
            let (pk, now) = (event.client_pk.clone(), now_ms());
            let moved = match &self.db.sqlite {
                Some(writer) => writer
                    .run(move |c| Ok(crate::store::sqlite::bring_forward(c, &pk, now)? as u64))
                    .await
                    .map_err(|e| anyhow::anyhow!("bringing retries forward: {:?}", e.code))?,
                None => crate::store::outbox::bring_forward(&self.db, &pk, now).await?,
            };
            if moved > 0 {
                tracing::info!(client = %event.client_pk, moved, "receiver answers again: its owed callbacks are due now");
                self.wake.notify_one();
            }
        }
        Ok(delivered)
    }

    /// An event ran out of retries: if nothing of its receiver was delivered since the event
    /// was created, the receiver failed for a whole retry window. It is disabled (its later
    /// events dead-lettered at once, recoverable) and the tenant's audit log says so; the admin
    /// API turns it back on (`callback_enabled: true`), as does a new callback URL.
    async fn disable_if_failing_throughout(&self, event: &Claimed) -> anyhow::Result<()> {
        use crate::store::outbox::{DELIVERED_SINCE, DISABLE_FAILING};
        let delivered: i64 = sqlx::query_scalar(DELIVERED_SINCE)
            .bind(&event.client_pk)
            .bind(event.created_at)
            .fetch_one(&self.db.read)
            .await?;
        if delivered > 0 {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.db.begin_write().await?;
        let disabled: Option<(String, String)> = sqlx::query_as(DISABLE_FAILING)
            .bind(now)
            .bind(&event.client_pk)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some((tenant_id, client_id)) = &disabled {
            crate::store::audit::Record {
                tenant_id,
                actor: "hermod",
                action: "callback.disabled",
                target: Some(client_id),
                detail: Some(serde_json::json!({
                    "reason": "every attempt failed for a whole retry window",
                    "event": event.id,
                })),
            }
            .write(&mut tx, now)
            .await?;
            tracing::warn!(client = %client_id, "callback receiver failed for a whole retry window: disabled");
        }
        tx.commit().await?;
        if disabled.is_some() {
            self.metrics.callback_receivers_disabled.inc();
        }
        Ok(())
    }

    fn outcome(&self, sent: &Sent, attempts: i64, disabled: bool) -> Outcome {
        match sent.status_code {
            Some(code) if (200..300).contains(&code) => return Outcome::Delivered,
            Some(410) => return Outcome::Dead { gone: true },
            _ if disabled => return Outcome::Dead { gone: true },
            _ => {}
        }
        let Some(&delay) = self.settings.retry_schedule.get((attempts - 1) as usize) else {
            return Outcome::Dead { gone: false };
        };
        let jitter = self.settings.jitter;
        let factor = if jitter > 0.0 {
            rand::thread_rng().gen_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        let mut after = Duration::from_secs_f64(delay * factor);
        if let Some(asked) = sent.retry_after {
            after = asked.clamp(after, after * 2);
        }
        if sent.overloaded {
            after = after.max(Duration::from_secs_f64(self.settings.overload_pause));
        }
        Outcome::Retry { after }
    }

    async fn send(&self, url: &str, receiver: &Receiver, event: &Claimed) -> Sent {
        let http = if receiver.source == "config" {
            &self.http_config
        } else {
            if let Err(refusal) = self.egress.check(url) {
                return Sent::failed(&refusal.to_string());
            }
            &self.http
        };
        let timestamp = now_ms() / 1000;
        let mut request = http
            .post(url)
            .header("content-type", "application/json")
            .header(webhook::HEADER_ID, &event.id)
            .header(webhook::HEADER_TIMESTAMP, timestamp.to_string());
        let secrets: Vec<WebhookSecret> = receiver
            .callback_secrets
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .filter_map(WebhookSecret::parse)
            .collect();
        if !secrets.is_empty() {
            request = request.header(
                webhook::HEADER_SIGNATURE,
                webhook::signature_header(&secrets, &event.id, timestamp, event.payload.as_bytes()),
            );
        }
        if let Some((user, password)) = receiver.callback_basic_auth.as_deref().and_then(|a| a.split_once(':')) {
            request = request.basic_auth(user, Some(password));
        }
        match request.body(event.payload.clone()).send().await {
            Ok(mut response) => {
                let code = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                // Read a little of the answer, so a small one leaves its connection ready for
                // the next delivery; a larger one is dropped with its connection unread, never
                // held in memory. Nothing of it is kept.
                let mut read = 0;
                while read <= RESPONSE_BODY_LIMIT {
                    match response.chunk().await {
                        Ok(Some(chunk)) => read += chunk.len(),
                        _ => break,
                    }
                }
                Sent {
                    status_code: Some(code),
                    error: None,
                    retry_after,
                    overloaded: code == 429,
                }
            }
            Err(e) => {
                // The tenant sees a coarse reason; the operator's log has the cause (reqwest's
                // text, without the URL: it may hold a password).
                let reason = coarse_reason(&e);
                let overloaded = e.is_timeout();
                tracing::debug!(event = %event.id, client = %event.client_pk, error = %error_chain(&e.without_url()), "callback attempt failed");
                Sent {
                    overloaded,
                    ..Sent::failed(reason)
                }
            }
        }
    }
}

impl Sent {
    fn failed(error: &str) -> Self {
        Self {
            status_code: None,
            error: Some(error.to_owned()),
            retry_after: None,
            overloaded: false,
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v.trim()).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

// ----- visibility and control -----

#[derive(sqlx::FromRow)]
struct EventRow {
    id: String,
    command_id: String,
    event_type: String,
    status: String,
    attempts: i64,
    created_at: i64,
    next_attempt_at: i64,
    delivered_at: Option<i64>,
    last_error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    attempted_at: i64,
    status_code: Option<i64>,
    duration_ms: i64,
    error: Option<String>,
}

const EVENT_COLUMNS: &str =
    "id, command_id, event_type, status, attempts, created_at, next_attempt_at, delivered_at, last_error";

async fn with_attempts(db: &Db, rows: Vec<EventRow>) -> sqlx::Result<Vec<CallbackDelivery>> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let attempts: Vec<AttemptRow> = sqlx::query_as(
            "SELECT attempted_at, status_code, duration_ms, error FROM callback_attempts WHERE event_id = $1 ORDER BY id",
        )
        .bind(&row.id)
        .fetch_all(&db.read)
        .await?;
        let status = match row.status.as_str() {
            "delivered" => DeliveryStatus::Delivered,
            "dead" => DeliveryStatus::Dead,
            _ => DeliveryStatus::Pending,
        };
        out.push(CallbackDelivery {
            command_id: CommandId::parse(&row.command_id).expect("stored ids are valid"),
            next_attempt_at: (status == DeliveryStatus::Pending).then(|| rfc3339(row.next_attempt_at)),
            delivered_at: row.delivered_at.map(rfc3339),
            created_at: rfc3339(row.created_at),
            id: row.id,
            event_type: row.event_type,
            status,
            attempts: row.attempts,
            last_error: row.last_error,
            attempt_log: attempts
                .into_iter()
                .map(|a| CallbackAttempt {
                    at: rfc3339(a.attempted_at),
                    status_code: a.status_code.map(|c| c as u16),
                    duration_ms: a.duration_ms,
                    error: a.error,
                })
                .collect(),
        });
    }
    Ok(out)
}

/// The callbacks of one of the client's commands, oldest first.
pub async fn for_command(db: &Db, client_pk: &str, command_id: &str) -> sqlx::Result<Vec<CallbackDelivery>> {
    let rows = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM callback_events WHERE client_pk = $1 AND command_id = $2 ORDER BY seq"
    ))
    .bind(client_pk)
    .bind(command_id)
    .fetch_all(&db.read)
    .await?;
    with_attempts(db, rows).await
}

/// The client's callbacks created in `[since, until)`, newest first, optionally of one status.
pub async fn for_client(
    db: &Db,
    client_pk: &str,
    status: Option<DeliveryStatus>,
    since: i64,
    until: i64,
    limit: i64,
) -> sqlx::Result<Vec<CallbackDelivery>> {
    let status = match status {
        None => "",
        Some(DeliveryStatus::Pending) => "pending",
        Some(DeliveryStatus::Delivered) => "delivered",
        Some(DeliveryStatus::Dead) => "dead",
    };
    let rows = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM callback_events
         WHERE client_pk = $1 AND created_at >= $2 AND created_at < $3 AND ($4 = '' OR status = $4)
         ORDER BY seq DESC LIMIT $5"
    ))
    .bind(client_pk)
    .bind(since)
    .bind(until)
    .bind(status)
    .bind(limit)
    .fetch_all(&db.read)
    .await?;
    with_attempts(db, rows).await
}

/// Sends one callback again with a fresh retry schedule (and re-enables the receiver).
pub async fn redeliver(db: &Db, client_pk: &str, event_id: &str) -> sqlx::Result<Option<CallbackDelivery>> {
    let mut tx = db.begin_write().await?;
    let updated = sqlx::query(
        "UPDATE callback_events SET status = 'pending', attempts = 0, next_attempt_at = $1, claimed_until = 0
         WHERE id = $2 AND client_pk = $3 AND (status <> 'pending' OR claimed_until = 0)",
    )
    .bind(now_ms())
    .bind(event_id)
    .bind(client_pk)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 1 {
        sqlx::query("UPDATE clients SET callback_disabled_at = NULL WHERE id = $1")
            .bind(client_pk)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let rows = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM callback_events WHERE id = $1 AND client_pk = $2"
    ))
    .bind(event_id)
    .bind(client_pk)
    .fetch_all(&db.read)
    .await?;
    Ok(with_attempts(db, rows).await?.pop())
}

/// Queues again every dead callback of the client created in `[since, until)`, and
/// re-enables its receiver.
pub async fn recover(db: &Db, client_pk: &str, since: i64, until: i64) -> sqlx::Result<u64> {
    let mut tx = db.begin_write().await?;
    let updated = sqlx::query(
        "UPDATE callback_events SET status = 'pending', attempts = 0, next_attempt_at = $1, claimed_until = 0
         WHERE client_pk = $2 AND status = 'dead' AND created_at >= $3 AND created_at < $4",
    )
    .bind(now_ms())
    .bind(client_pk)
    .bind(since)
    .bind(until)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE clients SET callback_disabled_at = NULL WHERE id = $1")
        .bind(client_pk)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(updated.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
