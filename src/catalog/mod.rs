//! The graph catalog: `property.json` (both TEN layouts) plus one graph per file in `graphs/`.
//!
//! A [`Catalog`] is an immutable snapshot of [`Graph`]s and [`Team`]s ([`graph`]), read by
//! [`parse`]. [`watch`] keeps the current one behind a `tokio::sync::watch` channel and replaces
//! it when the files change; a broken edit keeps the last good snapshot.

mod graph;
mod parse;
pub mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use thiserror::Error;

use crate::contract::document::PREDEFINED_GRAPHS;
pub use graph::{Graph, Layout, Overridable, Ready, Restart, Runtime, Team, Timeout};
use parse::{parse_graph, parse_teams, read_json};

/// Why a catalog could not be loaded. Each message names the file and, where it applies, the graph.
#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("graph {name:?} is defined twice: in {first} and in {second}")]
    Duplicate {
        name: String,
        first: String,
        second: String,
    },
}

/// An immutable snapshot of every graph and team.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    graphs: Vec<Arc<Graph>>,
    by_name: HashMap<String, usize>,
    teams: Vec<Team>,
    /// `property.json` as read (`Value::Null` when it does not exist); its other top-level keys
    /// are preserved in per-worker copies of its graphs.
    pub property_doc: Value,
}

impl Catalog {
    /// Loads `property_json` (which may be absent) and every `*.json` file in `graphs_dir`
    /// (which may be absent).
    pub fn load(property_json: &Path, graphs_dir: &Path) -> Result<Catalog, CatalogError> {
        let mut cat = Catalog::default();
        let mut origin: HashMap<String, String> = HashMap::new();

        if property_json.exists() {
            let doc = read_json(property_json)?;
            let invalid = |message: String| CatalogError::Invalid {
                path: property_json.to_path_buf(),
                message,
            };
            if !doc.is_object() {
                return Err(invalid("the top level must be an object".into()));
            }
            for layout in Layout::ALL {
                let Some(section) = doc.get(layout.section()) else {
                    continue;
                };
                let Some(list) = section.get(PREDEFINED_GRAPHS) else {
                    continue;
                };
                let list = list.as_array().ok_or_else(|| {
                    invalid(format!(
                        "{}.predefined_graphs must be an array",
                        layout.section()
                    ))
                })?;
                for (i, g) in list.iter().enumerate() {
                    let where_ = format!(
                        "{} ({}.predefined_graphs[{i}])",
                        property_json.display(),
                        layout.section()
                    );
                    let graph = parse_graph(g, layout, property_json, None).map_err(|m| {
                        invalid(format!("{}.predefined_graphs[{i}]: {m}", layout.section()))
                    })?;
                    cat.insert(graph, where_, &mut origin)?;
                }
            }
            if let Some(teams) = doc.get("teams") {
                cat.teams = parse_teams(teams).map_err(invalid)?;
            }
            cat.property_doc = doc;
        }

        if graphs_dir.is_dir() {
            let entries = std::fs::read_dir(graphs_dir).map_err(|source| CatalogError::Read {
                path: graphs_dir.to_path_buf(),
                source,
            })?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
                .collect();
            files.sort();
            for path in files {
                let g = read_json(&path)?;
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_string);
                let layout = if g.get("graph").is_some() {
                    Layout::Current
                } else {
                    Layout::Legacy
                };
                let graph = parse_graph(&g, layout, &path, stem).map_err(|message| {
                    CatalogError::Invalid {
                        path: path.clone(),
                        message,
                    }
                })?;
                let where_ = path.display().to_string();
                cat.insert(graph, where_, &mut origin)?;
            }
        }

