//! The environment of a worker process: the name of every variable agentd sets for it or that
//! the worker reads, and which of them a caller's extra environment may not override.

/// The channel the worker serves.
pub const CHANNEL: &str = "AGENTD_CHANNEL";
/// The graph it runs.
pub const GRAPH: &str = "AGENTD_GRAPH";
/// The sender id of its answers (agentd sets the graph name).
pub const AGENT_ID: &str = "AGENTD_AGENT_ID";
/// The `request_id` of the `/start` that started it, when there was one.
pub const REQUEST_ID: &str = "AGENTD_REQUEST_ID";
/// Unique per spawned process: the lease owner of its dispatch claims.
pub const WORKER_ID: &str = "AGENTD_WORKER_ID";
/// agentd's own address, `http://host:port`.
pub const SERVER_URL: &str = "AGENTD_SERVER_URL";
/// The chat and dispatch API: [`SERVER_URL`] plus [`API_PATH`].
pub const API_URL: &str = "AGENTD_API_URL";
/// The API key, when agentd has one.
pub const API_KEY: &str = "AGENTD_API_KEY";
/// The secret that exempts agentd's own workers from the client write rate limit.
pub const WORKER_TOKEN: &str = "AGENTD_WORKER_TOKEN";
/// The one chat whose batches the worker claims.
pub const CHAT_ID: &str = "AGENTD_CHAT_ID";
/// The agent whose chats' batches the worker claims (on-demand front-door workers); given as
/// extra environment, so not one of [`OWN`].
pub const CLAIM_AGENT_ID: &str = "AGENTD_CLAIM_AGENT_ID";
/// Lease asked for on each claim, in milliseconds (passed through, never set by agentd).
pub const LEASE_MS: &str = "AGENTD_LEASE_MS";
/// Long-poll of each claim, in milliseconds (passed through, never set by agentd).
pub const CLAIM_WAIT_MS: &str = "AGENTD_CLAIM_WAIT_MS";
/// Where the worker sends its notify messages (see [`super::notify`]).
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The watchdog interval in microseconds, when the graph has one.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// `1` for a prewarmed worker: it has no channel yet, and waits on stdin for the one line that
/// gives it one (see [`super::prewarm`]).
pub const PREWARM: &str = "AGENTD_PREWARM";
/// systemd's companion of [`WATCHDOG_USEC`]; never given to a worker, so that one inherited from
/// agentd's own environment cannot point the worker's watchdog at agentd.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// The path of the chat and dispatch API under [`SERVER_URL`].
pub const API_PATH: &str = "/api/v1";

/// Variables agentd sets (or removes) for every worker: they win over a caller's extra
/// environment.
pub const OWN: &[&str] = &[
    CHANNEL,
    GRAPH,
    AGENT_ID,
    REQUEST_ID,
    WORKER_ID,
    SERVER_URL,
    API_URL,
    API_KEY,
    WORKER_TOKEN,
    CHAT_ID,
    NOTIFY_SOCKET,
    WATCHDOG_USEC,
    PREWARM,
];

/// True for a variable that only agentd may set.
pub fn is_own(name: &str) -> bool {
    OWN.contains(&name)
}

/// [`API_URL`] for a given [`SERVER_URL`].
pub fn api_url(server_url: &str) -> String {
    format!("{}{API_PATH}", server_url.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_url_joins_once() {
        assert_eq!(api_url("http://127.0.0.1:9"), "http://127.0.0.1:9/api/v1");
        assert_eq!(api_url("http://127.0.0.1:9/"), "http://127.0.0.1:9/api/v1");
    }

    #[test]
    fn extra_variables_are_not_own() {
        assert!(is_own(CHAT_ID) && is_own(NOTIFY_SOCKET));
        assert!(!is_own(CLAIM_AGENT_ID) && !is_own(LEASE_MS) && !is_own("PATH"));
    }
}
