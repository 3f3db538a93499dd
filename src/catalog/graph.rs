//! What one graph is, as loaded: its nodes (in either TEN layout), the `runtime` object that says
//! how its workers run, and the teams that group graphs.

use std::path::PathBuf;

use serde_json::Value;

pub use crate::contract::document::Layout;

/// How the supervisor decides that a started worker is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Wait for `READY=1` on `NOTIFY_SOCKET` (systemd's notify protocol).
    Notify,
    /// Count the worker as up once it has stayed alive for the settle time.
    Settle,
}

/// What to do when a worker exits on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Never,
    OnFailure,
}

/// Inactivity timeout of a graph's workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    Never,
    Seconds(u64),
}

/// The optional `runtime` object of a graph: how its workers run.
#[derive(Debug, Clone, PartialEq)]
pub struct Runtime {
    /// Program and arguments; `None` means `WORKER_COMMAND`, or agentd's own `worker`.
    pub command: Option<Vec<String>>,
    /// `None` means: notify for the built-in worker, settle for any other command.
    pub ready: Option<Ready>,
    pub settle_ms: Option<u64>,
    pub restart: Restart,
    pub max_restarts: u32,
    pub timeout: Option<Timeout>,
    pub max_workers: Option<usize>,
    pub watchdog_ms: Option<u64>,
    /// Most memory (bytes) a worker and everything it started may use; over it, the worker is
    /// killed and handled by `restart`.
    pub memory_max: Option<u64>,
    /// Most processes (and threads) a worker's cgroup may hold.
    pub pids_max: Option<u64>,
    /// Whether the chat front doors may start this graph's worker on demand.
    pub on_demand: bool,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            command: None,
            ready: None,
            settle_ms: None,
            restart: Restart::OnFailure,
            max_restarts: 3,
            timeout: None,
            max_workers: None,
            watchdog_ms: None,
            memory_max: None,
            pids_max: None,
            on_demand: true,
        }
    }
}

/// One graph, as loaded.
#[derive(Debug, Clone)]
pub struct Graph {
    pub name: String,
    /// The file the graph was read from.
    pub source: PathBuf,
    pub layout: Layout,
    /// True for graphs of `property.json`, false for files in `graphs/`.
    pub from_property_json: bool,
    /// The graph object exactly as written (TEN fields and `runtime`).
    pub value: Value,
    pub auto_start: bool,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub runtime: Runtime,
}

impl Graph {
    /// The graph's nodes (under `graph.nodes` or `nodes`, by layout).
    pub fn nodes(&self) -> &[Value] {
        self.layout
            .nodes(&self.value)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Names of the graph's nodes, in order.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes()
            .iter()
            .filter_map(|n| n.get("name").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
    }

    /// `(node name, addon)` for every node.
    pub fn addons(&self) -> Vec<(String, String)> {
        self.nodes()
            .iter()
            .map(|n| {
                let s = |k: &str| n.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                (s("name"), s("addon"))
            })
            .collect()
    }
}

/// A named list of agents that answer together (the chat API's teams).
#[derive(Debug, Clone, PartialEq)]
pub struct Team {
    pub name: String,
    pub agents: Vec<String>,
    /// The agent that writes the summary; `None` means agentd summarises on its own.
    pub summary_agent: Option<String>,
    pub description: Option<String>,
}
