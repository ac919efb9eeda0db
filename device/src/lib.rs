//! Hermod's device SDK: what an authenticator app does with Hermod. It enrols with the
//! single-use token of a provisioning command (a `hermod://enrol?...` link or QR code), signs
//! every request with its device secret (timestamp, nonce, body hash), long-polls its mailbox
//! after a cursor, and answers commands. It keeps the server's clock offset from every answer,
//! so a device with a skewed clock still signs inside the server's window.
//!
//! One implementation serves the `hermod device` command, the benchmark's simulated devices and
//! the tests.
#![forbid(unsafe_code)]

pub mod push;

use anyhow::{bail, Context};
use hermod_shared::enrolment;
use hermod_shared::signing::{self, DeviceSecret};
use hermod_shared::wire::{Decision, DeviceResponse, EnrolRequest, EnrolResponse, MailboxPage};
use hermod_shared::{CommandId, DeviceId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

/// What a device keeps between runs. It holds the device secret: store it as a secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct DeviceState {
    /// The mailbox URL (`…/ms`).
    pub ms_url: String,
    pub device_id: DeviceId,
    pub user_id: UserId,
    /// Base64 of the 32-byte secret the device signs with.
    pub device_secret: String,
    /// Where the next mailbox read starts.
    pub cursor: i64,
    /// The Web Push subscription the device is woken by, once it registered one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<push::Subscription>,
}

impl std::fmt::Debug for DeviceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceState")
            .field("ms_url", &self.ms_url)
            .field("device_id", &self.device_id)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

/// An enrolled device talking to Hermod.
pub struct Device {
    http: reqwest::Client,
    pub state: DeviceState,
    secret: DeviceSecret,
    /// Server clock minus ours (ms), learnt from every answer.
    clock_offset_ms: AtomicI64,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Clone for Device {
    fn clone(&self) -> Self {
        Self {
            http: self.http.clone(),
            state: self.state.clone(),
            secret: self.secret.clone(),
            clock_offset_ms: AtomicI64::new(self.clock_offset_ms.load(Ordering::Relaxed)),
        }
    }
}

/// This machine's clock, unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

impl Device {
    /// Enrols with a `hermod://enrol?...` link (or a bare token, given the mailbox URL).
    pub async fn enrol(link_or_token: &str, ms_url: Option<&str>, name: Option<&str>) -> anyhow::Result<Self> {
        Self::enrol_with(reqwest::Client::new(), link_or_token, ms_url, name).await
    }

    /// [`Device::enrol`] over a given HTTP client (many devices can share one pool).
    pub async fn enrol_with(
        http: reqwest::Client,
        link_or_token: &str,
        ms_url: Option<&str>,
        name: Option<&str>,
    ) -> anyhow::Result<Self> {
        let (ms_url, token) = match enrolment::parse_deep_link(link_or_token) {
            Some((ms, token)) => (ms_url.map(str::to_owned).unwrap_or(ms), token),
            None => (
                ms_url.context("give the mailbox URL with a bare token")?.to_owned(),
                link_or_token.to_owned(),
            ),
        };
        let ms_url = ms_url.trim_end_matches('/').to_owned();
        let response = http
            .post(format!("{ms_url}/enrol"))
            .json(&EnrolRequest {
                token,
                name: name.map(str::to_owned),
                data: None,
            })
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "enrolment refused: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        let enrolled: EnrolResponse = response.json().await?;
        let state = DeviceState {
            ms_url,
            device_id: enrolled.device_id,
            user_id: enrolled.user_id,
            device_secret: enrolled.device_secret,
            cursor: 0,
            push: None,
        };
        let client = Self::with_client(http, state)?;
        client.learn_server_time(enrolled.server_time);
        Ok(client)
    }

    /// A device from its saved state, with an HTTP client of its own.
    pub fn from_state(state: DeviceState) -> anyhow::Result<Self> {
        Self::with_client(reqwest::Client::new(), state)
    }

    /// A device from its saved state over a given HTTP client.
    pub fn with_client(http: reqwest::Client, state: DeviceState) -> anyhow::Result<Self> {
        let secret =
            DeviceSecret::from_base64(&state.device_secret).context("device secret is not 32 bytes of base64")?;
        Ok(Self {
            http,
            state,
            secret,
            clock_offset_ms: AtomicI64::new(0),
        })
    }

    /// A device whose secret the caller holds already (a benchmark's seeded devices), its
    /// cursor at the start of its mailbox.
    pub fn from_parts(
        http: reqwest::Client,
        ms_url: &str,
        device_id: DeviceId,
        user_id: UserId,
        secret: &DeviceSecret,
    ) -> Self {
        let state = DeviceState {
            ms_url: ms_url.trim_end_matches('/').to_owned(),
            device_id,
            user_id,
            device_secret: secret.to_base64(),
            cursor: 0,
            push: None,
        };
        Self {
            http,
            state,
            secret: secret.clone(),
            clock_offset_ms: AtomicI64::new(0),
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_state(serde_json::from_str(&text)?)
    }

    /// Saves the state (it holds the device secret: readable by the owner only).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(&self.state)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        std::io::Write::write_all(&mut options.open(path)?, text.as_bytes())?;
        Ok(())
    }

