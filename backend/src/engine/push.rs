//! Waking devices by Web Push when a command reaches their mailbox and they are not
//! long-polling here. A push carries [`WAKE_PAYLOAD`] only, encrypted for the device (RFC 8291,
//! `aes128gcm`) and signed with the server's VAPID key (RFC 8292); the device then fetches the
//! command through its signed mailbox poll, so the push service learns nothing of users or
//! commands. TTL is the command's timeout, `Urgency: high`, and one `Topic` per device, so a
//! burst that is not yet delivered wakes once. A push already on its way to a device is not
//! sent again. Answers: 2xx sent; 404/410 the registration is removed; 429/5xx retried after
//! `Retry-After` or 1, 4, 16 s; anything else fails. Every push goes through the egress
//! policy. Pushes live in memory: a restart forgets those not yet sent (the device still finds
//! the command at its next poll).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use web_push_native::jwt_simple::algorithms::{ECDSAP256PublicKeyLike, ES256KeyPair};
use web_push_native::{p256, Auth, WebPushBuilder};

use crate::domain::push::{self as rules, Verdict, WAKE_PAYLOAD};
use crate::engine::AppState;
use crate::store::push::{self as registrations, Registration};

/// A command that reached the mailbox of a device or of a user's devices.
#[derive(Debug, Clone)]
pub struct Wake {
    pub group_id: String,
    pub user_id: String,
    pub device_id: Option<String>,
    pub ttl_secs: u64,
    /// When the command reached the mailbox.
    pub at: std::time::Instant,
}

/// The server's VAPID identity.
pub struct Vapid {
    key: ES256KeyPair,
    subject: String,
    /// base64url of the uncompressed public key: devices subscribe with it.
    pub public_key: String,
}

impl Vapid {
    pub fn from_settings(settings: &crate::config::WebPushSettings) -> anyhow::Result<Option<Self>> {
        let Some(secret) = &settings.vapid_private_key else {
            return Ok(None);
        };
        let bytes = URL_SAFE_NO_PAD.decode(secret.expose().trim_end_matches('='))?;
        let key = ES256KeyPair::from_bytes(&bytes)
            .map_err(|_| anyhow::anyhow!("push.webpush.vapid-private-key is not a P-256 private key"))?;
        let public_key = URL_SAFE_NO_PAD.encode(key.public_key().public_key().to_bytes_uncompressed());
        Ok(Some(Self {
            key,
            subject: settings.subject.clone(),
            public_key,
        }))
    }
}

/// A new VAPID key pair: (private, public), base64url, for `push.webpush.vapid-private-key`
/// and for devices to subscribe with.
pub fn generate_vapid_keys() -> (String, String) {
    let key = ES256KeyPair::generate();
    (
        URL_SAFE_NO_PAD.encode(key.to_bytes()),
        URL_SAFE_NO_PAD.encode(key.public_key().public_key().to_bytes_uncompressed()),
    )
}

/// The push queue (bounded: when full, a wake is dropped, the device finds its mail at its next
/// poll) and the devices with a push on its way.
pub struct Pusher {
    pub vapid: Option<Vapid>,
    queue: mpsc::Sender<Wake>,
    receiver: Mutex<Option<mpsc::Receiver<Wake>>>,
    on_the_way: Mutex<HashSet<String>>,
}

/// Wakes waiting to be looked at.
const QUEUE: usize = 4096;
/// Pushes in flight at once.
const CONCURRENCY: usize = 64;

impl Pusher {
    pub fn new(vapid: Option<Vapid>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        Self {
            vapid,
            queue,
            receiver: Mutex::new(Some(receiver)),
            on_the_way: Mutex::default(),
        }
    }

    /// Asks for the devices a command reached to be woken (nothing when Web Push is off).
    pub fn wake(&self, wake: Wake) {
        if self.vapid.is_some() && self.queue.try_send(wake).is_err() {
            tracing::warn!("the push queue is full: a wake is dropped (the device finds its mail at its next poll)");
        }
    }
}

