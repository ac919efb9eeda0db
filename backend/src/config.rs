//! Settings: a `hermod-conf.yml` in the format of the vendor's articles (kebab-case keys, and
//! the older camelCase spellings), then environment variables (`HERMOD_PUBLIC_URL`,
//! `HERMOD_SERVER__PORT`, `HERMOD_DATABASE__URL` or plain `DATABASE_URL`, …).

use figment::providers::{Env, Format, Yaml};
use figment::Figment;
use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A secret setting, the one type every secret of the config file has: `Debug` never prints
/// it, it has no `Display` and no `Serialize` (nor has any settings type holding it), and the
/// code reads it only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct Settings {
    pub server: ServerSettings,
    /// The URL devices reach Hermod's mailbox at, e.g. `https://msg.example.com/ms`.
    #[serde(alias = "publicUrl")]
    pub public_url: Option<String>,
    #[serde(alias = "allowedClients")]
    pub allowed_clients: Vec<AllowedClient>,
    pub database: DatabaseSettings,
    pub commands: CommandSettings,
    pub devices: DeviceSettings,
    pub callbacks: CallbackSettings,
    pub edge: EdgeSettings,
    pub admin: AdminSettings,
    pub egress: EgressSettings,
    pub push: PushSettings,
    #[serde(alias = "longPolls")]
    pub long_polls: LongPollSettings,
    pub retention: RetentionSettings,
    /// Base64 of at least 32 bytes (`HERMOD_SERVER_KEY`): the key device secrets and enrolment
    /// tokens derive from. Replicas and the edge must share it. Made at first start when absent.
    pub server_key: Option<Secret>,
    /// The server's key ring (`<id> <base64>` a line, the last current; see `engine::keys`).
    /// Relative to the config file. Made at first start on SQLite when absent.
    pub server_key_file: Option<PathBuf>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Serve the `/generate-client` page.
    pub generate_client_page: bool,
    /// Serve the `/demo` page, acting as this `allowed-clients` entry (off when unset).
    pub demo_page_client: Option<String>,
    /// Extra CA certificates (PEM `.cer`) trusted for callbacks. Relative to the config file.
    pub cacerts: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: ServerSettings::default(),
            public_url: None,
            allowed_clients: Vec::new(),
            database: DatabaseSettings::default(),
            commands: CommandSettings::default(),
            devices: DeviceSettings::default(),
            callbacks: CallbackSettings::default(),
            edge: EdgeSettings::default(),
            admin: AdminSettings::default(),
            egress: EgressSettings::default(),
            push: PushSettings::default(),
            long_polls: LongPollSettings::default(),
            retention: RetentionSettings::default(),
            server_key: None,
            server_key_file: None,
            max_body_bytes: 64 * 1024,
            generate_client_page: true,
            demo_page_client: None,
            cacerts: PathBuf::from("cacerts"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct ServerSettings {
    pub address: IpAddr,
    pub port: u16,
    pub ssl: SslSettings,
    /// Connections open at once; one more is closed at once.
    pub max_connections: usize,
    /// Connections open at once from one IP address. Behind a reverse proxy or a large NAT,
    /// raise it (every connection then comes from a few addresses).
    pub max_connections_per_ip: usize,
    /// Seconds a client has to send a request's headers (and to finish a TLS handshake); also
    /// how long an idle keep-alive connection stays open.
    pub header_read_timeout: f64,
    /// Seconds a client has to send a request's body once its headers are in.
    pub body_read_timeout: f64,
    /// Seconds requests in flight get to finish at shutdown before their connections close.
    pub shutdown_grace: f64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            address: IpAddr::from([0, 0, 0, 0]),
            port: 8080,
            ssl: SslSettings::default(),
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            header_read_timeout: 10.0,
            body_read_timeout: 15.0,
            shutdown_grace: 10.0,
        }
    }
}

#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct SslSettings {
    pub enabled: bool,
    #[serde(alias = "keyStore")]
    pub key_store: Option<PathBuf>,
    #[serde(alias = "keyStorePassword")]
    pub key_store_password: Option<Secret>,
    #[serde(alias = "keyStoreType")]
    pub key_store_type: Option<String>,
}

