//! Counters and gauges, served in the OpenMetrics text format at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A command's final status, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

/// A tenant, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

pub struct Metrics {
    registry: Registry,
    /// Every HTTP request the backend answered.
    pub http_requests: Counter,
    pub commands_created: Counter,
    /// Commands that reached a final status (approved, declined, expired, cancelled), by it.
    pub commands_finished: Family<StatusLabel, Counter>,
    pub callbacks_delivered: Counter,
    /// Failed attempts that will be tried again.
    pub callbacks_retried: Counter,
    /// Events that ran out of retries or met a 410.
    pub callbacks_dead: Counter,
    /// Receivers disabled: a 410 Gone, or failing through a whole retry window.
    pub callback_receivers_disabled: Counter,
    /// Connections closed at once: over `server.max-connections` or the per-address cap.
    pub connections_refused: Counter,
    /// Long-polls refused or released early by their caps.
    pub long_polls_capped: Counter,
    /// Long-polls held now (set when `/metrics` is read).
    pub long_polls_open: Gauge,
    /// Requests answered 503 (the database unreachable, or a long-poll limit reached).
    pub http_unavailable: Counter,
    /// Rows the retention sweeper removed.
    pub retention_removed: Counter,
    /// Requests refused 401, by what failed.
    pub auth_failures_client: Counter,
    pub auth_failures_device: Counter,
    pub auth_failures_admin: Counter,
    /// Reads tried once more after their database connection died under them.
    pub reads_retried: Counter,
    /// Pushes a push service accepted.
    pub push_sent: Counter,
    /// Pushes that failed for good (refused, or out of attempts).
    pub push_failed: Counter,
    /// Registrations removed because their push service said they are gone.
    pub push_registrations_removed: Counter,
    /// Wakes not pushed because the device was long-polling.
    pub push_skipped: Counter,
    /// Declines with reason `not_me` (a user says they started nothing), by tenant.
    pub declined_not_me: Family<TenantLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hermod");
        let m = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        Self {
            http_requests: m(&mut registry, "http_requests", "HTTP requests answered by the backend"),
            commands_created: m(&mut registry, "commands_created", "Commands created"),
            commands_finished: {
                let f = Family::<StatusLabel, Counter>::default();
                // Every final status from the start, at 0, so that a rate over it has a series.
                for status in ["approved", "declined", "expired", "cancelled"] {
                    let _ = f.get_or_create(&StatusLabel { status: status.into() });
                }
                registry.register(
                    "commands_finished",
                    "Commands that reached a final status, by status",
                    f.clone(),
                );
                f
            },
            callbacks_delivered: m(
                &mut registry,
                "callbacks_delivered",
                "Callbacks that a receiver accepted",
            ),
            callbacks_retried: m(
                &mut registry,
                "callbacks_retried",
                "Failed callback attempts that will be retried",
            ),
            callbacks_dead: m(
                &mut registry,
                "callbacks_dead",
                "Callbacks out of retries or refused with 410 Gone",
            ),
            callback_receivers_disabled: m(
                &mut registry,
                "callback_receivers_disabled",
                "Callback receivers disabled: 410 Gone, or failing through a whole retry window",
            ),
            long_polls_open: {
                let g = Gauge::default();
                registry.register("long_polls_open", "Long-polls held now", g.clone());
                g
            },
            http_unavailable: m(
                &mut registry,
                "http_unavailable",
                "Requests answered 503: the database unreachable or a long-poll limit reached",
            ),
            connections_refused: m(
                &mut registry,
                "connections_refused",
                "Connections closed at once: over the total or per-address cap",
            ),
            long_polls_capped: m(
                &mut registry,
                "long_polls_capped",
                "Long-polls refused or released early by their caps",
            ),
            retention_removed: m(
                &mut registry,
                "retention_removed",
                "Rows removed by the retention sweeper",
            ),
            auth_failures_client: m(
                &mut registry,
                "auth_failures_client",
                "Requests refused 401 for a missing or wrong client key",
            ),
            auth_failures_device: m(
                &mut registry,
                "auth_failures_device",
                "Device requests refused 401 (signature, timestamp, nonce, unknown device)",
            ),
            auth_failures_admin: m(
                &mut registry,
                "auth_failures_admin",
                "Admin requests refused 401 for a missing or wrong token",
            ),
            reads_retried: m(
                &mut registry,
                "reads_retried",
                "Reads tried once more after their database connection died under them",
            ),
            push_sent: m(&mut registry, "push_sent", "Pushes a push service accepted"),
            push_failed: m(&mut registry, "push_failed", "Pushes that failed for good"),
            push_registrations_removed: m(
                &mut registry,
                "push_registrations_removed",
                "Push registrations removed because their push service said they are gone",
            ),
            push_skipped: m(
                &mut registry,
                "push_skipped",
                "Wakes not pushed because the device was long-polling",
            ),
            declined_not_me: {
                let f = Family::<TenantLabel, Counter>::default();
                // The config file's tenant from the start, at 0, so that a rate over it has a series.
                let _ = f.get_or_create(&TenantLabel {
                    tenant: crate::store::clients::DEFAULT_TENANT.into(),
                });
                registry.register(
                    "commands_declined_not_me",
                    "Commands declined by a user who says they started nothing (reason not_me), by tenant",
                    f.clone(),
                );
                f
            },
            registry,
        }
    }
}

impl Metrics {
    /// Counts a command that reached its final `status`.
    pub fn finished(&self, status: &str) {
        self.commands_finished
            .get_or_create(&StatusLabel {
                status: status.to_owned(),
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