        for team in &cat.teams {
            for agent in team.agents.iter().chain(team.summary_agent.iter()) {
                if cat.get(agent).is_none() {
                    return Err(CatalogError::Invalid {
                        path: property_json.to_path_buf(),
                        message: format!(
                            "team {:?} names agent {agent:?}, which is not a graph",
                            team.name
                        ),
                    });
                }
            }
        }
        Ok(cat)
    }

    fn insert(
        &mut self,
        graph: Graph,
        where_: String,
        origin: &mut HashMap<String, String>,
    ) -> Result<(), CatalogError> {
        if let Some(first) = origin.get(&graph.name) {
            return Err(CatalogError::Duplicate {
                name: graph.name,
                first: first.clone(),
                second: where_,
            });
        }
        origin.insert(graph.name.clone(), where_);
        self.by_name.insert(graph.name.clone(), self.graphs.len());
        self.graphs.push(Arc::new(graph));
        Ok(())
    }

    /// Every graph, in file order (`property.json` first, then `graphs/` by file name).
    pub fn graphs(&self) -> &[Arc<Graph>] {
        &self.graphs
    }

    /// The graph called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Graph>> {
        self.by_name.get(name).map(|&i| &self.graphs[i])
    }

    /// Every team declared in `property.json`.
    pub fn teams(&self) -> &[Team] {
        &self.teams
    }

    /// The team called `name`.
    pub fn team(&self, name: &str) -> Option<&Team> {
        self.teams.iter().find(|t| t.name == name)
    }

    /// The property document for one worker of `graph`: only that graph, with `auto_start: true`,
    /// in the layout it was written in. For graphs from `property.json`, every other top-level key
    /// of that file is kept as read.
    pub fn worker_document(&self, graph: &Graph) -> Value {
        let mut g = graph.value.clone();
        if let Some(obj) = g.as_object_mut() {
            obj.insert("auto_start".into(), Value::Bool(true));
        }
        let section = graph.layout.section();
        let mut doc = match &self.property_doc {
            Value::Object(obj) if graph.from_property_json => {
                let mut doc = obj.clone();
                // Drop the other layout's graphs too: the copy holds exactly one graph.
                for other in Layout::ALL {
                    if let Some(Value::Object(sec)) = doc.get_mut(other.section()) {
                        sec.remove(PREDEFINED_GRAPHS);
                    }
                }
                doc
            }
            _ => Map::new(),
        };
        let sec = doc
            .entry(section)
            .or_insert_with(|| Value::Object(Map::new()));
        if !sec.is_object() {
            *sec = Value::Object(Map::new());
        }
        if let Some(sec) = sec.as_object_mut() {
            sec.insert(PREDEFINED_GRAPHS.into(), Value::Array(vec![g]));
        }
        Value::Object(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, name: &str, v: &Value) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
        p
    }

    #[test]
    fn both_layouts_and_graph_files() {
        let d = tempfile::tempdir().unwrap();
        let prop = write(
            d.path(),
            "property.json",
            &json!({
                "_ten": {"log_level": 3, "predefined_graphs": [
                    {"name": "old", "auto_start": false, "nodes": [{"type":"extension","name":"a","addon":"echo"}], "connections": []}
                ]},
                "ten": {"predefined_graphs": [
                    {"name": "new", "auto_start": false, "graph": {"nodes": [{"type":"extension","name":"b","addon":"echo"}], "connections": []}}
                ]}
            }),
        );
        let graphs = d.path().join("graphs");
        std::fs::create_dir(&graphs).unwrap();
        write(
            &graphs,
            "filed.json",
            &json!({"nodes": [{"name": "c", "addon": "echo"}], "runtime": {"command": ["./run.sh", "x"], "timeout": -1}}),
        );
        let cat = Catalog::load(&prop, &graphs).unwrap();
        let names: Vec<_> = cat.graphs().iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["old", "new", "filed"]);
        let filed = cat.get("filed").unwrap();
        assert_eq!(filed.runtime.timeout, Some(Timeout::Never));
        assert_eq!(
            filed.runtime.command.as_ref().unwrap()[0],
            graphs.join("./run.sh").to_string_lossy()
        );
        assert_eq!(cat.get("new").unwrap().node_names(), ["b"]);

        let doc = cat.worker_document(cat.get("old").unwrap());
        assert_eq!(doc["_ten"]["log_level"], 3);
        assert_eq!(
            doc["_ten"]["predefined_graphs"].as_array().unwrap().len(),
            1
        );
        assert_eq!(doc["_ten"]["predefined_graphs"][0]["auto_start"], true);
        assert!(doc["ten"].get("predefined_graphs").is_none());

        let doc = cat.worker_document(filed);
        assert_eq!(doc["_ten"]["predefined_graphs"][0]["name"], Value::Null);
        assert_eq!(doc["_ten"]["predefined_graphs"][0]["auto_start"], true);
    }

    #[test]
    fn duplicate_names_say_where() {
        let d = tempfile::tempdir().unwrap();
        let prop = write(
            d.path(),
            "property.json",
            &json!({"_ten": {"predefined_graphs": [{"name": "x", "nodes": []}]}}),
        );
        let graphs = d.path().join("graphs");
        std::fs::create_dir(&graphs).unwrap();
        write(&graphs, "x.json", &json!({"nodes": []}));
        let err = Catalog::load(&prop, &graphs).unwrap_err().to_string();
        assert!(err.contains("\"x\" is defined twice"), "{err}");
        assert!(err.contains("x.json"), "{err}");
    }

    #[test]
    fn bad_runtime_is_named() {
        let d = tempfile::tempdir().unwrap();
        let graphs = d.path().join("graphs");
        std::fs::create_dir(&graphs).unwrap();
        write(
            &graphs,
            "g.json",
            &json!({"nodes": [], "runtime": {"timeout": -5}}),
        );
        let err = Catalog::load(&d.path().join("none.json"), &graphs)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("graph \"g\"") && err.contains("timeout"),
            "{err}"
        );
    }

    #[test]
    fn overridable_entries_are_read_and_checked_against_the_nodes() {
        let d = tempfile::tempdir().unwrap();
        let graphs = d.path().join("graphs");
        std::fs::create_dir(&graphs).unwrap();
        let node = json!([{"name": "llm", "addon": "openai_chat"}]);
        write(
            &graphs,
            "g.json",
            &json!({"nodes": node, "runtime": {"overridable": ["llm.model", "llm.params.*"]}}),
        );
        let cat = Catalog::load(&d.path().join("none.json"), &graphs).unwrap();
        let list = cat.get("g").unwrap().runtime.overridable.clone().unwrap();
        let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["llm.model", "llm.params.*"]);

        for (bad, says) in [
            (json!(["lm.model"]), "names no node"),
            (json!(["llm"]), "is not"),
            (json!(["llm..x"]), "is not"),
            (json!(["llm.*.x"]), "is not"),
            (json!("llm.model"), "must be an array"),
        ] {
            write(
                &graphs,
                "g.json",
                &json!({"nodes": node, "runtime": {"overridable": bad}}),
            );
            let err = Catalog::load(&d.path().join("none.json"), &graphs)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
