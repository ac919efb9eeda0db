//! Failed authentications, counted and summarised without flooding anything: a counter per
//! kind (client key, device signature, admin token) in `/metrics`, and, once a minute, one
//! `auth.failed` record per tenant in its audit log naming who failed how often and from which
//! addresses (failures naming nobody known go to the operator's log, one line a minute). Memory
//! is bounded: at most [`MAX_TRACKED`] identities and addresses a minute; the rest are counted
//! under `other`.
//!
//! Admin callers are also held to a rate (`admin.rate-limit` requests a second per token, per
//! replica), answered 429 with `RateLimit-*` and `Retry-After` like the client API's quotas.

use hermod_shared::ratelimit::RateDecision;
use serde_json::json;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::engine::AppState;
use crate::store::{now_ms, Db};

/// Identities and addresses remembered per minute.
pub const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Client,
    Device,
    Admin,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Client => "client",
            Kind::Device => "device",
            Kind::Admin => "admin",
        }
    }
}

#[derive(Default)]
struct Window {
    /// (kind, who) → (failures, addresses with their counts).
    by_identity: HashMap<(Kind, String), (u64, HashMap<IpAddr, u64>)>,
    other: u64,
}

#[derive(Default)]
pub struct AuthFailures {
    window: Mutex<Window>,
    /// Admin requests per token in the current second: (second, count).
    admin_calls: Mutex<HashMap<String, (i64, u32)>>,
}

/// What a failure is told about the one who failed: at most 64 printable characters of an
/// identifier (never a secret: a client id, a device id, an admin key's id).
fn who(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

impl AuthFailures {
    pub fn note(&self, kind: Kind, identity: &str, address: Option<IpAddr>) {
        let mut w = self.window.lock().expect("auth failures lock");
        let key = (kind, who(identity));
        if !w.by_identity.contains_key(&key) && w.by_identity.len() >= MAX_TRACKED {
            w.other += 1;
            return;
        }
        let entry = w.by_identity.entry(key).or_default();
        entry.0 += 1;
        if let Some(ip) = address {
            if entry.1.len() < 16 || entry.1.contains_key(&ip) {
                *entry.1.entry(ip).or_default() += 1;
            }
        }
    }

    /// Counts one admin request of `actor` at `now_ms`; refused beyond `limit` a second.
    pub fn take_admin_call(&self, actor: &str, limit: u32, now_ms: i64) -> RateDecision {
        let second = now_ms / 1000;
        let mut calls = self.admin_calls.lock().expect("admin calls lock");
        if calls.len() > MAX_TRACKED {
            calls.retain(|_, (s, _)| *s == second);
        }
        let slot = calls.entry(actor.to_owned()).or_insert((second, 0));
        if slot.0 != second {
            *slot = (second, 0);
        }
        let allowed = slot.1 < limit;
        if allowed {
            slot.1 += 1;
        }
        RateDecision {
            allowed,
            limit,
            remaining: limit.saturating_sub(slot.1),
            reset_secs: 1,
        }
    }

    /// Writes the last period's summary (audit records per tenant, a log line for the rest).
    pub async fn flush(&self, db: &Db) -> anyhow::Result<()> {
        let window = std::mem::take(&mut *self.window.lock().expect("auth failures lock"));
        if window.by_identity.is_empty() && window.other == 0 {
            return Ok(());
        }
        let mut per_tenant: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
        let mut unknown: Vec<String> = Vec::new();
        let mut identities: Vec<_> = window.by_identity.into_iter().collect();
        identities.sort_by_key(|(_, (count, _))| std::cmp::Reverse(*count));
        for ((kind, identity), (count, addresses)) in identities.into_iter().take(200) {
            let mut addresses: Vec<_> = addresses.into_iter().collect();
            addresses.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
            let addresses: Vec<String> = addresses.iter().take(5).map(|(ip, _)| ip.to_string()).collect();
            let tenant: Option<String> = match kind {
                Kind::Client => {
                    sqlx::query_scalar("SELECT tenant_id FROM clients WHERE client_id = $1")
                        .bind(&identity)
                        .fetch_optional(&db.read)
                        .await?
                }
                Kind::Admin => {
                    sqlx::query_scalar("SELECT tenant_id FROM admin_keys WHERE id = $1")
                        .bind(&identity)
                        .fetch_optional(&db.read)
                        .await?
                }
                Kind::Device => {
                    sqlx::query_scalar(
                        "SELECT g.tenant_id FROM devices d JOIN groups g ON g.id = d.group_id WHERE d.id = $1",
                    )
                    .bind(&identity)
                    .fetch_optional(&db.read)
                    .await?
                }
            };
            let line = json!({ "kind": kind.as_str(), "who": identity, "failures": count, "addresses": addresses });
            match tenant {
                Some(t) => per_tenant.entry(t).or_default().push(line),
                None => unknown.push(line.to_string()),
            }
        }
        let now = now_ms();
        for (tenant_id, failures) in per_tenant {
            let mut conn = db.write.acquire().await?;
            crate::store::audit::Record {
                tenant_id: &tenant_id,
                actor: "hermod",
                action: "auth.failed",
                target: None,
                detail: Some(json!({ "window_secs": 60, "failures": failures })),
            }
            .write(&mut conn, now)
            .await?;
        }
        if !unknown.is_empty() || window.other > 0 {
            tracing::warn!(
                unknown = %unknown.join(", "),
                untracked = window.other,
                "failed authentications in the last minute naming no known client, device or admin key"
            );
        }
        Ok(())
    }
}

pub async fn flush_forever(state: AppState) {
    let every = Duration::from_secs_f64(state.settings.admin.auth_failure_summary);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = state.auth_failures.flush(&state.db).await {
            tracing::warn!(error = %e, "summarising failed authentications failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_bounded_and_identities_are_cleaned() {
        let f = AuthFailures::default();
        for i in 0..MAX_TRACKED + 50 {
            f.note(Kind::Client, &format!("c{i}"), None);
        }
        f.note(Kind::Device, &format!("{}\u{7}", "d".repeat(100)), None);
        let w = f.window.lock().unwrap();
        assert_eq!(w.by_identity.len(), MAX_TRACKED);
        assert_eq!(w.other, 51);
    }

    #[test]
    fn admin_calls_are_limited_per_second() {
        let f = AuthFailures::default();
        let now = 1_000_000;
        for _ in 0..3 {
            assert!(f.take_admin_call("operator", 3, now).allowed);
        }
        let refused = f.take_admin_call("operator", 3, now + 10);
        assert!(!refused.allowed && refused.remaining == 0);
        assert!(f.take_admin_call("admin:k", 3, now).allowed, "per token");
        assert!(f.take_admin_call("operator", 3, now + 1_000).allowed, "next second");
    }
}
