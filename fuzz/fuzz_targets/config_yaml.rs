//! The config file: `Settings::from_yaml` validates as loading the file does. It may refuse,
//! never panic; and what it accepts must be usable: every duration the server builds from the
//! settings converts without a panic (`Duration::from_secs_f64` panics on a negative, NaN or
//! too large value) and every interval a timer ticks at is non-zero (`tokio::time::interval`
//! panics on zero).
#![no_main]

use hermod::Settings;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fn duration(name: &str, secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs)
        .unwrap_or_else(|e| panic!("{name} = {secs:?} passed validation but is no duration: {e}"))
}

fn interval(name: &str, secs: f64) {
    assert!(
        !duration(name, secs).is_zero(),
        "{name} = {secs:?} passed validation but is a zero timer interval"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(yaml) = std::str::from_utf8(data) else { return };
    let Ok(s) = Settings::from_yaml(yaml) else { return };

    // engine::callbacks: the client timeout, each retry delay moved by the jitter, the pause.
    let cb = &s.callbacks;
    duration("callbacks.request-timeout", cb.request_timeout);
    duration("callbacks.request-timeout (connect)", cb.request_timeout.min(5.0));
    for d in &cb.retry_schedule {
        duration("callbacks.retry-schedule[]", *d);
        duration("callbacks.retry-schedule[] * (1 - jitter)", d * (1.0 - cb.jitter));
        duration("callbacks.retry-schedule[] * (1 + jitter)", d * (1.0 + cb.jitter));
    }
    duration("callbacks.overload-pause", cb.overload_pause);
    // http::listener and http::server.
    duration("server.header-read-timeout", s.server.header_read_timeout);
    duration("server.body-read-timeout", s.server.body_read_timeout);
    duration("server.shutdown-grace", s.server.shutdown_grace);
    // store: the pool limits.
    let _ = hermod::store::PoolLimits::from_settings(&s.database);
    // engine::retention and engine::auth_failures tick at these.
    interval("retention.interval", s.retention.interval);
    interval("admin.auth-failure-summary", s.admin.auth_failure_summary);
});
