//! Which keys of a graph's node properties a `/start` request may set (its `properties` merge
//! patch): a request carries data, never configuration.
//!
//! - No request string may look like a `${env:…}` placeholder, at any depth.
//! - A graph with `runtime.overridable` lets a request set only the keys it lists.
//! - A graph without it lets a request set any key except protected ones: keys whose name says
//!   they are credentials, decide where credentials go, or decide what runs or what is read or
//!   written ([`PROTECTED`]), and keys whose value the author took from the environment (a
//!   placeholder: configuration, not data).
//! - An author re-opens a protected key only by naming it: `llm.*` opens `llm.model` but not
//!   `llm.api_key` (nor a key the author set from a placeholder); `llm.api_key` does.
//!
//! What a patch "sets" follows RFC 7396: every key down to a value that is not an object (that
//! value, `null` for a deletion, or `{}`), and a key whose current value is not an object but
//! is patched with one (it is replaced). A patch object merged into an existing object sets only
//! what it holds.

use serde_json::{Map, Value};

use super::errors::StartError;
use super::fields::placeholder_detail;
use crate::catalog::{Graph, Overridable};
use crate::contract::placeholder;

/// Words that make a key protected, wherever it sits: a key is split into words at anything
/// that is not a letter or digit and at lower-to-upper case changes (`api_key`, `apiKey`,
/// `API-Key` are all `api` + `key`), and compared without case.
pub const PROTECTED: &[&str] = &[
    // Credentials.
    "key",
    "keys",
    "apikey",
    "token",
    "secret",
    "secrets",
    "password",
    "passwords",
    "passwd",
    "passphrase",
    "credential",
    "credentials",
    "certificate",
    "certificates",
    "cert",
    "certs",
    "auth",
    "authorization",
    "bearer",
    "cookie",
    "cookies",
    "signature",
    // Where credentials (and everything else the worker sends) go.
    "url",
    "urls",
    "uri",
    "uris",
    "endpoint",
    "endpoints",
    "host",
    "hosts",
    "hostname",
    "domain",
    "addr",
    "address",
    "addresses",
    "server",
    "servers",
    "proxy",
    "port",
    "webhook",
    "callback",
    "dsn",
    "apibase",
    "baseurl",
    // What runs, and what is read or written.
    "command",
    "commands",
    "cmd",
    "args",
    "argv",
    "arguments",
    "env",
    "environ",
    "environment",
    "exec",
    "executable",
    "program",
    "shell",
    "script",
    "scripts",
    "binary",
    "bin",
    "path",
    "paths",
    "dir",
    "dirs",
    "directory",
    "file",
    "files",
    "filename",
    "module",
    "plugin",
    "library",
];

/// True when a key's name makes it protected (see [`PROTECTED`]).
pub fn is_protected(key: &str) -> bool {
    words(key).iter().any(|w| PROTECTED.contains(&w.as_str()))
}

/// The lower-case words of a key: split at non-alphanumerics, at a lower-case letter or digit
/// followed by an upper-case one (`baseUrl`), and before the last capital of a run followed by
/// a lower-case letter (`APIKey` is `api` + `key`).
fn words(key: &str) -> Vec<String> {
    let chars: Vec<char> = key.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if let Some(&prev) = i.checked_sub(1).and_then(|j| chars.get(j)) {
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let boundary = c.is_uppercase()
                && ((prev.is_lowercase() || prev.is_ascii_digit())
                    || (prev.is_uppercase() && next_lower));
            if boundary && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        }
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Checks a request's `properties` (per node name, a merge patch of that node's `property`)
/// against `graph`'s author values and `runtime.overridable`.
pub fn check(graph: &Graph, props: &Map<String, Value>) -> Result<(), StartError> {
    for (node, patch) in props {
        no_placeholders(patch, &mut vec![node.clone()])?;
    }
    for (node, patch) in props {
        let Some(patch) = patch.as_object() else {
            continue;
        };
        let author = graph
            .nodes()
            .iter()
            .find(|n| n.get("name").and_then(Value::as_str) == Some(node))
            .and_then(|n| n.get("property"));
        let mut sets = Vec::new();
        collect(patch, author, &mut Vec::new(), &mut sets);
        for set in sets {
            allowed(graph, node, &set)?;
        }
    }
    Ok(())
}

