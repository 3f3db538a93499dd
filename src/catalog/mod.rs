//! The graph catalog: `property.json` (both TEN layouts) plus one graph per file in `graphs/`.
//!
//! A [`Catalog`] is an immutable snapshot. [`watch`] keeps the current one behind a
//! `tokio::sync::watch` channel and replaces it when the files change; a broken edit keeps the
//! last good snapshot.

pub mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use thiserror::Error;

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

/// Which TEN layout a graph was written in; the per-worker copy keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Old layout: `_ten.predefined_graphs[]` with `nodes`/`connections` on the graph.
    Legacy,
    /// New layout: `ten.predefined_graphs[]` with `graph.{nodes,connections}`.
    Current,
}

impl Layout {
    /// The top-level section name of this layout.
    pub fn section(self) -> &'static str {
        match self {
            Layout::Legacy => "_ten",
            Layout::Current => "ten",
        }
    }
}

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
        nodes_of(&self.value, self.layout)
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
            for layout in [Layout::Legacy, Layout::Current] {
                let Some(section) = doc.get(layout.section()) else {
                    continue;
                };
                let Some(list) = section.get("predefined_graphs") else {
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
                for other in ["_ten", "ten"] {
                    if let Some(Value::Object(sec)) = doc.get_mut(other) {
                        sec.remove("predefined_graphs");
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
            sec.insert("predefined_graphs".into(), Value::Array(vec![g]));
        }
        Value::Object(doc)
    }
}

fn read_json(path: &Path) -> Result<Value, CatalogError> {
    let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| CatalogError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn nodes_of(g: &Value, layout: Layout) -> Option<&Vec<Value>> {
    match layout {
        Layout::Legacy => g.get("nodes"),
        Layout::Current => g.get("graph").and_then(|x| x.get("nodes")),
    }
    .and_then(Value::as_array)
}

/// Parses one graph object. `default_name` is used when the object has no `name` (graph files).
fn parse_graph(
    g: &Value,
    layout: Layout,
    source: &Path,
    default_name: Option<String>,
) -> Result<Graph, String> {
    let obj = g.as_object().ok_or("a graph must be an object")?;
    let from_property_json = default_name.is_none();
    let name = match obj.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(_) => return Err("\"name\" must be a non-empty string".into()),
        None => default_name.ok_or("a graph needs a \"name\"")?,
    };
    let ctx = |m: String| format!("graph {name:?}: {m}");
    let nodes = nodes_of(g, layout).ok_or_else(|| {
        ctx(match layout {
            Layout::Legacy => "needs a \"nodes\" array".into(),
            Layout::Current => "needs a \"graph\" object with a \"nodes\" array".into(),
        })
    })?;
    let mut seen = std::collections::HashSet::new();
    for (i, n) in nodes.iter().enumerate() {
        let nname = n
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ctx(format!("nodes[{i}] needs a non-empty \"name\"")))?;
        if !seen.insert(nname.to_string()) {
            return Err(ctx(format!("node name {nname:?} is used twice")));
        }
        if let Some(p) = n.get("property") {
            if !p.is_object() {
                return Err(ctx(format!(
                    "node {nname:?}: \"property\" must be an object"
                )));
            }
        }
    }
    let opt_str = |k: &str| -> Result<Option<String>, String> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ctx(format!("{k:?} must be a string"))),
        }
    };
    let auto_start = match obj.get("auto_start") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ctx("\"auto_start\" must be true or false".into())),
    };
    let base_dir = source.parent().unwrap_or(Path::new("/"));
    let runtime = match obj.get("runtime") {
        None | Some(Value::Null) => Runtime::default(),
        Some(rt) => parse_runtime(rt, base_dir).map_err(|m| ctx(format!("runtime: {m}")))?,
    };
    Ok(Graph {
        display_name: opt_str("display_name")?,
        description: opt_str("description")?,
        name,
        source: source.to_path_buf(),
        layout,
        from_property_json,
        value: g.clone(),
        auto_start,
        runtime,
    })
}

