//! Counters, served in the Prometheus text format at `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    /// Every HTTP request the backend answered.
    pub http_requests: Counter,
    pub commands_created: Counter,
    pub callbacks_delivered: Counter,
    /// Failed attempts that will be tried again.
    pub callbacks_retried: Counter,
    /// Events that ran out of retries or met a 410.
    pub callbacks_dead: Counter,
    /// Connections closed at once: over `server.max-connections` or the per-address cap.
    pub connections_refused: Counter,
    /// Long-polls refused or released early by their caps.
    pub long_polls_capped: Counter,
    /// Rows the retention sweeper removed.
    pub retention_removed: Counter,
    /// Requests refused 401, by what failed.
    pub auth_failures_client: Counter,
    pub auth_failures_device: Counter,
    pub auth_failures_admin: Counter,
    /// Reads tried once more after their database connection died under them.
    pub reads_retried: Counter,
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
            registry,
        }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
