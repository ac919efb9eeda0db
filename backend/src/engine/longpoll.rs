//! The long-poll registry: every long-poll (a device's mailbox poll, a client's status wait)
//! takes a place here before it waits, within three caps (`long-polls.*`):
//!
//! - **per device** (default 2): a device's new long-poll releases its oldest one, which is
//!   answered at once with what it has (usually nothing). A device that polls again has most
//!   likely lost the older connection (a phone changing networks), so the newest wins; the
//!   device is never refused.
//! - **per client** (default 200): a client's long-poll beyond it is refused with `429` and
//!   `Retry-After: 1`.
//! - **overall** (default 8,000, below `server.max-connections`): a long-poll beyond it is
//!   refused with `503` and `Retry-After: 1`, so short requests always find room.
//!
//! At shutdown every long-poll is released at once, so connections drain within the grace.

use hermod_shared::ErrorCode;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};

use crate::config::LongPollSettings;
use crate::domain::error::ApiError;

#[derive(Default)]
struct Open {
    total: usize,
    /// Per device, its long-polls oldest first: (ticket, how to release it).
    devices: HashMap<String, VecDeque<(u64, Arc<Notify>)>>,
    clients: HashMap<String, usize>,
    next_ticket: u64,
    /// When each device's last long-poll ended (pruned after a minute): a device that was
    /// long-polling when a command arrived got it from that long-poll, even if it ended since.
    ended: HashMap<String, std::time::Instant>,
}

/// How long a device counts as long-polling after its long-poll ended.
const ENDED_KEPT: std::time::Duration = std::time::Duration::from_secs(60);

pub struct LongPolls {
    limits: LongPollSettings,
    open: Mutex<Open>,
    stopping: watch::Sender<bool>,
}

/// Whose long-poll it is.
#[derive(Debug, Clone)]
pub enum Holder {
    Device(String),
    Client(String),
}

/// A place in the registry, given back when dropped; [`Place::released`] resolves when the
/// long-poll must answer now (replaced by a newer one of its device, or shutdown).
pub struct Place {
    polls: Arc<LongPolls>,
    holder: Holder,
    ticket: u64,
    release: Arc<Notify>,
    stopping: watch::Receiver<bool>,
}

fn retry_later(code: ErrorCode, detail: &str) -> ApiError {
    ApiError::new(code, detail).with_headers(vec![("Retry-After".into(), "1".into())])
}

impl LongPolls {
    pub fn new(limits: LongPollSettings) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::default(),
            stopping: watch::channel(false).0,
        })
    }

    /// Takes a place for a long-poll of `holder`, or refuses it (see the module's rules).
    pub fn enter(self: &Arc<Self>, holder: Holder) -> Result<Place, ApiError> {
        let mut open = self.open.lock().expect("long-polls lock");
        if open.total >= self.limits.max {
            return Err(retry_later(
                ErrorCode::Unavailable,
                "too many long-polls are open: retry shortly",
            ));
        }
        let release = Arc::new(Notify::new());
        open.next_ticket += 1;
        let ticket = open.next_ticket;
        match &holder {
            Holder::Client(client) => {
                let n = open.clients.entry(client.clone()).or_default();
                if *n >= self.limits.per_client {
                    return Err(retry_later(
                        ErrorCode::RateLimited,
                        &format!("at most {} long-polls per client", self.limits.per_client),
                    ));
                }
                *n += 1;
            }
            Holder::Device(device) => {
                let per_device = self.limits.per_device;
                let queue = open.devices.entry(device.clone()).or_default();
                while queue.len() >= per_device {
                    if let Some((_, oldest)) = queue.pop_front() {
                        // A stored permit: the oldest answers even if it is not waiting yet.
                        oldest.notify_one();
                    }
                }
                queue.push_back((ticket, Arc::clone(&release)));
            }
        }
        open.total += 1;
        Ok(Place {
            polls: Arc::clone(self),
            holder,
            ticket,
            release,
            stopping: self.stopping.subscribe(),
        })
    }

    /// Releases every long-poll, now and later (shutdown).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Whether `device` holds a long-poll here now.
    pub fn holds(&self, device: &str) -> bool {
        self.open
            .lock()
            .expect("long-polls lock")
            .devices
            .get(device)
            .is_some_and(|q| !q.is_empty())
    }

    /// Whether `device` has been long-polling here since `at` (it holds one now, or one ended
    /// after `at`, within the last minute).
    pub fn polled_since(&self, device: &str, at: std::time::Instant) -> bool {
        let open = self.open.lock().expect("long-polls lock");
        open.devices.get(device).is_some_and(|q| !q.is_empty()) || open.ended.get(device).is_some_and(|t| *t >= at)
    }

    /// Long-polls open now.
    pub fn open(&self) -> usize {
        self.open.lock().expect("long-polls lock").total
    }
}

