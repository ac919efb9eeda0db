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
