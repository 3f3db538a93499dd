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
    /// How many workers of this graph agentd keeps started and waiting for a channel (see
    /// `supervisor::prewarm`); 0: none.
    pub prewarm: u32,
    /// The property keys a `/start` request may set; `None`: every key that is not protected.
    pub overridable: Option<Vec<Overridable>>,
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
            prewarm: 0,
            overridable: None,
        }
    }
}

/// One entry of `runtime.overridable`: `node.key.key`, or `node.key.*` for the key and anything
/// below it (`node.*`: the whole of the node's `property`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overridable {
    pub node: String,
    /// Keys into the node's `property`, before any `*`.
    pub keys: Vec<String>,
    /// Ends with `*`.
    pub below: bool,
}

impl Overridable {
    /// Reads one entry; `None` unless it is a node name and at least one more segment, with no
    /// empty segment and `*` only at the end.
    pub fn parse(entry: &str) -> Option<Overridable> {
        let mut segs: Vec<&str> = entry.split('.').collect();
        let below = segs.last() == Some(&"*");
        if below {
            segs.pop();
        }
        if segs.iter().any(|s| s.is_empty() || *s == "*") || segs.len() + usize::from(below) < 2 {
            return None;
        }
        Some(Overridable {
            node: segs[0].to_string(),
            keys: segs[1..].iter().map(|s| s.to_string()).collect(),
            below,
        })
    }

    /// When this entry lets a request set `keys` of `node`'s property: how many of those keys
    /// it names outright (the rest fall under its `*`).
    pub fn covers(&self, node: &str, keys: &[String]) -> Option<usize> {
        let fits = node == self.node
            && if self.below {
                keys.starts_with(&self.keys)
            } else {
                keys == self.keys.as_slice()
            };
        fits.then_some(self.keys.len())
    }
}

impl std::fmt::Display for Overridable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.node)?;
        for k in &self.keys {
            write!(f, ".{k}")?;
        }
        if self.below {
            f.write_str(".*")?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn overridable_entries_cover_their_keys() {
        let model = Overridable::parse("llm.model").unwrap();
        assert_eq!(model.covers("llm", &keys(&["model"])), Some(1));
        assert_eq!(model.covers("llm", &keys(&["model", "x"])), None);
        assert_eq!(model.covers("tts", &keys(&["model"])), None);
        let params = Overridable::parse("llm.params.*").unwrap();
        assert_eq!(params.covers("llm", &keys(&["params"])), Some(1));
        assert_eq!(params.covers("llm", &keys(&["params", "a", "b"])), Some(1));
        assert_eq!(params.covers("llm", &keys(&["model"])), None);
        let node = Overridable::parse("tts.*").unwrap();
        assert_eq!(node.covers("tts", &keys(&["voice"])), Some(0));
        for bad in ["tts", "*", "a.", ".a", "a..b", "a.*.b"] {
            assert!(Overridable::parse(bad).is_none(), "{bad}");
        }
    }
}
