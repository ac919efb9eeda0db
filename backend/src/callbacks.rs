//! The callback outbox and its delivery worker.
//!
//! Events are written in the transaction that changes a command's state ([`enqueue`]). The
//! worker claims due events for a while (no transaction is held across the HTTP call),
//! delivers them with basic auth and Standard Webhooks signatures, and records every attempt.
//! A failure is retried on the configured schedule with jitter; `Retry-After` is honoured
//! within [delay, 2 × delay]; `410 Gone` and an exhausted schedule make a dead letter, kept
//! and visible. Delivery is at least once: receivers deduplicate on `webhook-id`.

use hermod_shared::webhook::{self, WebhookSecret};
use hermod_shared::wire::{rfc3339, CallbackEvent};
use rand::Rng;
use sqlx::AnyConnection;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};

use crate::app::AppState;
use crate::commands::CommandRow;
use crate::config::CallbackSettings;
use crate::db::{now_ms, random_id, Db};

/// Longest response body kept in the attempt log.
const RESPONSE_BODY_LIMIT: usize = 4096;
/// How long after a claim another worker may take the event over, beyond the request timeout.
const CLAIM_MARGIN_MS: i64 = 10_000;

/// Writes the callback event for a command's new final state, if its client has a callback URL.
pub async fn enqueue(
    conn: &mut AnyConnection,
    state: &AppState,
    row: &CommandRow,
    now: i64,
) -> sqlx::Result<bool> {
    let url: Option<Option<String>> =
        sqlx::query_scalar("SELECT callback_url FROM clients WHERE id = $1")
            .bind(&row.client_pk)
            .fetch_optional(&mut *conn)
            .await?;
    if url.flatten().is_none() {
        return Ok(false);
    }
    let view = row.view(state, now, false);
    let event = CallbackEvent {
        event_type: format!("command.{}", view.status.as_str()),
        timestamp: rfc3339(now),
        data: view,
    };
    sqlx::query(
        "INSERT INTO callback_events (id, client_pk, command_id, event_type, payload, status, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6)",
    )
    .bind(random_id("msg_"))
    .bind(&row.client_pk)
    .bind(&row.id)
    .bind(&event.event_type)
    .bind(serde_json::to_string(&event).expect("events serialise"))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(true)
}

/// The HTTP client for callbacks: rustls with the system's roots plus every `.cer` (PEM) file
/// in `cacerts`, one log line per certificate; redirects are not followed (a 3xx is a failure).
pub fn http_client(settings: &CallbackSettings, cacerts: &Path) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs_f64(settings.request_timeout))
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("Hermod/", env!("CARGO_PKG_VERSION")));
    if cacerts.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(cacerts)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "cer"))
            .collect();
        files.sort();
        for file in files {
            let pem = std::fs::read(&file)?;
            let name = file
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| anyhow::anyhow!("{} is not a PEM certificate", file.display()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
            let alias = name.trim_end_matches(".cer");
            tracing::info!("Adding certificate {name} using alias {alias}");
        }
    }
    Ok(builder.build()?)
}