impl fmt::Debug for SslSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SslSettings")
            .field("enabled", &self.enabled)
            .field("key_store", &self.key_store)
            .field(
                "key_store_password",
                &self.key_store_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// One `allowed-clients` entry, as the seeds write it.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AllowedClient {
    #[serde(alias = "clientId")]
    pub client_id: String,
    pub key: Secret,
    pub group: String,
    #[serde(default, alias = "callbackUrl")]
    pub callback_url: Option<String>,
    /// `username:password` sent as HTTP Basic auth with every callback.
    #[serde(default, alias = "callbackBasicAuth")]
    pub callback_basic_auth: Option<Secret>,
    /// `whsec_…` secrets that sign callbacks (Standard Webhooks); list two during a rotation.
    #[serde(default, alias = "callbackSigningSecrets")]
    pub callback_signing_secrets: Vec<Secret>,
}

impl fmt::Debug for AllowedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllowedClient")
            .field("client_id", &self.client_id)
            .field("group", &self.group)
            .field(
                "callback_url",
                &self.callback_url.as_deref().map(crate::domain::egress::redacted),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct DatabaseSettings {
    /// `sqlite://path/to/hermod.db` (created on first start). Relative paths are relative to
    /// the working directory.
    pub url: String,
    /// PostgreSQL: connections per replica.
    pub max_connections: u32,
    /// PostgreSQL: seconds a request waits for a connection; then it is answered 503 with
    /// `Retry-After` (the database is down or overloaded) instead of queueing.
    pub acquire_timeout: f64,
    /// PostgreSQL: seconds a starting replica waits for its database before it gives up.
    pub startup_wait: f64,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A PostgreSQL URL may hold a password: shown without it.
        let url = match url::Url::parse(&self.url) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("<redacted>"));
                url.to_string()
            }
            _ => self.url.clone(),
        };
        f.debug_struct("DatabaseSettings")
            .field("url", &url)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("startup_wait", &self.startup_wait)
            .finish()
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://hermod.db".into(),
            max_connections: 16,
            acquire_timeout: 1.5,
            startup_wait: 60.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct CommandSettings {
    /// Seconds a command stays in the mailbox when the request names no `timeout`.
    pub default_timeout: u32,
    /// Seconds a command stays in history when the request names no `lifespan`.
    pub default_lifespan: u32,
    /// Longest `wait` (seconds) of a long-poll, for clients and devices.
    pub max_wait: u32,
    /// How often (milliseconds) timed-out and ended commands are swept.
    pub sweep_interval_ms: u64,
    /// How old (seconds) a QR frame may be when a device claims a command with it: a frame
    /// changes every second, so a few seconds cover scanning and sending, not a relayed image.
    pub qr_max_age: u32,
}

impl Default for CommandSettings {
    fn default() -> Self {
        Self {
            default_timeout: 120,
            default_lifespan: 86_400,
            max_wait: 60,
            sweep_interval_ms: 1000,
            qr_max_age: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct DeviceSettings {
    /// How far (seconds) a signed request's timestamp may be from the server's clock.
    pub signature_window: i64,
}

impl Default for DeviceSettings {
    fn default() -> Self {
        Self {
            signature_window: hermod_shared::signing::DEFAULT_WINDOW_SECS,
        }
    }
}

/// Running behind the edge Worker (hosted mode).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct EdgeSettings {
    /// The secret shared with the edge (`HERMOD_EDGE__SECRET`, at least 32 characters). When set,
    /// every API request must carry a valid `Hermod-Edge-Assertion`: the backend sits behind
    /// the edge and answers nothing else.
    pub secret: Option<Secret>,
}

/// The admin API (`/admin`) for hosted tenants.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct AdminSettings {
    /// The operator's token (`HERMOD_ADMIN__OPERATOR_KEY`, at least 32 characters), sent as
    /// `Authorization: Bearer`: it creates tenants and sets their quotas. Without it, only
    /// tenant admin tokens work and no tenant can be created.
    pub operator_key: Option<Secret>,
    /// Admin requests a second per token (per replica); beyond it, 429 with `Retry-After`.
    pub rate_limit: u32,
    /// Seconds between summaries of failed authentications in the audit log.
    pub auth_failure_summary: f64,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            operator_key: None,
            rate_limit: 20,
            auth_failure_summary: 60.0,
        }
    }
}

