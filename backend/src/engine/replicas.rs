//! Several replicas on one PostgreSQL database: a wake-up in one (a command for a device, a
//! status change) reaches waiters in all of them through `LISTEN/NOTIFY`, never by polling.

use sqlx::postgres::PgListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use crate::engine::wake::Wakeups;
use crate::store::Db;

const CHANNEL: &str = "hermod_wake";
/// A NOTIFY payload must stay under 8,000 bytes; keys are under 100.
const NOTIFY_PAYLOAD_MAX: usize = 7_000;

/// Starts the publisher and the listener; both run until the process ends.
pub async fn connect(db: &Db, wakeups: &Arc<Wakeups>) -> anyhow::Result<()> {
    let mut listener = PgListener::connect(&db.url).await?;
    listener.listen(CHANNEL).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    wakeups.publish_to(tx);

    let pool = db.write.clone();
    tokio::spawn(async move {
        // Everything woken since the last NOTIFY goes in the next one (keys one a line), so a
        // burst costs a few statements rather than one per wake-up.
        while let Some(first) = rx.recv().await {
            let mut payload = first;
            while payload.len() < NOTIFY_PAYLOAD_MAX {
                match rx.try_recv() {
                    Ok(key) => {
                        payload.push('\n');
                        payload.push_str(&key);
                    }
                    Err(_) => break,
                }
            }
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&payload)
                .execute(&pool)
                .await
            {
                tracing::warn!(error = %e, "could not publish a wake-up");
            }
        }
    });

    let wakeups = Arc::clone(wakeups);
    tokio::spawn(async move {
        loop {
            // PgListener reconnects by itself (at the next call). `None`: the connection was
            // lost, and with it any wake-up sent meanwhile, so every local waiter reads again.
            match listener.try_recv().await {
                Ok(Some(n)) => n.payload().lines().for_each(|key| wakeups.wake_local(key)),
                Ok(None) => {
                    tracing::warn!("wake-up listener lost its connection; reconnecting");
                    wakeups.wake_all_local();
                }
                Err(e) => {
                    wakeups.wake_all_local();
                    tracing::warn!(error = %e, "wake-up listener failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    Ok(())
}
