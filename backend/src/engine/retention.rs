//! The retention sweeper: every `retention.interval` it removes, in batches of
//! `retention.batch` rows (each batch its own short write, so transitions interleave), what has
//! outlived its configured period (`store::retention` lists what and how). It runs in every
//! replica; two replicas deleting the same rows only find fewer of them.

use std::time::Duration;

use crate::config::RetentionSettings;
use crate::engine::AppState;
use crate::store::{now_ms, retention};

/// Removes one kind of row in batches until none is left past `cutoff`; returns how many.
async fn drain(state: &AppState, kind: retention::Batch, cutoff: i64, batch: i64) -> anyhow::Result<u64> {
    let sql = kind.sql(state.db.dialect);
    let mut removed = 0;
    loop {
        let n = match &state.db.sqlite {
            Some(writer) => {
                let sql = sql.clone();
                writer
                    .run(move |c| Ok(c.prepare_cached(&sql)?.execute(rusqlite::params![cutoff, batch])? as u64))
                    .await
                    .map_err(|e| anyhow::anyhow!("retention: {:?}", e.code))?
            }
            None => sqlx::query(&sql)
                .bind(cutoff)
                .bind(batch)
                .execute(&state.db.write)
                .await?
                .rows_affected(),
        };
        removed += n;
        if n < batch as u64 {
            return Ok(removed);
        }
        // Let waiting transitions have the writer between batches.
        tokio::task::yield_now().await;
    }
}

/// One pass over every kind of row; returns how many rows went.
pub async fn run_once(state: &AppState) -> anyhow::Result<u64> {
    let r: &RetentionSettings = &state.settings.retention;
    let now = now_ms();
    let ago = |secs: u64| now.saturating_sub(i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000));
    let batch = r.batch as i64;
    let mut removed = 0;
    for (kind, cutoff) in [
        (retention::DELIVERED_CALLBACKS, ago(r.callbacks)),
        (retention::DEAD_CALLBACKS, ago(r.dead_callbacks)),
        (retention::AUDIT, ago(r.audit)),
        (retention::REVOKED_DEVICES, ago(r.revoked_devices)),
    ] {
        let n = drain(state, kind, cutoff, batch).await?;
        state.metrics.retention_removed.inc_by(n);
        removed += n;
    }
    if removed > 0 {
        tracing::info!(removed, "retention: rows past their period removed");
    }
    Ok(removed)
}

pub async fn run_forever(state: AppState) {
    let every = Duration::from_secs_f64(state.settings.retention.interval);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = run_once(&state).await {
            tracing::warn!(error = %e, "retention pass failed; retried at the next interval");
        }
    }
}
