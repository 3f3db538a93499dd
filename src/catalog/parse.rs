//! Reading graphs, their `runtime` objects and teams out of JSON, with errors that say where.

use std::path::Path;

use serde_json::Value;

use super::graph::{Graph, Layout, Overridable, Ready, Restart, Runtime, Team, Timeout};
use super::CatalogError;

pub(super) fn read_json(path: &Path) -> Result<Value, CatalogError> {
    let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| CatalogError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses one graph object. `default_name` is used when the object has no `name` (graph files).
pub(super) fn parse_graph(
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
    let nodes = layout.nodes(g).ok_or_else(|| {
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
    // A typo in a node name would silently open nothing (or nothing the author meant).
    if let Some(o) = runtime
        .overridable
        .iter()
        .flatten()
        .find(|o| !seen.contains(&o.node))
    {
        return Err(ctx(format!(
            "runtime: overridable entry \"{o}\" names no node of the graph"
        )));
    }
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

/// Most prewarmed workers one graph may ask for.
pub const MAX_PREWARM: u64 = 64;

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
            "memory_max" => out.memory_max = Some(parse_bytes(v)?),
            "pids_max" => {
                let n = uint()?;
                if n == 0 {
                    return Err("\"pids_max\" must be >= 1".into());
                }
                out.pids_max = Some(n);
            }
            "prewarm" => {
                let n = uint()?;
                if n > MAX_PREWARM {
                    return Err(format!("\"prewarm\" must be at most {MAX_PREWARM}"));
                }
                out.prewarm = n as u32;
            }
            "on_demand" => {
                out.on_demand = v.as_bool().ok_or("\"on_demand\" must be true or false")?
            }
            "overridable" => {
                let wrong = || {
                    "\"overridable\" must be an array of \"node.key\" / \"node.key.*\" strings"
                        .to_string()
                };
                let entries = v.as_array().ok_or_else(wrong)?;
                let mut list = Vec::with_capacity(entries.len());
                for e in entries {
                    let s = e.as_str().ok_or_else(wrong)?;
                    list.push(Overridable::parse(s).ok_or_else(|| {
                        format!("\"overridable\" entry {s:?} is not \"node.key\", \"node.key.key\" or \"node.key.*\"")
                    })?);
                }
                out.overridable = Some(list);
            }
            other => return Err(format!("unknown key {other:?}")),
        }
    }
    Ok(out)
}

/// The smallest `memory_max`: below it a worker could not even start.
const MIN_MEMORY_MAX: u64 = 1 << 20;

/// `memory_max`: a number of bytes, or a string of digits with an optional `K`, `M`, `G` or `T`
/// suffix (powers of 1024, as cgroup's `memory.max` reads them).
fn parse_bytes(v: &Value) -> Result<u64, String> {
    const FORM: &str =
        "\"memory_max\" must be a number of bytes or a string such as \"512M\" (K, M, G, T: powers of 1024)";
    let n = match v {
        Value::Number(n) => n.as_u64().ok_or(FORM)?,
        Value::String(s) => {
            let s = s.trim();
            let (digits, shift) = match s.char_indices().last() {
                Some((i, c)) if c.is_ascii_alphabetic() => {
                    let shift = match c.to_ascii_uppercase() {
                        'K' => 10,
                        'M' => 20,
                        'G' => 30,
                        'T' => 40,
                        _ => return Err(FORM.into()),
                    };
                    (&s[..i], shift)
                }
                _ => (s, 0),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FORM.into());
            }
            let n: u64 = digits.parse().map_err(|_| FORM)?;
            n.checked_mul(1u64 << shift)
                .ok_or("\"memory_max\" is too large")?
        }
        _ => return Err(FORM.into()),
    };
    if n < MIN_MEMORY_MAX {
        return Err(format!(
            "\"memory_max\" must be at least 1M ({MIN_MEMORY_MAX} bytes), not {n}"
        ));
    }
    Ok(n)
}

/// Words that start with `./` or `../` are paths relative to the graph's file.
fn resolve_word(word: &str, base_dir: &Path) -> String {
    if word.starts_with("./") || word.starts_with("../") {
        base_dir.join(word).to_string_lossy().into_owned()
    } else {
        word.to_string()
    }
}

pub(super) fn parse_teams(v: &Value) -> Result<Vec<Team>, String> {
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

    #[test]
    fn memory_max_reads_bytes_and_suffixes() {
        assert_eq!(parse_bytes(&json!(1_048_576)), Ok(1 << 20));
        assert_eq!(parse_bytes(&json!("512M")), Ok(512 << 20));
        assert_eq!(parse_bytes(&json!("2g")), Ok(2 << 30));
        assert_eq!(parse_bytes(&json!(" 4096K ")), Ok(4 << 20));
        assert_eq!(parse_bytes(&json!("1T")), Ok(1 << 40));
        assert_eq!(parse_bytes(&json!("3145728")), Ok(3 << 20));
        for bad in [
            json!("512MB"),
            json!("M"),
            json!("-5M"),
            json!("1.5G"),
            json!(-1),
            json!(2.5),
            json!(true),
            json!("99999999999999999999T"),
        ] {
            assert!(parse_bytes(&bad).is_err(), "{bad}");
        }
        let small = parse_bytes(&json!("512K")).unwrap_err();
        assert!(small.contains("at least 1M"), "{small}");
    }

    #[test]
    fn limits_are_runtime_keys() {
        let rt =
            parse_runtime(&json!({"memory_max": "1G", "pids_max": 64}), Path::new("/")).unwrap();
        assert_eq!((rt.memory_max, rt.pids_max), (Some(1 << 30), Some(64)));
        let rt = parse_runtime(&json!({"prewarm": 2}), Path::new("/")).unwrap();
        assert_eq!(rt.prewarm, 2);
        let err = parse_runtime(&json!({"prewarm": 65}), Path::new("/")).unwrap_err();
        assert!(err.contains("prewarm"), "{err}");
        let err = parse_runtime(&json!({"pids_max": 0}), Path::new("/")).unwrap_err();
        assert!(err.contains("pids_max"), "{err}");
        let err = parse_runtime(&json!({"pids_max": "many"}), Path::new("/")).unwrap_err();
        assert!(err.contains("pids_max"), "{err}");
    }
}