/// Sends the queued wakes until the process ends.
pub async fn run(state: AppState, http: reqwest::Client) {
    let Some(mut queue) = state.push.receiver.lock().expect("push lock").take() else {
        return;
    };
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    while let Some(wake) = queue.recv().await {
        let found =
            registrations::for_recipients(&state.db, &wake.group_id, &wake.user_id, wake.device_id.as_deref()).await;
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "could not read push registrations");
                continue;
            }
        };
        for registration in found {
            if state.long_polls.polled_since(&registration.device_id, wake.at) {
                state.metrics.push_skipped.inc();
                continue;
            }
            if !state
                .push
                .on_the_way
                .lock()
                .expect("push lock")
                .insert(registration.device_id.clone())
            {
                continue;
            }
            let permit = Arc::clone(&permits).acquire_owned().await.expect("never closed");
            let (state, http) = (state.clone(), http.clone());
            tokio::spawn(async move {
                deliver(&state, &http, &registration, wake.ttl_secs).await;
                state
                    .push
                    .on_the_way
                    .lock()
                    .expect("push lock")
                    .remove(&registration.device_id);
                drop(permit);
            });
        }
    }
}

/// Sends one wake to one device, with its retries.
async fn deliver(state: &AppState, http: &reqwest::Client, registration: &Registration, ttl_secs: u64) {
    let Some(vapid) = &state.push.vapid else { return };
    for attempt in 1..=rules::MAX_ATTEMPTS {
        let verdict = match attempt_once(vapid, http, registration, ttl_secs).await {
            Ok((status, retry_after)) => rules::verdict(status, retry_after.as_deref(), attempt),
            Err(reason) => {
                tracing::info!(device_id = %registration.device_id, reason, "push failed");
                rules::verdict(503, None, attempt)
            }
        };
        match verdict {
            Verdict::Sent => {
                state.metrics.push_sent.inc();
                return;
            }
            Verdict::Dead => {
                match registrations::remove(&state.db, &registration.device_id, Some(&registration.endpoint)).await {
                    Ok(_) => {
                        state.metrics.push_registrations_removed.inc();
                        tracing::info!(device_id = %registration.device_id, "push registration gone: removed");
                    }
                    Err(e) => tracing::warn!(error = %e, "could not remove a dead push registration"),
                }
                return;
            }
            Verdict::Retry(wait) => tokio::time::sleep(Duration::from_secs(wait)).await,
            Verdict::Failed => break,
        }
    }
    state.metrics.push_failed.inc();
}

/// One HTTP request to the push service: its status and `Retry-After`, or why none came.
async fn attempt_once(
    vapid: &Vapid,
    http: &reqwest::Client,
    registration: &Registration,
    ttl_secs: u64,
) -> Result<(u16, Option<String>), &'static str> {
    let decode = |v: &Option<String>| {
        v.as_deref()
            .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).ok())
    };
    let public = decode(&registration.p256dh)
        .and_then(|k| p256::PublicKey::from_sec1_bytes(&k).ok())
        .ok_or("the registration's p256dh is not a P-256 key")?;
    let auth = decode(&registration.auth)
        .filter(|a| a.len() == 16)
        .ok_or("the registration's auth is not 16 bytes")?;
    let endpoint = registration.endpoint.parse().map_err(|_| "the endpoint is not a URL")?;
    let request = WebPushBuilder::new(endpoint, public, Auth::clone_from_slice(&auth))
        .with_valid_duration(Duration::from_secs(ttl_secs.max(1)))
        .with_vapid(&vapid.key, &vapid.subject)
        .build(WAKE_PAYLOAD)
        .map_err(|_| "the push could not be encrypted")?;
    let (parts, body) = request.into_parts();
    let answer = http
        .post(&registration.endpoint)
        .headers(parts.headers)
        .header("Urgency", "high")
        .header("Topic", rules::TOPIC)
        .body(body)
        .send()
        .await
        .map_err(|e| crate::engine::egress::coarse_reason(&e))?;
    let retry_after = answer
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((answer.status().as_u16(), retry_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_vapid_keys_load_and_give_their_public_key() {
        let (private, public) = generate_vapid_keys();
        assert!(crate::domain::push::vapid_key_ok(&private));
        let settings = crate::config::WebPushSettings {
            vapid_private_key: Some(crate::config::Secret::new(private)),
            subject: "mailto:ops@example.com".into(),
        };
        let vapid = Vapid::from_settings(&settings).unwrap().unwrap();
        assert_eq!(vapid.public_key, public);
        assert_eq!(URL_SAFE_NO_PAD.decode(&public).unwrap().len(), 65);
        assert!(Vapid::from_settings(&crate::config::WebPushSettings::default())
            .unwrap()
            .is_none());
    }
}