fn parse_runtime(rt: &Value, base_dir: &Path) -> Result<Runtime, String> {
    let obj = rt.as_object().ok_or("must be an object")?;
    let mut out = Runtime::default();
    for (k, v) in obj {
        let uint = || {
            v.as_u64()
                .ok_or(format!("{k:?} must be a whole number >= 0"))
        };
        match k.as_str() {
            "command" => {
                let words: Vec<String> = match v {
                    Value::String(s) => crate::settings::split_command(s)
                        .ok_or("\"command\" must name a program")?,
                    Value::Array(a) => a
                        .iter()
                        .map(|w| w.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .filter(|w| !w.is_empty() && !w[0].is_empty())
                        .ok_or("\"command\" must be a non-empty array of strings")?,
                    _ => return Err("\"command\" must be a string or an array of strings".into()),
                };
                out.command = Some(
                    words
                        .into_iter()
                        .map(|w| resolve_word(&w, base_dir))
                        .collect(),
                );
            }
            "ready" => {
                out.ready = Some(match v.as_str() {
                    Some("notify") => Ready::Notify,
                    Some("settle") => Ready::Settle,
                    _ => return Err("\"ready\" must be \"notify\" or \"settle\"".into()),
                })
            }
            "settle_ms" => out.settle_ms = Some(uint()?),
            "restart" => {
                out.restart = match v.as_str() {
                    Some("never") => Restart::Never,
                    Some("on-failure") => Restart::OnFailure,
                    _ => return Err("\"restart\" must be \"never\" or \"on-failure\"".into()),
                }
            }
            "max_restarts" => {
                out.max_restarts =
                    u32::try_from(uint()?).map_err(|_| "\"max_restarts\" is too large")?
            }
            "timeout" => {
                out.timeout = Some(match v.as_i64() {
                    Some(-1) => Timeout::Never,
                    Some(n) if n > 0 => Timeout::Seconds(n as u64),
                    _ => {
                        return Err(
                            "\"timeout\" must be a positive number of seconds or -1 (never)".into(),
                        )
                    }
                })
            }
            "max_workers" => {
                let n = uint()?;
                if n == 0 {
                    return Err("\"max_workers\" must be >= 1".into());
                }
                out.max_workers = Some(n as usize);
            }
            "watchdog_ms" => {
                let n = uint()?;
                if n == 0 {
                    return Err("\"watchdog_ms\" must be >= 1".into());
                }
                out.watchdog_ms = Some(n);
            }
            "on_demand" => {
                out.on_demand = v.as_bool().ok_or("\"on_demand\" must be true or false")?
            }
            other => return Err(format!("unknown key {other:?}")),
        }
    }
    Ok(out)
}

/// Words that start with `./` or `../` are paths relative to the graph's file.
fn resolve_word(word: &str, base_dir: &Path) -> String {
    if word.starts_with("./") || word.starts_with("../") {
        base_dir.join(word).to_string_lossy().into_owned()
    } else {
        word.to_string()
    }
}

fn parse_teams(v: &Value) -> Result<Vec<Team>, String> {
    let list = v.as_array().ok_or("\"teams\" must be an array")?;
    let mut out: Vec<Team> = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .ok_or(format!("teams[{i}] needs a non-empty \"name\""))?
            .to_string();
        if out.iter().any(|o| o.name == name) {
            return Err(format!("team {name:?} is defined twice"));
        }
        let agents: Vec<String> = t
            .get("agents")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect())
            .filter(|a: &Vec<String>| !a.is_empty())
            .ok_or(format!(
                "team {name:?} needs a non-empty \"agents\" array of graph names"
            ))?;
        let summary_agent = match t.get("summary_agent") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(format!("team {name:?}: \"summary_agent\" must be a string")),
        };
        let description = t
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string);
        out.push(Team {
            name,
            agents,
            summary_agent,
            description,
        });
    }
    Ok(out)
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
}