fn no_placeholders(v: &Value, at: &mut Vec<String>) -> Result<(), StartError> {
    match v {
        Value::String(s) if placeholder::looks_like(s) => Err(StartError::Refused {
            key: key_name(at),
            detail: placeholder_detail(),
        }),
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, x)| {
            let last = at.pop().unwrap_or_default();
            at.push(format!("{last}[{i}]"));
            let r = no_placeholders(x, at);
            at.pop();
            at.push(last);
            r
        }),
        Value::Object(o) => o.iter().try_for_each(|(k, x)| {
            at.push(k.clone());
            let r = no_placeholders(x, at);
            at.pop();
            r
        }),
        _ => Ok(()),
    }
}

/// `properties.<node>.<key>...`, as errors name a value of the request.
fn key_name(at: &[String]) -> String {
    format!("properties.{}", at.join("."))
}

/// One key a patch sets, and how many of its leading keys an `overridable` entry must name
/// outright for it to be allowed (0: none are sensitive).
struct Set {
    keys: Vec<String>,
    need: usize,
    why: Option<Why>,
}

/// What makes a key sensitive.
#[derive(Clone, Copy)]
enum Why {
    /// A protected name, at the key or above it, or inside the value set or replaced.
    Protected,
    /// The author's value there is, or holds, a placeholder.
    FromEnvironment,
}

/// Every key `patch` sets under `at`, given the author's value there (`None`: nothing).
fn collect(
    patch: &Map<String, Value>,
    author: Option<&Value>,
    at: &mut Vec<String>,
    out: &mut Vec<Set>,
) {
    for (k, v) in patch {
        at.push(k.clone());
        let current = author.and_then(|a| a.get(k));
        match v {
            // Merged into the object that is there: only what the patch holds changes.
            Value::Object(o) if current.is_some_and(Value::is_object) => {
                collect(o, current, at, out);
            }
            Value::Object(o) => {
                // Something that is not an object is replaced by a new one.
                if current.is_some() || o.is_empty() {
                    out.push(sensitivity(at, current, None));
                }
                collect(o, None, at, out);
            }
            other => out.push(sensitivity(at, current, Some(other))),
        }
        at.pop();
    }
}

/// How sensitive setting `keys` (whose author value is `current`) to `new` is.
fn sensitivity(keys: &[String], current: Option<&Value>, new: Option<&Value>) -> Set {
    let mut need = 0;
    let mut why = None;
    if let Some(i) = keys.iter().rposition(|k| is_protected(k)) {
        need = i + 1;
        why = Some(Why::Protected);
    }
    let holds_protected = |v: Option<&Value>| v.is_some_and(has_protected_key);
    if holds_protected(current) || holds_protected(new) {
        need = keys.len();
        why = Some(Why::Protected);
    }
    if current.is_some_and(|v| !placeholder::find(v).is_empty()) {
        need = keys.len();
        why = Some(Why::FromEnvironment);
    }
    Set {
        keys: keys.to_vec(),
        need,
        why,
    }
}

fn has_protected_key(v: &Value) -> bool {
    match v {
        Value::Object(o) => o
            .iter()
            .any(|(k, x)| is_protected(k) || has_protected_key(x)),
        Value::Array(a) => a.iter().any(has_protected_key),
        _ => false,
    }
}

