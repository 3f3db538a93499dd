//! Per-agent request limits of the agent messages API: a request rate (GCRA through `governor`,
//! `limit` requests a minute with bursts up to `limit`) and requests in flight at once (a
//! semaphore per agent).
//!
//! Only agents of the catalog are ever counted (requests are validated first), so the per-agent
//! maps stay as small as the catalog; idle keys are pruned all the same.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota as Gcra, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The per-minute budget's window, as the `X-RateLimit-*` headers describe it.
const WINDOW: Duration = Duration::from_secs(60);
/// Agents tracked before idle ones are pruned.
const PRUNE_ABOVE: usize = 1024;

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// What the `X-RateLimit-*` headers say after a request was counted (or refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// Unix time (seconds) when the whole budget is back.
    pub reset: u64,
}

impl Quota {
    /// Seconds until the budget is back (at least 1), for `Retry-After`.
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

/// Held while a request is in flight; its concurrency slot is released when dropped.
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    pub quota: Quota,
}

/// What is known of one agent: its in-flight slots and the budget left after its last request.
struct Agent {
    slots: Arc<Semaphore>,
    last: Option<(Instant, u32)>,
}

/// Limits for every agent.
pub struct AgentLimits {
    per_minute: u32,
    concurrent: u32,
    /// `None` when the budget is 0: every request is refused.
    rate: Option<Keyed>,
    agents: Mutex<HashMap<String, Agent>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl AgentLimits {
    pub fn new(per_minute: u32, concurrent: u32) -> AgentLimits {
        let rate = NonZeroU32::new(per_minute).map(|n| {
            RateLimiter::keyed(Gcra::per_minute(n)).with_middleware::<StateInformationMiddleware>()
        });
        AgentLimits {
            per_minute,
            concurrent,
            rate,
            agents: Mutex::new(HashMap::new()),
        }
    }

    /// One request's share of the window.
    fn period(&self) -> Duration {
        WINDOW / self.per_minute.max(1)
    }

    /// The quota with `remaining` left now, the rest coming back one request per period.
    fn quota(&self, remaining: u32) -> Quota {
        let refill = self.period() * self.per_minute.saturating_sub(remaining);
        Quota {
            limit: self.per_minute,
            remaining,
            reset: unix_now() + refill.as_secs_f64().ceil() as u64,
        }
    }

    /// Takes a concurrency slot of `agent` and counts one request against its rate, or says why
    /// not. A request refused for concurrency is not counted.
    pub fn acquire(&self, agent: &str) -> Result<Permit, Refused> {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if agents.len() > PRUNE_ABOVE {
            let full = WINDOW;
            agents.retain(|_, a| {
                Arc::strong_count(&a.slots) > 1 || a.last.is_some_and(|(at, _)| at.elapsed() < full)
            });
            if let Some(rate) = &self.rate {
                rate.retain_recent();
                rate.shrink_to_fit();
            }
        }
        let entry = agents.entry(agent.to_string()).or_insert_with(|| Agent {
            slots: Arc::new(Semaphore::new(self.concurrent as usize)),
            last: None,
        });
        let Ok(slot) = entry.slots.clone().try_acquire_owned() else {
            let quota = self.peek_entry(entry);
            return Err(Refused::Concurrency {
                limit: self.concurrent,
                quota,
            });
        };
        let Some(rate) = &self.rate else {
            return Err(Refused::Rate(self.quota(0)));
        };
        let key = agent.to_string();
        match rate.check_key(&key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                entry.last = Some((Instant::now(), remaining));
                Ok(Permit {
                    _slot: slot,
                    quota: self.quota(remaining),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(rate.clock().now());
                entry.last = Some((Instant::now(), 0));
                let mut quota = self.quota(0);
                // Refused now: the first request comes back after `wait`, not after a period.
                let refill = wait + self.period() * self.per_minute.saturating_sub(1);
                quota.reset = unix_now() + refill.as_secs_f64().ceil() as u64;
                Err(Refused::Rate(quota))
            }
        }
    }

    /// What is left of `a`'s budget now, from its last request and the time since.
    fn peek_entry(&self, a: &Agent) -> Quota {
        match a.last {
            Some((at, left)) => {
                let back = (at.elapsed().as_nanos() / self.period().as_nanos().max(1)) as u32;
                self.quota(left.saturating_add(back).min(self.per_minute))
            }
            None => self.quota(self.per_minute),
        }
    }

    /// The quota of `agent` without counting a request (for answers that are not counted).
    pub fn peek(&self, agent: &str) -> Quota {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        match agents.get(agent) {
            Some(a) => self.peek_entry(a),
            None => self.quota(self.per_minute),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_down_per_agent() {
        let l = AgentLimits::new(2, 10);
        let a = l.acquire("a").unwrap();
        assert_eq!(a.quota.remaining, 1);
        let b = l.acquire("a").unwrap();
        assert_eq!(b.quota.remaining, 0);
        match l.acquire("a") {
            Err(Refused::Rate(q)) => {
                assert_eq!(q.remaining, 0);
                assert!(q.retry_after() >= 1);
            }
            other => panic!("{:?}", other.map(|p| p.quota)),
        }
        assert_eq!(l.peek("a").remaining, 0);
        // Another agent has its own budget.
        assert!(l.acquire("b").is_ok());
        assert_eq!(l.peek("c").remaining, 2);
    }

    #[test]
    fn concurrency_slots_are_released() {
        let l = AgentLimits::new(100, 1);
        let p = l.acquire("a").unwrap();
        assert!(matches!(
            l.acquire("a"),
            Err(Refused::Concurrency { limit: 1, .. })
        ));
        drop(p);
        assert!(l.acquire("a").is_ok());
    }

    #[test]
    fn a_zero_budget_refuses() {
        let l = AgentLimits::new(0, 1);
        assert!(matches!(l.acquire("a"), Err(Refused::Rate(_))));
        // The refused request gave its slot back.
        let l = AgentLimits::new(0, 1);
        let _ = l.acquire("a");
        assert!(matches!(l.acquire("a"), Err(Refused::Rate(_))));
    }
}
