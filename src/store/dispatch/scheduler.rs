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

/// Runs until the store closes.
pub async fn run(store: Store) {
    loop {
        if store.is_closed() {
            return;
        }
        store.inner.next_wake.store(i64::MIN, Ordering::SeqCst);
        // `notify_one` leaves a permit when nobody waits, so a kick during the pass is not lost.
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
