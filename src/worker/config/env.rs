//! The worker's environment: who it is, where its API is, what it claims, and how it tells the
//! supervisor it is alive, read through the names the supervisor sets.

use std::time::Duration;

use super::ConfigError;
use crate::contract::env as var;

/// How the worker claims its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Only this chat's batches (the supervisor's one worker per channel).
    Chat(String),
    /// Only batches of chats whose agent is this one (on-demand front-door workers).
    Agent(String),
    /// Any batch of the server (a plain pool worker, e.g. against a stock Opengram).
    All,
}

/// Default address of the API when `AGENTD_API_URL` and `AGENTD_SERVER_URL` are not set.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080/api/v1";
/// Default lease asked for on each claim.
pub const DEFAULT_LEASE_MS: u64 = 30_000;
/// Default long-poll of a claim. Long, because the server answers at once when work comes, and
/// every claim of every idle worker counts against the server's write rate limit.
pub const DEFAULT_CLAIM_WAIT_MS: u64 = 30_000;

/// Who the worker is and where its API is, from the environment the supervisor gave it.
#[derive(Debug, Clone)]
pub struct WorkerEnv {
    pub channel: Option<String>,
    /// Sender id of the answers (the graph name when not given).
    pub agent_id: String,
    pub request_id: Option<String>,
    /// Lease owner label for dispatch calls; unique per spawn.
    pub worker_id: String,
    /// Base of the chat and dispatch API, without a trailing slash (`.../api/v1`).
    pub api_url: String,
    pub api_key: Option<String>,
    /// `AGENTD_WORKER_TOKEN`, sent so agentd does not count this worker against its client rate limit.
    pub worker_token: Option<String>,
    pub scope: Scope,
    pub lease: Duration,
    pub claim_wait: Duration,
    pub notify_socket: Option<String>,
    pub watchdog: Option<Duration>,
}

impl WorkerEnv {
    /// Reads the environment through `lookup`; `graph` names the agent when `AGENTD_AGENT_ID` is unset.
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
        graph: &str,
    ) -> Result<WorkerEnv, ConfigError> {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let ms = |name: &'static str, default: u64, min: u64| -> Result<Duration, ConfigError> {
            match get(name) {
                None => Ok(Duration::from_millis(default)),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if n >= min => Ok(Duration::from_millis(n)),
                    _ => Err(ConfigError::Env {
                        var: name,
                        message: format!(
                            "must be a whole number of milliseconds >= {min}, got {v:?}"
                        ),
                    }),
                },
            }
        };
        let api_url = match (get(var::API_URL), get(var::SERVER_URL)) {
            (Some(u), _) => u,
            (None, Some(s)) => var::api_url(&s),
            (None, None) => DEFAULT_API_URL.to_string(),
        }
        .trim_end_matches('/')
        .to_string();
        if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
            return Err(ConfigError::Env {
                var: var::API_URL,
                message: format!("must be an http:// or https:// URL, got {api_url:?}"),
            });
        }
        let scope = match (get(var::CHAT_ID), get(var::CLAIM_AGENT_ID)) {
            (Some(chat), _) => Scope::Chat(chat),
            (None, Some(agent)) => Scope::Agent(agent),
            (None, None) => Scope::All,
        };
        let watchdog = match get(var::WATCHDOG_USEC) {
            None => None,
            Some(v) => match v.parse::<u64>() {
                Ok(0) => None,
                Ok(us) => Some(Duration::from_micros(us)),
                Err(_) => {
                    return Err(ConfigError::Env {
                        var: var::WATCHDOG_USEC,
                        message: format!("must be a whole number of microseconds, got {v:?}"),
                    })
                }
            },
        };
        Ok(WorkerEnv {
            channel: get(var::CHANNEL),
            agent_id: get(var::AGENT_ID)
                .or_else(|| get(var::GRAPH))
                .unwrap_or_else(|| graph.to_string()),
            request_id: get(var::REQUEST_ID),
            worker_id: get(var::WORKER_ID).unwrap_or_else(|| {
                format!(
                    "agentd-worker-{}-{}",
                    std::process::id(),
                    nanoid::nanoid!(8)
                )
            }),
            api_url,
            api_key: get(var::API_KEY),
            worker_token: get(var::WORKER_TOKEN),
            scope,
            lease: ms(var::LEASE_MS, DEFAULT_LEASE_MS, 1000)?,
            claim_wait: ms(var::CLAIM_WAIT_MS, DEFAULT_CLAIM_WAIT_MS, 0)?,
            // Not trimmed: a leading '@' or space matters to nobody, but keep it exact.
            notify_socket: lookup(var::NOTIFY_SOCKET).filter(|v| !v.is_empty()),
            watchdog,
        })
    }
}
#[cfg(test)]
mod tests {
    use super::super::test_env as env;
    use super::*;

    #[test]
    fn environment_defaults_and_scopes() {
        let e = WorkerEnv::from_lookup(&env(&[]), "echo").unwrap();
        assert_eq!(e.api_url, DEFAULT_API_URL);
        assert_eq!(e.agent_id, "echo");
        assert_eq!(e.scope, Scope::All);
        assert!(e.worker_id.starts_with("agentd-worker-"));
        assert_eq!(e.lease, Duration::from_millis(DEFAULT_LEASE_MS));

        let e = WorkerEnv::from_lookup(
            &env(&[
                ("AGENTD_SERVER_URL", "http://127.0.0.1:9/"),
                ("AGENTD_CHAT_ID", "c1"),
                ("AGENTD_AGENT_ID", "faq"),
                ("AGENTD_WORKER_ID", "w1"),
                ("WATCHDOG_USEC", "2000000"),
            ]),
            "x",
        )
        .unwrap();
        assert_eq!(e.api_url, "http://127.0.0.1:9/api/v1");
        assert_eq!(e.scope, Scope::Chat("c1".into()));
        assert_eq!(e.agent_id, "faq");
        assert_eq!(e.worker_id, "w1");
        assert_eq!(e.watchdog, Some(Duration::from_secs(2)));

        let e = WorkerEnv::from_lookup(&env(&[("AGENTD_CLAIM_AGENT_ID", "faq")]), "x").unwrap();
        assert_eq!(e.scope, Scope::Agent("faq".into()));

        let err = WorkerEnv::from_lookup(&env(&[("AGENTD_LEASE_MS", "5")]), "x").unwrap_err();
        assert!(err.to_string().contains("AGENTD_LEASE_MS"));
    }
}
