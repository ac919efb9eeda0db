//! Background work and the orchestration of each transition: the callback outbox and its
//! worker, the sweeper, wake-ups (in process and, on PostgreSQL, across replicas), long-polls,
//! metrics. Each transition calls the store, then wakes whoever waits on what it changed.
//!
//! (Step one of the layering: these modules still hold part of their SQL; it moves into
//! `store/` behind one trait per dialect next.)

pub mod auth_failures;
pub mod callbacks;
pub mod commands;
pub mod devices;
pub mod egress;
pub mod keys;
pub mod longpoll;
pub mod mailbox;
pub mod metrics;
pub mod push;
pub mod replicas;
pub mod retention;
pub mod wake;

use std::sync::Arc;
use tokio::sync::Notify;

use crate::config::Settings;
use crate::domain::error::ApiError;
use crate::engine::metrics::Metrics;
use crate::engine::wake::Wakeups;
use crate::store::Db;
use hermod_shared::ErrorCode;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub settings: Arc<Settings>,
    /// The server's key ring: device secrets and enrolment tokens derive from it.
    pub keys: Arc<hermod_shared::keys::KeyRing>,
    pub public_url: Arc<String>,
    pub wakeups: Arc<Wakeups>,
    /// Wakes the callback worker when an event is written.
    pub outbox: Arc<Notify>,
    /// Callback events claimed as they were written, for the worker to deliver first.
    pub handoff: Arc<crate::engine::callbacks::Handoff>,
    pub metrics: Arc<Metrics>,
    /// When each key's use was last written to the audit log.
    pub key_use: Arc<crate::store::audit::KeyUse>,
    /// The egress policy callbacks (and a tenant's callback URL) are held to.
    pub egress: crate::engine::egress::Egress,
    /// Every open long-poll, within its caps.
    pub long_polls: Arc<crate::engine::longpoll::LongPolls>,
    /// Wakes devices that are not long-polling, by Web Push.
    pub push: Arc<crate::engine::push::Pusher>,
    /// Failed authentications, summarised; the admin API's rate.
    pub auth_failures: Arc<crate::engine::auth_failures::AuthFailures>,
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        if let Some(db) = e.downcast_ref::<sqlx::Error>() {
            if crate::store::is_unavailable(db) {
                tracing::warn!(error = %e, "the database is unavailable");
                let mut answer = crate::store::unavailable();
                answer.connection_lost = crate::store::is_connection_lost(db);
                return answer;
            }
        }
        tracing::error!(error = %e, "internal error");
        ErrorCode::Internal.into()
    }
}