/// How long what is finished is kept (seconds), and how the sweeper removes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RetentionSettings {
    /// Seconds between passes.
    pub interval: f64,
    /// Rows removed per write.
    pub batch: u32,
    /// Delivered callbacks and their attempts, after they were created: 7 days.
    pub callbacks: u64,
    /// Dead letters (recoverable until then): 30 days.
    pub dead_callbacks: u64,
    /// The audit log: 365 days.
    pub audit: u64,
    /// Revoked devices, after their revocation: 30 days.
    pub revoked_devices: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            interval: 60.0,
            batch: 1_000,
            callbacks: 7 * 86_400,
            dead_callbacks: 30 * 86_400,
            audit: 365 * 86_400,
            revoked_devices: 30 * 86_400,
        }
    }
}

/// Caps on long-polls (see `engine::longpoll` for what happens at each).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct LongPollSettings {
    /// Long-polls open at once; one more is refused with 503 and `Retry-After`.
    pub max: usize,
    /// Long-polls of one device; a newer one releases its oldest (answered at once).
    pub per_device: usize,
    /// Status long-polls of one client; one more is refused with 429 and `Retry-After`.
    pub per_client: usize,
}

impl Default for LongPollSettings {
    fn default() -> Self {
        Self {
            max: 8_000,
            per_device: 2,
            per_client: 200,
        }
    }
}

/// Where Hermod's own outgoing requests (callbacks) may connect. Public addresses always; an
/// internal one (loopback, private, CGNAT, link-local and metadata, unique-local, …) only when
/// allowed here or named by a callback URL of this file. See `domain::egress`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct EgressSettings {
    /// CIDRs (`10.20.0.0/16`) and hosts (`receiver.internal`, on any port) allowed
    /// besides public addresses.
    pub allow: Vec<String>,
    /// Fixed addresses for names, used instead of DNS (like `curl --resolve`); the address is
    /// still judged by the policy.
    pub hosts: std::collections::BTreeMap<String, IpAddr>,
}

/// How Hermod wakes devices that are not long-polling (`push.*`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct PushSettings {
    pub webpush: WebPushSettings,
}

/// Web Push (RFC 8030) with VAPID (RFC 8292): off until a key is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct WebPushSettings {
    /// The VAPID private key: base64url of the 32-byte P-256 scalar (`hermod push-keys` makes
    /// one). Devices subscribe with its public key.
    pub vapid_private_key: Option<Secret>,
    /// Who runs this server, for push services to reach (`mailto:` or `https:`), the VAPID `sub`.
    pub subject: String,
}

