//! A Web Push subscription for the simulated device, made at a push service that speaks the
//! API of `web-push-testing` (npm): `POST /subscribe` with the server's VAPID public key gives
//! an endpoint and keys, and `POST /get-notifications` lists what was pushed to it, decrypted by
//! the service (which checked the VAPID signature and the RFC 8291 encryption first). A phone's
//! operating system plays this part for a real app.

use anyhow::Context;
use hermod_shared::wire::WebPushKeys;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A subscription at a push service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    /// The push service's base URL (`http://127.0.0.1:8090`).
    pub service: String,
    pub endpoint: String,
    pub keys: WebPushKeys,
    /// The service's name for the subscription.
    pub client_hash: String,
}

impl Subscription {
    /// Subscribes at `service` for pushes signed with `vapid_public_key`.
    pub async fn create(http: &reqwest::Client, service: &str, vapid_public_key: &str) -> anyhow::Result<Self> {
        let service = service.trim_end_matches('/').to_owned();
        let answer: Value = http
            .post(format!("{service}/subscribe"))
            .json(&json!({ "userVisibleOnly": "true", "applicationServerKey": vapid_public_key }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let data = &answer["data"];
        let text = |v: &Value| {
            v.as_str()
                .map(str::to_owned)
                .context("a field missing in the subscription")
        };
        Ok(Self {
            endpoint: text(&data["endpoint"])?,
            keys: WebPushKeys {
                p256dh: text(&data["keys"]["p256dh"])?,
                auth: text(&data["keys"]["auth"])?,
            },
            client_hash: text(&data["clientHash"])?,
            service,
        })
    }

    /// Every push received so far, decrypted, oldest first.
    pub async fn received(&self, http: &reqwest::Client) -> anyhow::Result<Vec<String>> {
        let answer: Value = http
            .post(format!("{}/get-notifications", self.service))
            .json(&json!({ "clientHash": self.client_hash }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let messages = answer["data"]["messages"]
            .as_array()
            .context("no messages in the answer")?;
        Ok(messages.iter().filter_map(|m| m.as_str().map(str::to_owned)).collect())
    }

    /// Tells the service to expire the subscription: a push to it then gets 410 Gone.
    pub async fn expire(&self, http: &reqwest::Client) -> anyhow::Result<()> {
        http.post(format!("{}/expire-subscription/{}", self.service, self.client_hash))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}
