//! What can go wrong in the supervisor. `crate::http::ten_error` maps it to TEN codes and HTTP
//! statuses.

use thiserror::Error;

/// Why `/start` (or [`crate::supervisor::Supervisor::start`]) refused or failed.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("agentd is shutting down")]
    ShuttingDown,
    #[error("channel_name is empty")]
    BlankChannel,
    #[error("{0}")]
    BadParams(String),
    #[error("timeout {0} is not valid: use 0 or nothing (the default), a positive number of seconds, or -1 (never)")]
    BadTimeout(i64),
    /// A value of the request that may not be used: `key` names it (`request_id`,
    /// `properties.llm.base_url`), `detail` says why and, where there is one, the way to allow it.
    #[error("{key}: {detail}")]
    Refused { key: String, detail: String },
    /// A property of a built-in addon that does not fit the addon's schema once the request's
    /// overrides are merged in.
    #[error("graph {graph:?}, node {node:?}: {problem}")]
    BadProperty {
        graph: String,
        node: String,
        problem: crate::contract::addons::PropertyError,
    },
    #[error("graph {graph:?} does not exist; the graphs are {available:?}")]
    UnknownGraph {
        graph: String,
        /// Every graph of the catalog, so the caller sees what to ask for instead.
        available: Vec<String>,
    },
    #[error("graph {graph:?} has no node named {unknown:?}; its nodes are {nodes:?}")]
    UnknownNodes {
        graph: String,
        unknown: Vec<String>,
        nodes: Vec<String>,
    },
    #[error("graph {graph:?} needs environment variables that are not set and have no default: {vars:?}")]
    MissingEnv { graph: String, vars: Vec<String> },
    #[error("graph {graph:?} runs on agentd's built-in worker, which has no addon {addon:?} (node {node:?}); known addons: {known:?}")]
    UnknownAddon {
        graph: String,
        node: String,
        addon: String,
        known: Vec<String>,
    },
    #[error("channel {0:?} already has a worker")]
    ChannelExists(String),
    #[error("{max} workers are starting or running (WORKERS_MAX)")]
    WorkersLimit { max: usize },
    #[error("graph {graph:?} already has {max} workers (runtime.max_workers)")]
    GraphLimit { graph: String, max: usize },
    #[error("cannot find or create the chat of this channel: {0}")]
    Chat(String),
    #[error("cannot write the per-worker property file {path}: {source}")]
    PropertyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("the worker exited ({status}) before it was ready")]
    Exited { status: String, output: Vec<String> },
    #[error("the worker was not ready within {timeout_ms} ms ({how})")]
    NotReady {
        timeout_ms: u64,
        how: &'static str,
        output: Vec<String>,
    },
    #[error("the worker was stopped before it was ready")]
    StoppedDuringStart,
    /// Several nodes: this node cannot take the channel now (the database is out of reach, or
    /// the node is fenced).
    #[error("{0}")]
    Unavailable(String),
}

/// Why `/ping` or `/stop` failed.
#[derive(Debug, Error)]
pub enum ChannelError {
    #[error("channel_name is empty")]
    Blank,
    #[error("{0}")]
    BadParams(String),
    #[error("channel {0:?} has no worker")]
    NotFound(String),
}