#[derive(Debug, sqlx::FromRow)]
struct Claimed {
    id: String,
    client_pk: String,
    payload: String,
    attempts: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct Receiver {
    callback_url: Option<String>,
    callback_basic_auth: Option<String>,
    callback_secrets: Option<String>,
}

/// The delivery worker.
#[derive(Clone)]
pub struct Outbox {
    pub db: Db,
    pub http: reqwest::Client,
    pub settings: Arc<CallbackSettings>,
    pub wake: Arc<Notify>,
}

enum Outcome {
    Delivered,
    Retry { after: Duration },
    Dead,
}

impl Outbox {
    /// Runs until the task is dropped.
    pub async fn run(self) {
        let permits = Arc::new(Semaphore::new(self.settings.concurrency));
        loop {
            let free = permits.available_permits();
            let claimed = if free == 0 {
                Ok(Vec::new())
            } else {
                self.claim(free as i64).await
            };
            match claimed {
                Ok(events) if !events.is_empty() => {
                    for event in events {
                        let permit = Arc::clone(&permits)
                            .acquire_owned()
                            .await
                            .expect("semaphore open");
                        let outbox = self.clone();
                        tokio::spawn(async move {
                            outbox.deliver(event).await;
                            drop(permit);
                        });
                    }
                }
                Ok(_) => {
                    let pause = self
                        .until_next_due()
                        .await
                        .unwrap_or(Duration::from_secs(1));
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "claiming callback events failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// How long until the next pending event is due (at most 5 s, for events that other
    /// processes add).
    async fn until_next_due(&self) -> anyhow::Result<Duration> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(CASE WHEN claimed_until > next_attempt_at THEN claimed_until ELSE next_attempt_at END) FROM callback_events WHERE status = 'pending'",
        )
        .fetch_one(&self.db.read)
        .await?;
        let ms = next.map_or(5_000, |at| (at - now_ms()).clamp(0, 5_000));
        Ok(Duration::from_millis(ms as u64))
    }

    /// Claims due events, oldest first, skipping an event while an older one of the same
    /// command is still pending (so a command's callbacks arrive in order).
    async fn claim(&self, limit: i64) -> anyhow::Result<Vec<Claimed>> {
        let now = now_ms();
        let until = now + (self.settings.request_timeout * 1000.0) as i64 + CLAIM_MARGIN_MS;
        Ok(sqlx::query_as(
            "UPDATE callback_events SET claimed_until = $1
             WHERE seq IN (
                 SELECT e.seq FROM callback_events e
                 WHERE e.status = 'pending' AND e.next_attempt_at <= $2 AND e.claimed_until <= $2
                   AND NOT EXISTS (SELECT 1 FROM callback_events p WHERE p.command_id = e.command_id AND p.status = 'pending' AND p.seq < e.seq)
                 ORDER BY e.seq LIMIT $3)
             RETURNING id, client_pk, payload, attempts",
        )
        .bind(until)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.db.write)
        .await?)
    }

    async fn deliver(&self, event: Claimed) {
        if let Err(e) = self.try_deliver(&event).await {
            tracing::error!(event = %event.id, error = %e, "recording a callback attempt failed");
        }
        // The loop may be asleep until this event's claim ran out: let it see the new due time
        // (and the next event of the same command, which this one held back).
        self.wake.notify_one();
    }

    /// One attempt: send, then record the attempt and the event's next state.
    async fn try_deliver(&self, event: &Claimed) -> anyhow::Result<()> {
        let receiver: Receiver = sqlx::query_as(
            "SELECT callback_url, callback_basic_auth, callback_secrets FROM clients WHERE id = $1",
        )
        .bind(&event.client_pk)
        .fetch_one(&self.db.read)
        .await?;
        let started = Instant::now();
        let (status_code, body, error, retry_after) = match &receiver.callback_url {
            None => (
                None,
                None,
                Some("the client has no callback URL".to_owned()),
                None,
            ),
            Some(url) => self.send(url, &receiver, event).await,
        };
        let duration_ms = started.elapsed().as_millis() as i64;
        let attempts = event.attempts + 1;
        let outcome = match status_code {
            Some(code) if (200..300).contains(&code) => Outcome::Delivered,
            Some(410) => Outcome::Dead,
            _ => match self.settings.retry_schedule.get((attempts - 1) as usize) {
                None => Outcome::Dead,
                Some(&delay) => {
                    let jitter = self.settings.jitter;
                    let factor = if jitter > 0.0 {
                        rand::thread_rng().gen_range(1.0 - jitter..=1.0 + jitter)
                    } else {
                        1.0
                    };
                    let scheduled = Duration::from_secs_f64(delay * factor);
                    let after =
                        retry_after.map_or(scheduled, |ra| ra.clamp(scheduled, scheduled * 2));
                    Outcome::Retry { after }
                }
            },
        };
        let now = now_ms();
        let mut tx = self.db.write.begin().await?;
        sqlx::query(
            "INSERT INTO callback_attempts (event_id, attempted_at, status_code, duration_ms, response_body, error) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&event.id)
        .bind(now)
        .bind(status_code.map(i64::from))
        .bind(duration_ms)
        .bind(body)
        .bind(&error)
        .execute(&mut *tx)
        .await?;
        let last_error = error.or_else(|| status_code.map(|c| format!("HTTP {c}")));
        match outcome {
            Outcome::Delivered => {
                sqlx::query("UPDATE callback_events SET status = 'delivered', attempts = $1, delivered_at = $2, claimed_until = 0, last_error = NULL WHERE id = $3")
                    .bind(attempts)
                    .bind(now)
                    .bind(&event.id)
                    .execute(&mut *tx)
                    .await?;
            }
            Outcome::Retry { after } => {
                sqlx::query("UPDATE callback_events SET attempts = $1, next_attempt_at = $2, claimed_until = 0, last_error = $3 WHERE id = $4")
                    .bind(attempts)
                    .bind(now + after.as_millis() as i64)
                    .bind(&last_error)
                    .bind(&event.id)
                    .execute(&mut *tx)
                    .await?;
            }
            Outcome::Dead => {
                tracing::warn!(event = %event.id, attempts, "callback dead-lettered");
                sqlx::query("UPDATE callback_events SET status = 'dead', attempts = $1, claimed_until = 0, last_error = $2 WHERE id = $3")
                    .bind(attempts)
                    .bind(&last_error)
                    .bind(&event.id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn send(
        &self,
        url: &str,
        receiver: &Receiver,
        event: &Claimed,
    ) -> (
        Option<u16>,
        Option<String>,
        Option<String>,
        Option<Duration>,
    ) {
        let timestamp = now_ms() / 1000;
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header(webhook::HEADER_ID, &event.id)
            .header(webhook::HEADER_TIMESTAMP, timestamp.to_string());
        let secrets: Vec<WebhookSecret> = receiver
            .callback_secrets
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .filter_map(WebhookSecret::parse)
            .collect();
        if !secrets.is_empty() {
            request = request.header(
                webhook::HEADER_SIGNATURE,
                webhook::signature_header(&secrets, &event.id, timestamp, event.payload.as_bytes()),
            );
        }
        if let Some((user, password)) = receiver
            .callback_basic_auth
            .as_deref()
            .and_then(|a| a.split_once(':'))
        {
            request = request.basic_auth(user, Some(password));
        }
        match request.body(event.payload.clone()).send().await {
            Ok(response) => {
                let code = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let mut body = response.text().await.unwrap_or_default();
                if body.len() > RESPONSE_BODY_LIMIT {
                    let mut end = RESPONSE_BODY_LIMIT;
                    while !body.is_char_boundary(end) {
                        end -= 1;
                    }
                    body.truncate(end);
                }
                (Some(code), Some(body), None, retry_after)
            }
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                // reqwest's message may include the URL; it never includes the basic-auth password.
                (
                    None,
                    None,
                    Some(format!("{kind}: {}", error_chain(&e))),
                    None,
                )
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v.trim()).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