impl Default for WebPushSettings {
    fn default() -> Self {
        Self {
            vapid_private_key: None,
            subject: "mailto:hermod@localhost".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct CallbackSettings {
    /// Seconds to wait before each retry after a failed attempt; one attempt more than entries.
    pub retry_schedule: Vec<f64>,
    /// Each retry's delay is moved by up to this fraction either way.
    pub jitter: f64,
    /// Seconds one attempt may take.
    pub request_timeout: f64,
    /// Deliveries in flight at once, over all receivers.
    pub concurrency: usize,
    /// Deliveries in flight at once to one client's receiver, so a slow one cannot hold up
    /// the others.
    pub per_receiver_concurrency: usize,
    /// Deliveries in flight at once for one tenant's receivers together, so one tenant's slow
    /// receivers cannot take every slot.
    pub per_tenant_concurrency: usize,
    /// Least seconds to wait after a timeout or a 429 before trying that event again.
    pub overload_pause: f64,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        Self {
            // 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 3 h, 6 h, 12 h, 12 h: the last attempt about
            // 35 hours after the first.
            retry_schedule: vec![
                5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 10_800.0, 21_600.0, 43_200.0, 43_200.0,
            ],
            jitter: 0.2,
            request_timeout: 15.0,
            // A quarter of the slots per receiver: a busy receiver gets parallel deliveries
            // (4 made one receiver the bottleneck in the benchmark), and three slow ones still
            // leave a quarter for everyone else.
            concurrency: 64,
            per_receiver_concurrency: 16,
            per_tenant_concurrency: 32,
            overload_pause: 60.0,
        }
    }
}

/// A key in the file that no setting reads is most likely a typo (`callback-ulr`), and a typo
/// in a security setting must not pass unnoticed: the start stops and names it.
fn refuse_unknown_keys(file: &Path) -> anyhow::Result<()> {
    use figment::Provider;
    let data = Yaml::file(file).data()?;
    let Some(dict) = data.into_values().next() else {
        return Ok(());
    };
    let value = figment::value::Value::from(dict);
    let mut unknown = Vec::new();
    // Type errors are reported by the extraction that follows, with their place.
    let _ = serde_ignored::deserialize(&value, |path| unknown.push(path.to_string())).map(|_: Settings| ());
    let known = known_keys();
    anyhow::ensure!(
        unknown.is_empty(),
        "{}: unknown setting{} {} (check the spelling against README.md)",
        file.display(),
        if unknown.len() > 1 { "s" } else { "" },
        unknown
            .iter()
            .map(|path| match nearest(path.rsplit('.').next().unwrap_or(path), &known) {
                Some(name) => format!("`{path}` (did you mean `{name}`?)"),
                None => format!("`{path}`"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Every key name the file may use, at any level: the settings' own, an allowed client's and
/// the seeds' camelCase spellings.
fn known_keys() -> std::collections::BTreeSet<String> {
    use serde_reflection::{ContainerFormat, Tracer, TracerConfig};
    // The settings are not `Serialize` (they hold secrets): their field names come from what
    // their `Deserialize` asks for, traced.
    let mut tracer = Tracer::new(TracerConfig::default());
    let mut out = std::collections::BTreeSet::new();
    if tracer.trace_simple_type::<Settings>().is_ok() {
        // Unchecked: an enum's variants need not all be traced for the field names.
        for container in tracer.registry_unchecked().values() {
            if let ContainerFormat::Struct(fields) = container {
                out.extend(fields.iter().map(|f| f.name.clone()));
            }
        }
    }
    out.extend(
        [
            "clientId",
            "callbackUrl",
            "callbackBasicAuth",
            "callbackSigningSecrets",
            "publicUrl",
            "allowedClients",
            "longPolls",
            "keyStore",
            "keyStorePassword",
            "keyStoreType",
        ]
        .map(String::from),
    );
    out
}

/// The known name closest to a misspelt one, if it is close enough to be what was meant.
fn nearest(name: &str, known: &std::collections::BTreeSet<String>) -> Option<String> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(name, k), k))
        .filter(|(d, k)| *d > 0 && *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

impl Settings {
    /// Reads the file (if given), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            anyhow::ensure!(file.exists(), "config file {} not found", file.display());
            refuse_unknown_keys(file)?;
            figment = figment.merge(Yaml::file(file));
        }
        let settings: Settings = figment
            .merge(Env::raw().only(&["DATABASE_URL"]).map(|_| "database.url".into()))
            .merge(
                Env::prefixed("HERMOD_")
                    .ignore(&["LOG", "CONFIG", "RECEIVER_SECRET"])
                    .map(|k| k.as_str().replace("__", ".").replace('_', "-").into())
                    .split("."),
            )
            .extract()?;
        let mut settings = settings;
        if let Some(dir) = file.and_then(Path::parent) {
            if settings.cacerts.is_relative() {
                settings.cacerts = dir.join(&settings.cacerts);
            }
            if let Some(file) = settings.server_key_file.as_mut().filter(|f| f.is_relative()) {
                *file = dir.join(&*file);
            }
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Reads settings from YAML text alone (no file, no environment) and validates them, as
    /// `load` does: for tools and the config fuzz target.
    pub fn from_yaml(yaml: &str) -> anyhow::Result<Self> {
        let settings: Settings = Figment::new().merge(Yaml::string(yaml)).extract()?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        hermod_shared::Lifetimes::new(self.commands.default_timeout, self.commands.default_lifespan).map_err(|_| {
            anyhow::anyhow!("commands.default-timeout must be positive and less than commands.default-lifespan")
        })?;
        if let Some(key) = &self.push.webpush.vapid_private_key {
            anyhow::ensure!(
                crate::domain::push::vapid_key_ok(key.expose()),
                "push.webpush.vapid-private-key must be base64url of a 32-byte P-256 private key (make one with `hermod push-keys`)"
            );
            anyhow::ensure!(
                self.push.webpush.subject.starts_with("mailto:") || self.push.webpush.subject.starts_with("https://"),
                "push.webpush.subject must be a mailto: or https: URL"
            );
        }
        if let Some(demo) = &self.demo_page_client {
            anyhow::ensure!(
                self.allowed_clients.iter().any(|c| &c.client_id == demo),
                "demo-page-client: {demo} is not an allowed-clients entry"
            );
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.allowed_clients {
            anyhow::ensure!(
                !c.client_id.is_empty() && !c.client_id.contains(':'),
                "allowed-clients: client-id must be non-empty without ':'"
            );
            anyhow::ensure!(
                seen.insert(&c.client_id),
                "allowed-clients: client-id {} appears twice",
                c.client_id
            );
            anyhow::ensure!(
                c.key.expose().len() >= 32,
                "allowed-clients: the key of {} is shorter than 32 characters",
                c.client_id
            );
            anyhow::ensure!(!c.group.is_empty(), "allowed-clients: {} has no group", c.client_id);
            if let Some(url) = &c.callback_url {
                crate::domain::callback::callback_url(url)
                    .map_err(|rule| anyhow::anyhow!("allowed-clients: the callback-url of {} {rule}", c.client_id))?;
            }
            for warning in
                hermod_shared::admin::callback_warnings(c.callback_url.as_deref(), c.callback_basic_auth.is_some())
            {
                tracing::warn!(client = %c.client_id, "{warning}");
            }
            if let Some(auth) = &c.callback_basic_auth {
                crate::domain::callback::basic_auth(auth.expose()).map_err(|rule| {
                    anyhow::anyhow!("allowed-clients: the callback-basic-auth of {} {rule}", c.client_id)
                })?;
            }
            for s in &c.callback_signing_secrets {
                anyhow::ensure!(
                    hermod_shared::webhook::WebhookSecret::parse(s.expose()).is_some(),
                    "allowed-clients: a callback-signing-secret of {} is not a whsec_ secret",
                    c.client_id
                );
            }
        }
        for entry in &self.egress.allow {
            crate::domain::egress::Allowance::parse(entry).map_err(|e| anyhow::anyhow!("egress.allow: {e}"))?;
        }
        anyhow::ensure!(self.callbacks.concurrency > 0, "callbacks.concurrency must be positive");
        anyhow::ensure!(
            self.callbacks.per_receiver_concurrency > 0 && self.callbacks.per_tenant_concurrency > 0,
            "callbacks.per-receiver-concurrency and callbacks.per-tenant-concurrency must be positive"
        );
        let cb = &self.callbacks;
        anyhow::ensure!(
            cb.retry_schedule.len() <= 50
                && cb
                    .retry_schedule
                    .iter()
                    .all(|d| d.is_finite() && (0.0..=7.0 * 86_400.0).contains(d)),
            "callbacks.retry-schedule: at most 50 delays, each 0 to 604800 seconds"
        );
        anyhow::ensure!(
            cb.request_timeout.is_finite() && cb.request_timeout > 0.0 && cb.request_timeout <= 300.0,
            "callbacks.request-timeout must be in (0, 300] seconds"
        );
        anyhow::ensure!(
            cb.overload_pause.is_finite() && (0.0..=86_400.0).contains(&cb.overload_pause),
            "callbacks.overload-pause must be 0 to 86400 seconds"
        );
        anyhow::ensure!(
            (1..=3600).contains(&self.devices.signature_window),
            "devices.signature-window must be 1 to 3600 seconds"
        );
        anyhow::ensure!(
            (1..=3600).contains(&self.commands.max_wait),
            "commands.max-wait must be 1 to 3600 seconds"
        );
        anyhow::ensure!(
            self.commands.qr_max_age <= 60,
            "commands.qr-max-age must be 0 to 60 seconds"
        );
        anyhow::ensure!(
            (10..=60_000).contains(&self.commands.sweep_interval_ms),
            "commands.sweep-interval-ms must be 10 to 60000"
        );
        anyhow::ensure!(
            (1024..=16 << 20).contains(&self.max_body_bytes),
            "max-body-bytes must be 1 KiB to 16 MiB"
        );
        if let Some(url) = &self.public_url {
            let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("public-url: {e}"))?;
            anyhow::ensure!(
                matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some(),
                "public-url must be an http(s) URL"
            );
            // The enrolment deep link (public-url and a token) must fit in a QR code.
            anyhow::ensure!(url.len() <= 512, "public-url must be at most 512 characters");
        }
        anyhow::ensure!(
            (0.0..1.0).contains(&self.callbacks.jitter),
            "callbacks.jitter must be in [0, 1)"
        );
        if let Some(secret) = &self.edge.secret {
            anyhow::ensure!(
                secret.expose().len() >= 32,
                "edge.secret must hold at least 32 characters"
            );
        }
        if let Some(key) = &self.admin.operator_key {
            anyhow::ensure!(
                key.expose().len() >= 32,
                "admin.operator-key must hold at least 32 characters"
            );
        }
        let server = &self.server;
        anyhow::ensure!(
            server.max_connections > 0 && server.max_connections_per_ip > 0,
            "server.max-connections and server.max-connections-per-ip must be positive"
        );
        anyhow::ensure!(
            self.long_polls.max > 0 && self.long_polls.per_device > 0 && self.long_polls.per_client > 0,
            "long-polls.max, long-polls.per-device and long-polls.per-client must be positive"
        );
        anyhow::ensure!(
            self.database.max_connections > 0,
            "database.max-connections must be positive"
        );
        anyhow::ensure!(self.admin.rate_limit > 0, "admin.rate-limit must be positive");
        anyhow::ensure!(
            (1..=100_000).contains(&self.retention.batch),
            "retention.batch must be 1 to 100000"
        );
        anyhow::ensure!(
            self.retention.interval.is_finite() && (0.01..=86_400.0).contains(&self.retention.interval),
            "retention.interval must be 0.01 to 86400 seconds"
        );
        for (name, secs) in [
            ("database.acquire-timeout", self.database.acquire_timeout),
            ("admin.auth-failure-summary", self.admin.auth_failure_summary),
            ("database.startup-wait", self.database.startup_wait),
            ("server.header-read-timeout", server.header_read_timeout),
            ("server.body-read-timeout", server.body_read_timeout),
            ("server.shutdown-grace", server.shutdown_grace),
        ] {
            anyhow::ensure!(
                secs.is_finite() && secs > 0.0 && secs <= 3600.0,
                "{name} must be a number of seconds in (0, 3600]"
            );
        }
        if self.server.ssl.enabled {
            anyhow::ensure!(
                self.server.ssl.key_store.is_some(),
                "server.ssl.enabled needs server.ssl.key-store"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY_SECRET: &str = "
server-key: c2VydmVyLWtleS1zZWNyZXQtc2VydmVyLWtleS1zZWNyZXQ=
server:
  ssl:
    key-store-password: keystore-secret-1
database:
  url: postgres://hermod:db-secret-2@127.0.0.1/hermod
edge:
  secret: edge-secret-3-edge-secret-3-edge-secret-3
admin:
  operator-key: operator-secret-4-operator-secret-4
allowed-clients:
  - client-id: idm
    key: client-key-secret-5-client-key-secret-5
    group: g
    callback-url: https://idm.example/cb
    callback-basic-auth: user:basic-secret-6
    callback-signing-secrets: [whsec_c2lnbmluZy1zZWNyZXQtNy1zaWduaW5nLXNlY3JldC03]
";

    #[test]
    fn no_secret_of_the_file_shows_in_the_settings_debug_output() {
        let settings: Settings = Figment::new().merge(Yaml::string(EVERY_SECRET)).extract().unwrap();
        let shown = format!("{settings:?} {settings:#?}");
        for secret in [
            "c2VydmVyLWtleS1zZWNyZXQ",
            "keystore-secret-1",
            "db-secret-2",
            "edge-secret-3",
            "operator-secret-4",
            "client-key-secret-5",
            "basic-secret-6",
            "c2lnbmluZy1zZWNyZXQ",
        ] {
            assert!(!shown.contains(secret), "{secret} shows in {shown}");
        }
        // What is not secret still shows, so the output stays useful.
        assert!(
            shown.contains("idm.example") && shown.contains("127.0.0.1/hermod"),
            "{shown}"
        );
    }

    #[test]
    fn the_demo_page_acts_as_a_configured_client_and_claims_take_a_bounded_age() {
        let with = |extra: &str| Settings::from_yaml(&format!("{EVERY_SECRET}{extra}"));
        assert_eq!(with("").unwrap().demo_page_client, None, "off unless named");
        assert_eq!(
            with("demo-page-client: idm\n").unwrap().demo_page_client.as_deref(),
            Some("idm")
        );
        let err = with("demo-page-client: nobody\n").unwrap_err().to_string();
        assert!(err.contains("demo-page-client"), "{err}");
        assert_eq!(with("").unwrap().commands.qr_max_age, 5);
        assert!(with("commands:\n  qr-max-age: 61\n").is_err());
    }

    #[test]
    fn every_settings_key_is_known_for_did_you_mean() {
        let known = known_keys();
        for key in [
            "server",
            "max-connections-per-ip",
            "key-store-password",
            "allowed-clients",
            "callback-signing-secrets",
            "retry-schedule",
            "operator-key",
            "server-key",
            "signature-window",
        ] {
            assert!(known.contains(key), "{key} missing from {known:?}");
        }
    }
}
