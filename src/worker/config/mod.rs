//! What a worker is told: its property file ([`graph`]: one graph, either TEN layout) and its
//! environment ([`env`]).

mod env;
mod graph;

pub use env::{Scope, WorkerEnv, DEFAULT_API_URL, DEFAULT_CLAIM_WAIT_MS, DEFAULT_LEASE_MS};
pub use graph::{GraphConfig, Node};

use crate::contract::placeholder;

/// Why the worker's configuration is unusable. Each message names the file, node or variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read property file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("property file {path} is not valid JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("property file {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("graph {graph:?}: {source}")]
    Placeholder {
        graph: String,
        source: placeholder::Missing,
    },
    #[error("graph {graph:?}, node {node:?}: addon {addon:?} is not one the built-in worker runs (known: {known})")]
    UnknownAddon {
        graph: String,
        node: String,
        addon: String,
        known: String,
    },
    #[error("{var}: {message}")]
    Env { var: &'static str, message: String },
}

#[cfg(test)]
pub(crate) fn test_env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}
