//! The `/api/v1` write rate limit: GCRA through `governor`, `max` writes per window with bursts
//! up to `max`, one budget for everyone or one per client IP behind a trusted proxy.

use std::num::NonZeroU32;
use std::time::Duration;

use actix_web::HttpRequest;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use subtle::ConstantTimeEq;

use crate::settings::Settings;

/// Client keys kept before idle ones are pruned.
const PRUNE_ABOVE: usize = 10_000;

type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// The write limiter.
pub struct WriteLimiter {
    /// `None` when the budget is 0: every write is refused.
    rate: Option<Keyed>,
    window: Duration,
}

impl WriteLimiter {
    pub fn new(max: u32, window_ms: u64) -> WriteLimiter {
        let window = Duration::from_millis(window_ms.max(1));
        let rate = NonZeroU32::new(max).and_then(|n| {
            let period = (window / n.get()).max(Duration::from_nanos(1));
            Quota::with_period(period).map(|q| RateLimiter::keyed(q.allow_burst(n)))
        });
        WriteLimiter { rate, window }
    }

    /// Counts one write for `key`; `Err(seconds until it would be allowed)` when over the limit.
    pub fn hit(&self, key: &str) -> Result<(), u64> {
        let Some(rate) = &self.rate else {
            return Err(self.window.as_millis().div_ceil(1000).max(1) as u64);
        };
        if rate.len() > PRUNE_ABOVE {
            rate.retain_recent();
            rate.shrink_to_fit();
        }
        rate.check_key(&key.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(rate.clock().now());
            wait.as_millis().div_ceil(1000).max(1) as u64
        })
    }
}

/// Whose budget a write uses: everyone's, or the client IP's when proxy headers are trusted.
fn client_key(req: &HttpRequest, trust_proxy: bool) -> String {
    if !trust_proxy {
        return "*".into();
    }
    client_ip(req, true)
}

/// The client's IP: the connection's peer, or the first address of the proxy headers when they
/// are trusted (`TRUST_PROXY_HEADERS`).
pub fn client_ip(req: &HttpRequest, trust_proxy: bool) -> String {
    let peer = || req.peer_addr().map(|a| a.ip().to_string());
    if !trust_proxy {
        return peer().unwrap_or_else(|| "*".into());
    }
    let h = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or("").trim().to_string())
            .filter(|v| !v.is_empty())
    };
    h("x-forwarded-for")
        .or_else(|| h("x-real-ip"))
        .or_else(|| h("cf-connecting-ip"))
        .or_else(peer)
        .unwrap_or_else(|| "*".into())
}

/// True for agentd's own workers (they carry `x-agentd-worker-token`): they are not held to the
/// clients' write budget.
fn is_own_worker(req: &HttpRequest, settings: &Settings) -> bool {
    let token = settings.worker_token.as_str().as_bytes();
    req.headers()
        .get("x-agentd-worker-token")
        .is_some_and(|v| bool::from(v.as_bytes().ct_eq(token)))
}

/// Counts a write against its client's budget; `Err(retry after, in seconds)` when it is spent.
pub fn count_write(
    req: &HttpRequest,
    settings: &Settings,
    limiter: &WriteLimiter,
) -> Result<(), u64> {
    if is_own_worker(req, settings) {
        return Ok(());
    }
    limiter.hit(&client_key(req, settings.trust_proxy_headers))
}
