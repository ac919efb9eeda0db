//! `Mailbox`, a Durable Object per device: whether the device's mailbox is known to be empty,
//! and the idle polls waiting for that to change.
//!
//! - `POST /bump`: a command for the device was created or cancelled (the edge saw the backend
//!   say so): the mailbox is no longer known to be empty, and waiting polls are released.
//! - `POST /empty?version=V`: the backend answered an empty page for a poll let through at
//!   version `V`; recorded only if nothing was bumped since, so a new command is never missed.
//! - `GET /wait?timeout_ms=T&forward_every_ms=F`: `{"go": true}` when the poll must go to the
//!   backend (not known empty, bumped while waiting, or nothing forwarded for `F` ms, so the
//!   backend still sees the device); `{"go": false}` after `T` ms of a known-empty mailbox.
//!
//! A Durable Object is one instance world-wide, so every edge location sees the same state.
//! State lives in memory: an evicted object starts as "not known empty", which is safe.

use futures_channel::oneshot;
use futures_util::future::{select, Either};
use std::cell::{Cell, RefCell};
use std::time::Duration;
use worker::*;

#[durable_object]
pub struct Mailbox {
    version: Cell<u64>,
    empty_at: Cell<Option<u64>>,
    last_forward_ms: Cell<f64>,
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
}

fn param(url: &Url, name: &str) -> Option<u64> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
}

impl DurableObject for Mailbox {
    fn new(_state: State, _env: Env) -> Self {
        Self {
            version: Cell::new(0),
            empty_at: Cell::new(None),
            last_forward_ms: Cell::new(0.0),
            waiters: RefCell::default(),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let url = req.url()?;
        match url.path() {
            "/bump" => {
                self.version.set(self.version.get() + 1);
                self.empty_at.set(None);
                for waiter in self.waiters.borrow_mut().drain(..) {
                    let _ = waiter.send(());
                }
                Response::ok("")
            }
            "/empty" => {
                if param(&url, "version") == Some(self.version.get()) {
                    self.empty_at.set(Some(self.version.get()));
                }
                Response::ok("")
            }
            "/wait" => {
                let timeout = Duration::from_millis(param(&url, "timeout_ms").unwrap_or(0));
                let forward_every = param(&url, "forward_every_ms").unwrap_or(60_000) as f64;
                let now = Date::now().as_millis() as f64;
                let known_empty = self.empty_at.get() == Some(self.version.get());
                let go = if !known_empty || now - self.last_forward_ms.get() >= forward_every {
                    true
                } else if timeout.is_zero() {
                    false
                } else {
                    let (tx, rx) = oneshot::channel();
                    self.waiters.borrow_mut().push(tx);
                    matches!(select(rx, Box::pin(Delay::from(timeout))).await, Either::Left(_))
                };
                if go {
                    self.last_forward_ms.set(Date::now().as_millis() as f64);
                }
                Response::from_json(&serde_json::json!({ "go": go, "version": self.version.get() }))
            }
            _ => Response::error("not found", 404),
        }
    }
}
