//! Per-agent request limits of the agent messages API: requests per minute (a fixed window, as the
//! `X-RateLimit-*` headers describe one) and requests in flight at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WINDOW: Duration = Duration::from_secs(60);

/// What the `X-RateLimit-*` headers say after a request was counted (or refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// Unix time (seconds) when the window resets.
    pub reset: u64,
}

impl Quota {
    /// Seconds until the window resets (at least 1), for `Retry-After`.
    pub fn retry_after(&self) -> u64 {
        self.reset.saturating_sub(unix_now()).max(1)
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The per-minute budget is spent.
    Rate(Quota),
    /// Too many requests of this agent are in flight.
    Concurrency { limit: u32, quota: Quota },
}

#[derive(Default)]
struct AgentWindow {
    window_start: u64,
    count: u32,
    in_flight: u32,
}

/// Limits for every agent; cheap to clone.
#[derive(Clone)]
pub struct AgentLimits {
    per_minute: u32,
    concurrent: u32,
    agents: Arc<Mutex<HashMap<String, AgentWindow>>>,
}

/// Held while a request is in flight; releases its concurrency slot when dropped.
pub struct Permit {
    limits: AgentLimits,
    agent: String,
    pub quota: Quota,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Ok(mut map) = self.limits.agents.lock() {
            if let Some(w) = map.get_mut(&self.agent) {
                w.in_flight = w.in_flight.saturating_sub(1);
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl AgentLimits {
    pub fn new(per_minute: u32, concurrent: u32) -> AgentLimits {
        AgentLimits {
            per_minute,
            concurrent,
            agents: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Counts one request of `agent` and takes a concurrency slot, or says why not.
    pub fn acquire(&self, agent: &str) -> Result<Permit, Refused> {
        self.acquire_at(agent, unix_now())
    }

    fn acquire_at(&self, agent: &str, now: u64) -> Result<Permit, Refused> {
        let mut map = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        let w = map.entry(agent.to_string()).or_default();
        if now >= w.window_start + WINDOW.as_secs() {
            w.window_start = now;
            w.count = 0;
        }
        let reset = w.window_start + WINDOW.as_secs();
        if w.count >= self.per_minute {
            return Err(Refused::Rate(Quota {
                limit: self.per_minute,
                remaining: 0,
                reset,
            }));
        }
        if w.in_flight >= self.concurrent {
            return Err(Refused::Concurrency {
                limit: self.concurrent,
                quota: Quota {
                    limit: self.per_minute,
                    remaining: self.per_minute - w.count,
                    reset,
                },
            });
        }
        w.count += 1;
        w.in_flight += 1;
        let quota = Quota {
            limit: self.per_minute,
            remaining: self.per_minute - w.count,
            reset,
        };
        drop(map);
        Ok(Permit {
            limits: self.clone(),
            agent: agent.to_string(),
            quota,
        })
    }

    /// The quota of `agent` without counting a request (for answers that are not counted).
    pub fn peek(&self, agent: &str) -> Quota {
        let now = unix_now();
        let map = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(agent) {
            Some(w) if now < w.window_start + WINDOW.as_secs() => Quota {
                limit: self.per_minute,
                remaining: self.per_minute.saturating_sub(w.count),
                reset: w.window_start + WINDOW.as_secs(),
            },
            _ => Quota {
                limit: self.per_minute,
                remaining: self.per_minute,
                reset: now + WINDOW.as_secs(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_and_resets() {
        let l = AgentLimits::new(2, 10);
        let a = l.acquire_at("a", 1000).unwrap();
        assert_eq!(a.quota.remaining, 1);
        let b = l.acquire_at("a", 1001).unwrap();
        assert_eq!(b.quota.remaining, 0);
        assert!(matches!(l.acquire_at("a", 1002), Err(Refused::Rate(q)) if q.reset == 1060));
        // Another agent has its own budget.
        assert!(l.acquire_at("b", 1002).is_ok());
        // The next window starts fresh.
        assert_eq!(l.acquire_at("a", 1060).unwrap().quota.remaining, 1);
    }

    #[test]
    fn concurrency_slots_are_released() {
        let l = AgentLimits::new(100, 1);
        let p = l.acquire_at("a", 0).unwrap();
        assert!(matches!(
            l.acquire_at("a", 0),
            Err(Refused::Concurrency { limit: 1, .. })
        ));
        drop(p);
        assert!(l.acquire_at("a", 0).is_ok());
    }
}
