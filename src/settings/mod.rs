//! Everything agentd is configured with: the [`Settings`] table and its parts. They are read
//! from the environment (after `.env` is loaded by `main`) by [`read`]; every variable is
//! documented in `.env.example`.

mod command;
mod read;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

pub use command::split_command;
pub use read::{ProcessEnv, Source};

/// A setting that could not be used.
#[derive(Debug, Error)]
#[error("{var}={value:?} is not valid: expected {expected}")]
pub struct SettingsError {
    pub var: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// How the dispatch queue turns user inputs into batches (Opengram's `server.dispatch.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchMode {
    Immediate,
    Sequential,
    BatchedSequential,
}

impl DispatchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DispatchMode::Immediate => "immediate",
            DispatchMode::Sequential => "sequential",
            DispatchMode::BatchedSequential => "batched_sequential",
        }
    }
}

/// How the supervisor routes report errors (`SUPERVISOR_STATUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupervisorStatus {
    /// An HTTP status that says what happened (404, 409, 429...), TEN's `code` in the body.
    Honest,
    /// HTTP 200 for every answer with TEN's `code` in the body, as TEN's server does: its
    /// frontends (axios) throw on any other status before they read `code`.
    Ten,
}

/// Whether workers get a cgroup of their own (`WORKER_CGROUPS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// A cgroup per worker where the machine allows it, else the process group.
    Auto,
    /// The process group only.
    Off,
}

/// Dispatch queue settings; defaults are the Opengram reference's.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub mode: DispatchMode,
    pub batch_debounce_ms: u64,
    pub typing_grace_ms: u64,
    pub max_batch_wait_ms: u64,
    pub lease_ms: u64,
    pub claim_wait_ms: u64,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub max_attempts: u32,
    pub claim_many_limit: u32,
    pub heartbeat_interval_ms: u64,
}

/// Everything agentd is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    // Server
    pub host: IpAddr,
    pub port: u16,
    pub api_key: Option<String>,
    pub cors_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub http_workers: usize,
    /// `GET /metrics` answers a loopback peer without the key (for a scraper on the same host).
    pub metrics_public_loopback: bool,
    /// Longest a client may take to send a request's head (actix answers 408 and closes).
    pub client_request_timeout: Duration,
    /// Longest a closing connection may take to shut down before it is dropped.
    pub client_disconnect_timeout: Duration,
    /// How long an idle keep-alive connection stays open; zero turns keep-alive off.
    pub keep_alive: Duration,
    /// Longest a client may take to send a request's body (after its head).
    pub body_timeout: Duration,
    /// Connections served at once, in total (split across the HTTP workers).
    pub http_max_connections: usize,
    /// Connections the kernel queues while agentd accepts no more.
    pub http_backlog: u32,
    pub supervisor_status: SupervisorStatus,
    /// Agora credentials for `POST /token/generate`; `None` when `AGORA_APP_ID` is unset.
    pub agora: Option<crate::agora::Credentials>,

    // Files
    pub property_json: PathBuf,
    pub graphs_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Where the store keeps its tables (`DATABASE_URL`; SQLite in `DATA_DIR` by default).
    pub database: Database,
    pub log_path: PathBuf,
    pub log_stdout: bool,
    pub log_max_bytes: u64,
    pub log_max_files: u32,
    pub keep_property_files: bool,

    // Supervisor
    pub workers_max: usize,
    pub worker_quit_timeout_secs: u64,
    pub worker_stop_grace: Duration,
    pub worker_start_timeout: Duration,
    pub worker_settle: Duration,
    /// Program and arguments for graphs without `runtime.command`; `None` = agentd's own `worker`.
    pub worker_command: Option<Vec<String>>,
    pub worker_cgroups: CgroupMode,
    /// How often each worker's memory and CPU are sampled (and `runtime.memory_max` checked
    /// where the kernel cannot enforce it).
    pub worker_sample_interval: Duration,

    // Chat and dispatch API
    pub dispatch: DispatchSettings,
    pub stream_timeout_secs: u64,
    pub write_rate_limit_max: u32,
    pub write_rate_limit_window_ms: u64,
    /// With a key set, `/api/v1` reads need it too (the default); false: public, as in Opengram.
    pub reads_require_key: bool,
    pub trust_proxy_headers: bool,
    pub idempotency_ttl_secs: u64,
    /// Live events buffered per subscriber (event streams, the conversation relay) before a
    /// slow one falls behind (lags).
    pub event_bus_capacity: usize,
    /// How long events (the API's and the conversations') are kept; `None`: for ever.
    pub events_retention: Option<Duration>,
    /// How long finished batches and their inputs are kept; `None`: for ever.
    pub dispatch_retention: Option<Duration>,
    /// How often the pruner looks for rows past their retention (and expired idempotency keys).
    pub retention_sweep: Duration,

    // Front doors
    pub agent_rate_limit_per_minute: u32,
    pub agent_max_concurrent: u32,
    pub chat_reply_timeout: Duration,
    /// Interval of `event: ping` heartbeats on the conversations front door's streams.
    pub sse_ping_interval: Duration,

    // Limits
    /// Event streams one client (IP) may hold open at once, across every family.
    pub sse_max_per_client: usize,
    /// Event streams open at once, in total.
    pub sse_max_total: usize,

    // Several nodes (PostgreSQL only)
    /// This node's id among the nodes sharing the database (`NODE_ID`; random per process).
    pub node_id: String,
    /// The URL other nodes reach this node at (`NODE_ADDRESS`); `None`: the bound address.
    pub node_address: Option<String>,
    /// How long a node's claim of a channel lasts without renewal (`NODE_LEASE_MS`).
    pub node_lease: Duration,

    /// A secret made at every start and given to agentd's own workers (`AGENTD_WORKER_TOKEN`):
    /// their writes are not counted against the client write rate limit.
    pub worker_token: WorkerToken,
}

/// The store's database engine and where it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file (the default: `DATA_DIR/agentd.db`).
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its `postgres://` URL (which may hold a password).
    Postgres(String),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            // The URL may carry a password: only where it points.
            Database::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&url.rsplit_once('@').map_or(url.as_str(), |(_, at)| at))
                .finish(),
        }
    }
}

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone)]
pub struct WorkerToken(String);

impl WorkerToken {
    fn generate() -> WorkerToken {
        WorkerToken(crate::ids::secret())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for WorkerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerToken(..)")
    }
}

impl Settings {
    /// Refuses configurations that are unsafe to serve: a non-loopback address without a key.
    pub fn check_exposure(&self) -> Result<(), SettingsError> {
        if !self.host.is_loopback() && self.api_key.is_none() {
            return Err(SettingsError {
                var: "SERVER_HOST",
                value: self.host.to_string(),
                expected: "a loopback address (127.0.0.1 or ::1) unless AGENTD_API_KEY is set",
            });
        }
        Ok(())
    }
}
