//! `Mailbox`, a Durable Object per device: what the edge knows of the device's mailbox, the
//! nonces the device used within the signature window, and the idle long-polls waiting there.
//!
//! Its state lives in the object's storage (the SQLite-backed storage `wrangler dev` runs too),
//! written when it changes and read when the object wakes, so an evicted object (after about ten
//! idle seconds) still knows the mailbox is empty and which nonces were used:
//!
//! - `version`, bumped when the backend says a command for the device was created or cancelled;
//! - `empty`: the version and cursor at which the backend last found the mailbox empty;
//! - `checked_ms`: when the backend last confirmed that (forwarded poll or reconciliation);
//! - `nonces`: nonce → when it may be forgotten (unix ms).
//!
//! Calls (from the Worker):
//!
//! - `POST /nonce?nonce=N&until=MS`: `{"fresh": bool}`; a nonce seen before is not fresh.
//! - `POST /bump`: the mailbox is no longer known empty; waiting polls are released at once.
//! - `POST /empty?version=V&cursor=C`: the backend answered an empty page at cursor `C` for a
//!   poll let through at version `V`; kept only if nothing was bumped since.
//! - `POST /checked`: the backend confirmed (by reconciliation) that nothing is pending.
//! - `GET /wait?cursor=C&timeout_ms=T&reconcile_every_ms=R`: `{"verdict": "forward"}` when the
//!   poll must go to the backend (not known empty at this cursor, or bumped while waiting),
//!   `{"verdict": "reconcile"}` when the backend has not confirmed the emptiness for `R` ms (the
//!   Worker then asks it without a wait), else `{"verdict": "empty"}` after `T` ms.
//!
//! A waiting poll is held in the object's memory: HTTP requests cannot hibernate (only
//! WebSockets can), and an alarm cannot answer an open request, so the object stays active
//! while a device waits; it is evicted between polls, which is what the stored state is for.

use futures_channel::oneshot;
use futures_util::future::{select, Either};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;
use worker::*;

/// Most nonces kept (a device is rate-limited far below this within a window).
const MAX_NONCES: usize = 4_096;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Stored {
    version: u64,
    /// (version, cursor) of the last empty page.
    empty: Option<(u64, i64)>,
    checked_ms: f64,
    nonces: HashMap<String, f64>,
}

#[durable_object]
pub struct Mailbox {
    state: State,
    loaded: Cell<bool>,
    stored: RefCell<Stored>,
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
}

fn param<T: std::str::FromStr>(url: &Url, name: &str) -> Option<T> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
}

impl Mailbox {
    async fn load(&self) -> Result<()> {
        if !self.loaded.get() {
            if let Some(stored) = self.state.storage().get::<Stored>("mailbox").await? {
                *self.stored.borrow_mut() = stored;
            }
            self.loaded.set(true);
        }
        Ok(())
    }

    async fn save(&self) -> Result<()> {
        let snapshot = self.stored.borrow().clone();
        self.state.storage().put("mailbox", snapshot).await
    }

    fn release_waiters(&self) {
        for waiter in self.waiters.borrow_mut().drain(..) {
            let _ = waiter.send(());
        }
    }
}

impl DurableObject for Mailbox {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            loaded: Cell::new(false),
            stored: RefCell::default(),
            waiters: RefCell::default(),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        self.load().await?;
        let url = req.url()?;
        let now = Date::now().as_millis() as f64;
        match url.path() {
            "/nonce" => {
                let nonce: String = param(&url, "nonce").unwrap_or_default();
                let until: f64 = param(&url, "until").unwrap_or(now);
                let fresh = {
                    let mut s = self.stored.borrow_mut();
                    s.nonces.retain(|_, forget_at| *forget_at > now);
                    if s.nonces.contains_key(&nonce) || s.nonces.len() >= MAX_NONCES {
                        false
                    } else {
                        s.nonces.insert(nonce, until);
                        true
                    }
                };
                if fresh {
                    self.save().await?;
                }
                Response::from_json(&serde_json::json!({ "fresh": fresh }))
            }
            "/bump" => {
                {
                    let mut s = self.stored.borrow_mut();
                    s.version += 1;
                    s.empty = None;
                }
                self.save().await?;
                self.release_waiters();
                Response::ok("")
            }
            "/empty" => {
                let (version, cursor): (Option<u64>, Option<i64>) = (param(&url, "version"), param(&url, "cursor"));
                let changed = {
                    let mut s = self.stored.borrow_mut();
                    match (version, cursor) {
                        (Some(v), Some(c)) if v == s.version => {
                            s.empty = Some((v, c));
                            s.checked_ms = now;
                            true
                        }
                        _ => false,
                    }
                };
                if changed {
                    self.save().await?;
                }
                Response::ok("")
            }
            "/checked" => {
                self.stored.borrow_mut().checked_ms = now;
                self.save().await?;
                Response::ok("")
            }
            "/wait" => {
                let cursor: i64 = param(&url, "cursor").unwrap_or(0);
                let timeout = Duration::from_millis(param(&url, "timeout_ms").unwrap_or(0));
                let reconcile_every: f64 = param(&url, "reconcile_every_ms").unwrap_or(300_000.0);
                let (version, known_empty, checked_ms) = {
                    let s = self.stored.borrow();
                    // Known empty only at the cursor the backend confirmed: a device that asks
                    // from elsewhere (an older cursor after a reinstall) goes to the backend.
                    (s.version, s.empty == Some((s.version, cursor)), s.checked_ms)
                };
                let verdict = if !known_empty {
                    "forward"
                } else if now - checked_ms >= reconcile_every {
                    "reconcile"
                } else if timeout.is_zero() {
                    "empty"
                } else {
                    let (tx, rx) = oneshot::channel();
                    self.waiters.borrow_mut().push(tx);
                    match select(rx, Box::pin(Delay::from(timeout))).await {
                        Either::Left(_) => "forward",
                        Either::Right(_) => "empty",
                    }
                };
                Response::from_json(&serde_json::json!({ "verdict": verdict, "version": version }))
            }
            _ => Response::error("not found", 404),
        }
    }
}
