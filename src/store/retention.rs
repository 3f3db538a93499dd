//! Retention: a task that periodically deletes events, finished batches and their inputs past
//! their retention (`EVENTS_RETENTION_SECONDS`, `DISPATCH_RETENTION_SECONDS`) and expired
//! idempotency keys, so the database does not grow without bound. Each pass is a write on the
//! writer thread, deleting at most [`PASS_MAX`] rows per table so it never holds the write lock
//! for long; a backlog is worked off over the following passes.

use std::time::Duration;

use super::error::StoreError;
use super::sql::args;
use super::{Store, W};

/// Most rows deleted per table in one pass.
const PASS_MAX: i64 = 5000;

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub events: usize,
    pub batches: usize,
    pub inputs: usize,
    pub idempotency_keys: usize,
}

impl Pruned {
    fn total(&self) -> usize {
        self.events + self.batches + self.inputs + self.idempotency_keys
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

impl W<'_> {
    fn prune(&mut self) -> Result<Pruned, StoreError> {
        let mut p = Pruned::default();
        if let Some(keep) = self.settings.events_retention {
            let before = self.now.saturating_sub(ms(keep));
            p.events = self.c.execute(
                "DELETE FROM events WHERE seq IN \
                 (SELECT seq FROM events WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
                args![before, PASS_MAX],
            )?;
            p.events += self.c.execute(
                "DELETE FROM fd_events WHERE seq IN \
                 (SELECT seq FROM fd_events WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
                args![before, PASS_MAX],
            )?;
        }
        if let Some(keep) = self.settings.dispatch_retention {
            let before = self.now.saturating_sub(ms(keep));
            p.batches = self.c.execute(
                "DELETE FROM dispatch_batches WHERE seq IN \
                 (SELECT seq FROM dispatch_batches WHERE status IN ('completed', 'failed') \
                  AND completed_at < ?1 ORDER BY completed_at LIMIT ?2)",
                args![before, PASS_MAX],
            )?;
            // An input goes once it is old and no batch refers to it any more.
            p.inputs = self.c.execute(
                "DELETE FROM dispatch_inputs WHERE seq IN \
                 (SELECT i.seq FROM dispatch_inputs i WHERE i.state <> 'pending' AND i.created_at < ?1 \
                  AND NOT EXISTS (SELECT 1 FROM dispatch_batches b WHERE b.id = i.batch_id) \
                  ORDER BY i.created_at LIMIT ?2)",
                args![before, PASS_MAX],
            )?;
        }
        let ttl = Duration::from_secs(self.settings.idempotency_ttl_secs);
        p.idempotency_keys = self.c.execute(
            "DELETE FROM idempotency WHERE key IN \
             (SELECT key FROM idempotency WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
            args![self.now.saturating_sub(ms(ttl)), PASS_MAX],
        )?;
        Ok(p)
    }
}

impl Store {
    /// One retention pass: deletes what is past its retention (at most [`PASS_MAX`] rows a
    /// table).
    pub async fn prune_once(&self) -> Result<Pruned, StoreError> {
        self.write(|w| w.prune()).await
    }
}

/// Runs retention passes every `RETENTION_SWEEP_MS` until the store closes. A failed pass (a
/// full disk, say) is logged and tried again at the next sweep.
pub(crate) async fn run(store: Store) {
    let every = store.settings().retention_sweep;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if store.is_closed() {
            return;
        }
        match store.prune_once().await {
            Ok(p) if p.total() > 0 => tracing::info!(
                events = p.events,
                batches = p.batches,
                inputs = p.inputs,
                idempotency_keys = p.idempotency_keys,
                "retention: old rows deleted"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention: pass failed; tried again later"),
        }
    }
}
