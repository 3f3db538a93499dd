//! The worker's property file: the one graph the supervisor wrote for it (either TEN layout),
//! with every node's placeholders resolved from the environment.

use std::path::Path;

use serde_json::Value;

use super::ConfigError;
use crate::contract::document::{self, Layout, MAX_DEPTH};
use crate::contract::{addons, placeholder};

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
        // The limit `/start` holds documents to: what it would not write is not read either.
        let depth = document::depth(doc);
        if depth > MAX_DEPTH {
            return Err(invalid(format!(
                "nested {depth} levels deep; at most {MAX_DEPTH} are read"
            )));
        }
        // The supervisor writes exactly one graph; prefer an auto-start one if a hand-written
        // file has several.
        let auto = |g: &Value| g.get("auto_start").and_then(Value::as_bool) == Some(true);
        let mut found: Option<(&Value, Layout)> = None;
        for layout in Layout::ALL {
            for g in layout.graphs(doc).into_iter().flatten() {
                if found.is_none() || auto(g) {
                    found = Some((g, layout));
                }
                if auto(g) {
                    break;
                }
            }
            if found.is_some_and(|(g, _)| auto(g)) {
                break;
            }
        }
        let (graph, layout) = found.ok_or_else(|| {
            invalid("no graph in _ten.predefined_graphs or ten.predefined_graphs".into())
        })?;
        let name = graph
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let nodes = layout
            .nodes(graph)
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
            if !addons::is_known(&addon) {
                return Err(ConfigError::UnknownAddon {
                    graph: name,
                    node: node_name,
                    addon,
                    known: addons::KNOWN.join(", "),
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
#[cfg(test)]
mod tests {
    use super::super::test_env as env;
    use super::*;
    use serde_json::json;

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
    fn deeper_than_the_shared_limit_is_refused() {
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH {
            deep = json!({ "a": deep });
        }
        let doc = json!({"_ten": {"predefined_graphs": [{
            "name": "echo", "auto_start": true,
            "nodes": [{"name": "e", "addon": "echo", "property": {"x": deep}}]
        }]}});
        let err = GraphConfig::from_document(&doc, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("at most {MAX_DEPTH}")), "{err}");
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
}