impl Place {
    /// Resolves when this long-poll must answer now.
    pub async fn released(&mut self) {
        tokio::select! {
            () = self.release.notified() => {}
            _ = self.stopping.wait_for(|stopping| *stopping) => {}
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.polls.open.lock().expect("long-polls lock");
        open.total -= 1;
        match &self.holder {
            Holder::Client(client) => {
                if let Some(n) = open.clients.get_mut(client) {
                    *n -= 1;
                    if *n == 0 {
                        open.clients.remove(client);
                    }
                }
            }
            Holder::Device(device) => {
                if let Some(queue) = open.devices.get_mut(device) {
                    queue.retain(|(t, _)| *t != self.ticket);
                    if queue.is_empty() {
                        open.devices.remove(device);
                    }
                }
                let now = std::time::Instant::now();
                if open.ended.len() >= 10_000 {
                    open.ended.retain(|_, t| now.duration_since(*t) < ENDED_KEPT);
                }
                open.ended.insert(device.clone(), now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_device: usize, per_client: usize) -> LongPollSettings {
        LongPollSettings {
            max,
            per_device,
            per_client,
        }
    }

    #[tokio::test]
    async fn a_devices_newest_long_poll_releases_its_oldest() {
        let polls = LongPolls::new(limits(10, 2, 10));
        let mut first = polls.enter(Holder::Device("d".into())).unwrap();
        let _second = polls.enter(Holder::Device("d".into())).unwrap();
        let _third = polls.enter(Holder::Device("d".into())).unwrap();
        first.released().await; // resolves: the third released the first
        drop(first);
        assert_eq!(polls.open(), 2);
    }

    #[test]
    fn a_device_counts_as_polling_while_it_holds_a_long_poll_and_after_it_ends() {
        let polls = LongPolls::new(limits(10, 2, 10));
        let before = std::time::Instant::now();
        assert!(!polls.polled_since("d", before));
        let place = polls.enter(Holder::Device("d".into())).unwrap();
        assert!(polls.holds("d") && polls.polled_since("d", before));
        drop(place);
        assert!(!polls.holds("d"));
        assert!(polls.polled_since("d", before), "it ended after the command came");
        assert!(!polls.polled_since("d", std::time::Instant::now() + std::time::Duration::from_secs(1)));
    }

    #[test]
    fn client_and_overall_caps_refuse_with_retry_after() {
        let polls = LongPolls::new(limits(3, 2, 2));
        let _a = polls.enter(Holder::Client("c".into())).unwrap();
        let _b = polls.enter(Holder::Client("c".into())).unwrap();
        let refused = polls.enter(Holder::Client("c".into())).err().unwrap();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert!(refused.headers.iter().any(|(k, v)| k == "Retry-After" && v == "1"));
        let _c = polls.enter(Holder::Client("other".into())).unwrap();
        let full = polls.enter(Holder::Device("d".into())).err().unwrap();
        assert_eq!(full.code, ErrorCode::Unavailable);
        drop(_a);
        assert!(polls.enter(Holder::Device("d".into())).is_ok());
    }

    #[tokio::test]
    async fn shutdown_releases_every_long_poll() {
        let polls = LongPolls::new(limits(10, 2, 10));
        let mut place = polls.enter(Holder::Client("c".into())).unwrap();
        polls.stop();
        place.released().await;
        let mut later = polls.enter(Holder::Device("d".into())).unwrap();
        later.released().await;
    }
}