    fn learn_server_time(&self, server_time_ms: i64) {
        self.clock_offset_ms.store(server_time_ms - now_ms(), Ordering::Relaxed);
    }

    /// Sends a signed request to `{ms_url}{suffix}` (suffix like `/mailbox?cursor=0`).
    pub async fn signed(
        &self,
        method: reqwest::Method,
        suffix: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<reqwest::Response> {
        let url = url::Url::parse(&format!("{}{suffix}", self.state.ms_url))?;
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let timestamp = (now_ms() + self.clock_offset_ms.load(Ordering::Relaxed)) / 1000;
        let h = signing::sign(
            &self.secret,
            &self.state.device_id,
            method.as_str(),
            &path,
            timestamp,
            &nonce(),
            &body,
        );
        let mut request = self
            .http
            .request(method, url)
            .header(signing::HEADER_DEVICE, h.device.as_str())
            .header(signing::HEADER_TIMESTAMP, h.timestamp.to_string())
            .header(signing::HEADER_NONCE, &h.nonce)
            .header(signing::HEADER_SIGNATURE, &h.signature);
        if !body.is_empty() {
            request = request.header("content-type", "application/json").body(body);
        }
        Ok(request.send().await?)
    }

    /// Reads the mailbox after the saved cursor, waiting up to `wait` seconds, and advances it.
    pub async fn poll(&mut self, wait: u32) -> anyhow::Result<MailboxPage> {
        let suffix = format!("/mailbox?cursor={}&wait={wait}", self.state.cursor);
        let response = self.signed(reqwest::Method::GET, &suffix, Vec::new()).await?;
        if !response.status().is_success() {
            bail!(
                "mailbox refused: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        let page: MailboxPage = response.json().await?;
        self.learn_server_time(page.server_time);
        self.state.cursor = page.cursor;
        Ok(page)
    }

    /// Answers a command; returns the raw answer so callers can see refusals.
    pub async fn respond(
        &self,
        id: &CommandId,
        decision: Decision,
        data: Option<Value>,
    ) -> anyhow::Result<reqwest::Response> {
        self.answer(
            id,
            &DeviceResponse {
                result: decision,
                reason: None,
                number: None,
                data,
            },
        )
        .await
    }

    /// Sends a whole answer (a decline's reason, the number picked for number matching);
    /// returns the raw answer so callers can see refusals.
    pub async fn answer(&self, id: &CommandId, response: &DeviceResponse) -> anyhow::Result<reqwest::Response> {
        let body = serde_json::to_vec(response)?;
        self.signed(reqwest::Method::POST, &format!("/commands/{id}/response"), body)
            .await
    }

    /// Claims a command created for nobody with a frame of its QR code, as scanned; returns the
    /// raw answer (200 with the command, or a refusal).
    pub async fn claim(&self, frame: &str) -> anyhow::Result<reqwest::Response> {
        let body = serde_json::to_vec(&hermod_shared::wire::ClaimRequest {
            frame: frame.to_owned(),
        })?;
        self.signed(reqwest::Method::POST, "/claim", body).await
    }

    /// What the server offers for push, and this device's registration.
    pub async fn push_status(&self) -> anyhow::Result<hermod_shared::wire::PushStatus> {
        let answer = self.signed(reqwest::Method::GET, "/push", Vec::new()).await?;
        if !answer.status().is_success() {
            bail!("GET /push: {} {}", answer.status(), answer.text().await?);
        }
        Ok(answer.json().await?)
    }

    /// Registers a Web Push subscription to be woken by; returns the raw answer.
    pub async fn register_push(&self, subscription: &push::Subscription) -> anyhow::Result<reqwest::Response> {
        let body = serde_json::to_vec(&hermod_shared::wire::PushRegistration {
            transport: hermod_shared::wire::PushTransport::Webpush,
            endpoint: subscription.endpoint.clone(),
            keys: subscription.keys.clone(),
        })?;
        self.signed(reqwest::Method::PUT, "/push", body).await
    }

    /// Tells the server the device is alive; returns its answer.
    pub async fn lifesign(&self) -> anyhow::Result<Value> {
        let response = self.signed(reqwest::Method::POST, "/lifesign", Vec::new()).await?;
        if !response.status().is_success() {
            bail!("lifesign refused: {}", response.status());
        }
        Ok(response.json().await?)
    }

    /// Moves to the server's current key after a key rotation: fetches this device's secret
    /// under it and signs with that from now on. Returns the key's id. (Save the state after.)
    pub async fn rekey(&mut self) -> anyhow::Result<String> {
        let response = self.signed(reqwest::Method::POST, "/rekey", Vec::new()).await?;
        if !response.status().is_success() {
            bail!("rekey refused: {}", response.status());
        }
        let answer: hermod_shared::wire::RekeyResponse = response.json().await?;
        self.secret = DeviceSecret::from_base64(&answer.device_secret)
            .ok_or_else(|| anyhow::anyhow!("the server sent a malformed device secret"))?;
        self.state.device_secret = answer.device_secret;
        Ok(answer.key_id)
    }
}
