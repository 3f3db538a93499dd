//! Who may call what: the API key rules of the reference (section 1) and the write rate limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;

use super::error::ApiError;
use super::Store;
use crate::auth::{is_authorized, Accept};

/// Bearer and `?token=` as in the reference; `x-api-key` too, like the supervisor routes.
const ACCEPT: Accept = Accept {
    bearer: true,
    x_api_key: true,
    query_token: true,
};

/// Buckets kept before old windows are pruned.
const MAX_BUCKETS: usize = 10_000;

/// Fixed-window write limiter: one bucket, or one per client IP.
pub struct RateLimiter {
    max: u32,
    window: Duration,
    buckets: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    pub fn new(max: u32, window_ms: u64) -> RateLimiter {
        RateLimiter {
            max,
            window: Duration::from_millis(window_ms.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one write for `key`; `Err(seconds until the window resets)` when over the limit.
    pub fn hit(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() > MAX_BUCKETS {
            let window = self.window;
            b.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = b.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.max {
            let left = self.window.saturating_sub(now.duration_since(entry.0));
            return Err(left.as_millis().div_ceil(1000).max(1) as u64);
        }
        entry.1 += 1;
        Ok(())
    }
}

fn client_key(req: &HttpRequest, trust_proxy: bool) -> String {
    if !trust_proxy {
        return "*".into();
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
        .or_else(|| req.peer_addr().map(|a| a.ip().to_string()))
        .unwrap_or_else(|| "*".into())
}

impl Store {
    fn is_own_worker(&self, req: &HttpRequest) -> bool {
        use subtle::ConstantTimeEq;
        let token = self.settings().worker_token.as_str().as_bytes();
        req.headers()
            .get("x-agentd-worker-token")
            .is_some_and(|v| bool::from(v.as_bytes().ct_eq(token)))
    }

    fn key_ok(&self, req: &HttpRequest) -> bool {
        is_authorized(req, self.settings().api_key.as_deref(), ACCEPT)
    }

    /// Read routes: public unless `READS_REQUIRE_KEY`.
    pub fn check_read(&self, req: &HttpRequest) -> Result<(), ApiError> {
        if self.settings().reads_require_key && !self.key_ok(req) {
            return Err(ApiError::Unauthorized);
        }
        Ok(())
    }

    /// The event stream: always gated when a key is set.
    pub fn check_stream(&self, req: &HttpRequest) -> Result<(), ApiError> {
        if !self.key_ok(req) {
            return Err(ApiError::Unauthorized);
        }
        Ok(())
    }

    /// Write routes: the key first (rejected calls use no budget), then the rate limit, which
    /// agentd's own workers (carrying their `x-agentd-worker-token`) are not held to.
    pub fn check_write(&self, req: &HttpRequest) -> Result<(), ApiError> {
        if !self.key_ok(req) {
            return Err(ApiError::Unauthorized);
        }
        if self.is_own_worker(req) {
            return Ok(());
        }
        let key = client_key(req, self.settings().trust_proxy_headers);
        self.inner
            .rate
            .hit(&key)
            .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })
    }
}
