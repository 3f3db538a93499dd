//! What a worker is told: its property file (one graph, either TEN layout) and its environment.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::placeholder;

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

/// One node of the graph, with its placeholders resolved.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub addon: String,
    pub property: Value,
}

/// The graph this worker runs.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    pub name: String,
    pub nodes: Vec<Node>,
}

impl GraphConfig {
    /// Loads the property file at `path`, resolving placeholders with `lookup`.
    pub fn load(
        path: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GraphConfig, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let doc: Value = serde_json::from_str(&text).map_err(|source| ConfigError::Json {
            path: shown.clone(),
            source,
        })?;
        Self::from_document(&doc, lookup).map_err(|e| match e {
            ConfigError::Invalid { message, .. } => ConfigError::Invalid {
                path: shown,
                message,
            },
            e => e,
        })
    }

    /// Reads the graph out of a property document (`_ten` or `ten` layout).
    pub fn from_document(
        doc: &Value,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GraphConfig, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: String::new(),
            message,
        };
        // The supervisor writes exactly one graph; prefer an auto-start one if a hand-written
        // file has several.
        let mut found: Option<(&Value, &'static str)> = None;
        for section in ["_ten", "ten"] {
            let Some(list) = doc
                .get(section)
                .and_then(|s| s.get("predefined_graphs"))
                .and_then(Value::as_array)
            else {
                continue;
            };
            for g in list {
                let auto = g.get("auto_start").and_then(Value::as_bool) == Some(true);
                if found.is_none() || auto {
                    found = Some((g, section));
                }
                if auto {
                    break;
                }
            }
            if found
                .is_some_and(|(g, _)| g.get("auto_start").and_then(Value::as_bool) == Some(true))
            {
                break;
            }
        }
        let (graph, section) = found.ok_or_else(|| {
            invalid("no graph in _ten.predefined_graphs or ten.predefined_graphs".into())
        })?;
        let name = graph
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let nodes = match section {
            "_ten" => graph.get("nodes"),
            _ => graph.get("graph").and_then(|g| g.get("nodes")),
        }
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(format!("graph {name:?} has no nodes array")))?;

