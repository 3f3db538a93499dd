//! Waiting for a condition: poll it, every [`POLL`], until a deadline. One style for every test,
//! so a wait never sleeps longer than the condition takes to come true.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Generous: the machine may be loaded.
pub const SOON: Duration = Duration::from_secs(30);

/// How often a condition is checked again.
pub const POLL: Duration = Duration::from_millis(10);

/// Checks `cond` until it is true or `within` passes; whether it became true.
pub async fn wait_until<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(within, || {
        let c = cond();
        async move { c.await.then_some(()) }
    })
    .await
    .is_some()
}

/// Calls `find` until it finds something or `within` passes; what it found.
pub async fn wait_for<T, F, Fut>(within: Duration, mut find: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = find().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}