fn allowed(graph: &Graph, node: &str, set: &Set) -> Result<(), StartError> {
    let mut path = vec![node.to_string()];
    path.extend(set.keys.iter().cloned());
    let key = key_name(&path);
    let entry = path.join(".");
    let refuse = |detail: String| {
        Err(StartError::Refused {
            key: key.clone(),
            detail,
        })
    };
    let Some(list) = &graph.runtime.overridable else {
        return match set.why {
            None => Ok(()),
            Some(why) => refuse(format!(
                "{} The graph's author can allow it with \"runtime\": {{\"overridable\": [\"{entry}\"]}}.",
                because(why)
            )),
        };
    };
    let named = list.iter().filter_map(|o| o.covers(node, &set.keys)).max();
    match (named, set.why) {
        (Some(n), _) if n >= set.need => Ok(()),
        (Some(_), Some(why)) => refuse(format!(
            "{} Its runtime.overridable opens such a key only by name: the author can add \"{entry}\".",
            because(why)
        )),
        _ => refuse(format!(
            "graph {:?} lets a request set only {}; the author can add \"{entry}\" to its runtime.overridable.",
            graph.name,
            listing(list)
        )),
    }
}

fn because(why: Why) -> &'static str {
    match why {
        Why::Protected => {
            "A request may not set it: its name marks a credential, where credentials go, or \
             what runs (api_key, token, base_url, url, host, command, env, path, ...)."
        }
        Why::FromEnvironment => {
            "A request may not set it: the graph takes its value from the environment \
             (a ${env:…} placeholder), which makes it configuration."
        }
    }
}