        let mut out = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            if n.get("type").and_then(Value::as_str).unwrap_or("extension") != "extension" {
                continue;
            }
            let node_name = n
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("nodes[{i}]"));
            let addon = n
                .get("addon")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !super::KNOWN_ADDONS.contains(&addon.as_str()) {
                return Err(ConfigError::UnknownAddon {
                    graph: name,
                    node: node_name,
                    addon,
                    known: super::KNOWN_ADDONS.join(", "),
                });
            }
            let mut property = n
                .get("property")
                .cloned()
                .unwrap_or(Value::Object(Default::default()));
            placeholder::resolve(
                &mut property,
                &format!("node {node_name:?} property"),
                lookup,
            )
            .map_err(|source| ConfigError::Placeholder {
                graph: name.clone(),
                source,
            })?;
            out.push(Node {
                name: node_name,
                addon,
                property,
            });
        }
        if out.is_empty() {
            return Err(invalid(format!("graph {name:?} has no extension node")));
        }
        Ok(GraphConfig { name, nodes: out })
    }
}

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
        let ms = |var: &'static str, default: u64, min: u64| -> Result<Duration, ConfigError> {
            match get(var) {
                None => Ok(Duration::from_millis(default)),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if n >= min => Ok(Duration::from_millis(n)),
                    _ => Err(ConfigError::Env {
                        var,
                        message: format!(
                            "must be a whole number of milliseconds >= {min}, got {v:?}"
                        ),
                    }),
                },
            }
        };
        let api_url = match (get("AGENTD_API_URL"), get("AGENTD_SERVER_URL")) {
            (Some(u), _) => u,
            (None, Some(s)) => format!("{}/api/v1", s.trim_end_matches('/')),
            (None, None) => DEFAULT_API_URL.to_string(),
        }
        .trim_end_matches('/')
        .to_string();
        if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
            return Err(ConfigError::Env {
                var: "AGENTD_API_URL",
                message: format!("must be an http:// or https:// URL, got {api_url:?}"),
            });
        }
        let scope = match (get("AGENTD_CHAT_ID"), get("AGENTD_CLAIM_AGENT_ID")) {
            (Some(chat), _) => Scope::Chat(chat),
            (None, Some(agent)) => Scope::Agent(agent),
            (None, None) => Scope::All,
        };
        let watchdog = match get("WATCHDOG_USEC") {
            None => None,
            Some(v) => match v.parse::<u64>() {
                Ok(0) => None,
                Ok(us) => Some(Duration::from_micros(us)),
                Err(_) => {
                    return Err(ConfigError::Env {
                        var: "WATCHDOG_USEC",
                        message: format!("must be a whole number of microseconds, got {v:?}"),
                    })
                }
            },
        };
        Ok(WorkerEnv {
            channel: get("AGENTD_CHANNEL"),
            agent_id: get("AGENTD_AGENT_ID")
                .or_else(|| get("AGENTD_GRAPH"))
                .unwrap_or_else(|| graph.to_string()),
            request_id: get("AGENTD_REQUEST_ID"),
            worker_id: get("AGENTD_WORKER_ID").unwrap_or_else(|| {
                format!(
                    "agentd-worker-{}-{}",
                    std::process::id(),
                    nanoid::nanoid!(8)
                )
            }),
            api_url,
            api_key: get("AGENTD_API_KEY"),
            worker_token: get("AGENTD_WORKER_TOKEN"),
            scope,
            lease: ms("AGENTD_LEASE_MS", DEFAULT_LEASE_MS, 1000)?,
            claim_wait: ms("AGENTD_CLAIM_WAIT_MS", DEFAULT_CLAIM_WAIT_MS, 0)?,
            // Not trimmed: a leading '@' or space matters to nobody, but keep it exact.
            notify_socket: lookup("NOTIFY_SOCKET").filter(|v| !v.is_empty()),
            watchdog,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn legacy_layout() {
        let doc = json!({"_ten": {"predefined_graphs": [{
            "name": "echo", "auto_start": true,
            "nodes": [{"type": "extension", "name": "e", "addon": "echo", "property": {"prefix": "> "}}],
            "connections": []
        }]}});
        let g = GraphConfig::from_document(&doc, &env(&[])).unwrap();
        assert_eq!(g.name, "echo");
        assert_eq!(g.nodes.len(), 1);
        assert_eq!(g.nodes[0].addon, "echo");
        assert_eq!(g.nodes[0].property["prefix"], "> ");
    }

    #[test]
    fn current_layout_resolves_placeholders() {
        let doc = json!({"ten": {"predefined_graphs": [{
            "name": "assistant", "auto_start": true,
            "graph": {"nodes": [{"type": "extension", "name": "llm", "addon": "openai_chat", "property": {
                "api_key": "${env:OPENAI_API_KEY}",
                "base_url": "${env:OPENAI_BASE_URL|https://api.openai.com/v1}"
            }}]}
        }]}});
        let g = GraphConfig::from_document(&doc, &env(&[("OPENAI_API_KEY", "sk-1")])).unwrap();
        assert_eq!(g.nodes[0].property["api_key"], "sk-1");
        assert_eq!(g.nodes[0].property["base_url"], "https://api.openai.com/v1");

        let err = GraphConfig::from_document(&doc, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("OPENAI_API_KEY"), "{err}");
        assert!(err.contains("assistant"), "{err}");
    }

    #[test]
    fn unknown_addon_is_named() {
        let doc = json!({"_ten": {"predefined_graphs": [{
            "name": "g", "auto_start": true,
            "nodes": [{"type": "extension", "name": "rtc", "addon": "agora_rtc"}]
        }]}});
        let err = GraphConfig::from_document(&doc, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"g\"") && err.contains("\"rtc\"") && err.contains("agora_rtc"),
            "{err}"
        );
    }

    #[test]
    fn no_graph_is_an_error() {
        let err = GraphConfig::from_document(&json!({"ten": {}}), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("no graph"));
    }

    #[test]
    fn load_from_file_names_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("p.json");
        std::fs::write(&p, "{not json").unwrap();
        let err = GraphConfig::load(&p, &env(&[])).unwrap_err().to_string();
        assert!(err.contains("p.json"), "{err}");
    }

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
