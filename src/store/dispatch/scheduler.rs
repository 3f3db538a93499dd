//! One task that sleeps until the earliest dispatch deadline (a batch window closing, a lease
//! expiring, a retry becoming available, an idle stream timing out) or until kicked.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::store::db::now_ms;
use crate::store::sql::Dialect;
use crate::store::Store;

/// Sleep when nothing is due at all (a kick wakes it sooner).
const IDLE: Duration = Duration::from_secs(3600);
/// Longest sleep on a shared PostgreSQL database: another node may have planned a deadline and
/// died before its scheduler got to it.
const SHARED_IDLE: Duration = Duration::from_secs(5);
/// Retry delay after the database failed.
const ON_ERROR: Duration = Duration::from_secs(1);

/// What `next_wake` holds while a pass runs: the pass has not planned its wake yet.
pub(crate) const IN_PASS: i64 = i64::MIN;

/// Whether a write that needs the scheduler awake by `at` (epoch ms; `i64::MIN` for "now") must
/// wake it, given the wake it has `planned`.
///
/// During a pass it always must: the pass may have read the database before that write
/// committed, and would then plan its sleep without it (a follow-up sealed only at the lease's
/// end, or at the idle hour). `notify_one` leaves one permit, so the scheduler runs one more
/// pass as soon as this one ends, however many writes came in during it.
pub(crate) fn must_wake(planned: i64, at: i64) -> bool {
    planned == IN_PASS || at < planned
}

/// Runs until the store closes.
pub async fn run(store: Store) {
    loop {
        if store.is_closed() {
            return;
        }
        store.inner.next_wake.store(IN_PASS, Ordering::SeqCst);
        let idle = match store.dialect() {
            Dialect::Sqlite => IDLE,
            Dialect::Postgres => SHARED_IDLE,
        };
        let at = match store.write(|w| w.tick()).await {
            Ok(Some(at)) => at,
            Ok(None) => now_ms() + idle.as_millis() as i64,
            Err(e) => {
                tracing::warn!(error = %e, "dispatch scheduler pass failed");
                now_ms() + ON_ERROR.as_millis() as i64
            }
        }
        .min(now_ms() + idle.as_millis() as i64);
        store.inner.next_wake.store(at, Ordering::SeqCst);
        let wake_at = Instant::now() + Duration::from_millis((at - now_ms()).max(0) as u64);
        // A retry that just became available, or a sealed batch: let waiting claims look.
        store.inner.claims.notify_waiters();
        tokio::select! {
            _ = store.inner.scheduler.notified() => {}
            _ = tokio::time::sleep_until(wake_at) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_during_a_pass_is_never_dropped() {
        // Kicks ("now") and deadlines alike, while the pass has not planned yet.
        assert!(must_wake(IN_PASS, i64::MIN));
        assert!(must_wake(IN_PASS, 1_000));
        // After the pass planned: only what is earlier than the plan.
        assert!(must_wake(5_000, i64::MIN));
        assert!(must_wake(5_000, 4_999));
        assert!(!must_wake(5_000, 5_000));
        assert!(!must_wake(5_000, 9_000));
    }
}