fn listing(list: &[Overridable]) -> String {
    if list.is_empty() {
        return "no key".into();
    }
    list.iter()
        .map(|o| format!("\"{o}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Layout, Runtime};
    use serde_json::json;

    fn graph(property: Value, overridable: Option<&[&str]>) -> Graph {
        Graph {
            name: "g".into(),
            source: "/x/g.json".into(),
            layout: Layout::Legacy,
            from_property_json: false,
            value: json!({"nodes": [{"name": "llm", "addon": "openai_chat", "property": property}]}),
            auto_start: false,
            display_name: None,
            description: None,
            runtime: Runtime {
                overridable: overridable
                    .map(|l| l.iter().filter_map(|e| Overridable::parse(e)).collect()),
                ..Runtime::default()
            },
        }
    }

    fn assistant(overridable: Option<&[&str]>) -> Graph {
        graph(
            json!({
                "base_url": "${env:OPENAI_BASE_URL|https://api.openai.com/v1}",
                "api_key": "${env:OPENAI_API_KEY}",
                "model": "${env:OPENAI_MODEL|gpt-4o-mini}",
                "system_prompt": "be brief",
                "params": {"temperature": 0.5, "auth": {"user": "u"}},
                "label": 3
            }),
            overridable,
        )
    }

    /// The key a patch is refused for, or "" when it is allowed.
    fn refused(g: &Graph, patch: Value) -> String {
        let mut props = Map::new();
        props.insert("llm".into(), patch);
        match check(g, &props) {
            Ok(()) => String::new(),
            Err(StartError::Refused { key, .. }) => key,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn words_of_keys() {
        assert_eq!(words("api_key"), ["api", "key"]);
        assert_eq!(words("baseURL"), ["base", "url"]);
        assert_eq!(words("APIKey"), ["api", "key"]);
        assert_eq!(words("OPENAI-API-KEY"), ["openai", "api", "key"]);
        assert_eq!(words("s3Bucket"), ["s3", "bucket"]);
        for k in [
            "api_key",
            "apiKey",
            "x-api-key",
            "base_url",
            "webhookUrl",
            "model_path",
            "ENV",
        ] {
            assert!(is_protected(k), "{k}");
        }
        for k in [
            "model",
            "max_tokens",
            "keywords",
            "temperature",
            "monkey",
            "prefix",
            "stream",
        ] {
            assert!(!is_protected(k), "{k}");
        }
    }

    #[test]
    fn without_a_list_everything_but_protected_and_configured_keys() {
        let g = assistant(None);
        assert_eq!(
            refused(&g, json!({"system_prompt": "x", "temperature": 1})),
            ""
        );
        assert_eq!(refused(&g, json!({"params": {"temperature": 1}})), "");
        assert_eq!(
            refused(&g, json!({"base_url": "http://evil"})),
            "properties.llm.base_url"
        );
        assert_eq!(
            refused(&g, json!({"api_key": null})),
            "properties.llm.api_key"
        );
        assert_eq!(
            refused(&g, json!({"api_key": {}})),
            "properties.llm.api_key"
        );
        assert_eq!(refused(&g, json!({"model": "m"})), "properties.llm.model");
        assert_eq!(
            refused(&g, json!({"params": {"auth": null}})),
            "properties.llm.params.auth"
        );
        assert_eq!(
            refused(&g, json!({"params": null})),
            "properties.llm.params"
        );
        assert_eq!(
            refused(&g, json!({"label": {"Host": "x"}})),
            "properties.llm.label.Host"
        );
        assert_eq!(
            refused(&g, json!({"extra": [{"url": "x"}]})),
            "properties.llm.extra"
        );
        assert_eq!(
            refused(&g, json!({"new": {"deep": {"endpoint": "x"}}})),
            "properties.llm.new.deep.endpoint"
        );
        // Merging into the configured object changes nothing there.
        assert_eq!(refused(&g, json!({"params": {}})), "");
    }

    #[test]
    fn placeholders_are_refused_at_any_depth() {
        let g = assistant(Some(&["llm.*"]));
        assert_eq!(
            refused(&g, json!({"system_prompt": "${env:OPENAI_API_KEY}"})),
            "properties.llm.system_prompt"
        );
        assert_eq!(
            refused(&g, json!({"x": [1, {"y": "${env:HOME|}"}]})),
            "properties.llm.x[1].y"
        );
        assert_eq!(refused(&g, json!({"system_prompt": "say ${env:HOME}"})), "");
    }

    #[test]
    fn a_list_allows_only_what_it_names_and_protected_keys_only_by_name() {
        let g = assistant(Some(&["llm.system_prompt", "llm.params.*"]));
        assert_eq!(refused(&g, json!({"system_prompt": "x"})), "");
        assert_eq!(
            refused(&g, json!({"params": {"temperature": 1, "new": {"a": 1}}})),
            ""
        );
        assert_eq!(refused(&g, json!({"label": 4})), "properties.llm.label");
        assert_eq!(
            refused(&g, json!({"params": {"auth": {"user": "v"}}})),
            "properties.llm.params.auth.user"
        );
        let open = assistant(Some(&["llm.*"]));
        assert_eq!(
            refused(&open, json!({"label": 4, "anything": {"b": 1}})),
            ""
        );
        assert_eq!(
            refused(&open, json!({"base_url": "x"})),
            "properties.llm.base_url"
        );
        assert_eq!(
            refused(&open, json!({"model": "m"})),
            "properties.llm.model"
        );
        let named = assistant(Some(&["llm.base_url", "llm.model", "llm.params.auth.*"]));
        assert_eq!(
            refused(&named, json!({"base_url": "http://x", "model": "m"})),
            ""
        );
        assert_eq!(
            refused(&named, json!({"params": {"auth": {"user": "v"}}})),
            ""
        );
        assert_eq!(
            refused(&named, json!({"api_key": "k"})),
            "properties.llm.api_key"
        );
    }

    #[test]
    fn refusals_say_how_to_allow() {
        let mut props = Map::new();
        props.insert("llm".into(), json!({"base_url": "http://evil"}));
        let e = check(&assistant(None), &props).unwrap_err().to_string();
        assert!(e.contains("\"overridable\": [\"llm.base_url\"]"), "{e}");
        assert!(!e.contains("evil"), "{e}");
        let e = check(&assistant(Some(&["llm.system_prompt"])), &props)
            .unwrap_err()
            .to_string();
        assert!(e.contains("only \"llm.system_prompt\""), "{e}");
    }
}
