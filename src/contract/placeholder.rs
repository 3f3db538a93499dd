//! The one `${env:VAR}` / `${env:VAR|default}` placeholder grammar, as the TEN runtime reads it:
//! the supervisor checks a document with it at `/start` ([`missing`]) and the worker fills the
//! document in with it ([`resolve`]), so what one accepts the other resolves.
//!
//! Only a string that as a whole starts with `${` and ends with `}` is a placeholder; `env` is the
//! only scope; there is no interpolation inside longer strings. In the part after `env:`, a
//! backslash escapes the next character (so `\|`, `\}` and `\\` are literal), and a lone
//! backslash at the end escapes the closing brace, which makes the string an ordinary one. The
//! first unescaped `|` starts the default (`|` followed by nothing is an empty default); an empty
//! variable name is no placeholder. A set variable (even to "") wins over the default.

use serde_json::Value;

/// One placeholder: the variable and its default, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub var: String,
    pub default: Option<String>,
}

impl Placeholder {
    /// What the placeholder stands for: the variable's value when set, else the default; `None`
    /// when it has neither (the document cannot be used).
    pub fn value(&self, lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
        lookup(&self.var).or_else(|| self.default.clone())
    }
}

/// A placeholder whose variable is unset and that has no default.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {var} is not set and {path} has no default")]
pub struct Missing {
    /// The variable's name.
    pub var: String,
    /// Where the placeholder sits (`node "llm" property.api_key`).
    pub path: String,
}

/// Parses `s` as a whole-string placeholder; `None` when it is an ordinary string.
pub fn parse(s: &str) -> Option<Placeholder> {
    let body = s
        .strip_prefix("${")?
        .strip_suffix('}')?
        .strip_prefix("env:")?;
    let mut var = String::new();
    let mut default: Option<String> = None;
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        let c = match c {
            '\\' => chars.next()?,
            '|' if default.is_none() => {
                default = Some(String::new());
                continue;
            }
            c => c,
        };
        default.as_mut().unwrap_or(&mut var).push(c);
    }
    if var.is_empty() {
        return None;
    }
    Some(Placeholder { var, default })
}

/// True for a string a request may not carry: a placeholder by this grammar, or anything of its
/// whole-string shape (`${…}`), which another runtime's grammar (a third-party worker resolving
/// its own file) might read as one.
pub fn looks_like(s: &str) -> bool {
    parse(s).is_some() || (s.starts_with("${") && s.ends_with('}'))
}

/// Every placeholder in `v`, walking objects and arrays recursively.
pub fn find(v: &Value) -> Vec<Placeholder> {
    let mut out = Vec::new();
    walk(v, &mut |s| out.extend(parse(s)));
    out
}

fn walk(v: &Value, f: &mut dyn FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| walk(x, f)),
        Value::Object(o) => o.values().for_each(|x| walk(x, f)),
        _ => {}
    }
}

/// The supervisor's check: variables that `v` needs but `lookup` does not have and that have no
/// default (sorted, unique). Empty exactly when [`resolve`] succeeds with the same `lookup`.
pub fn missing(v: &Value, lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut vars: Vec<String> = find(v)
        .into_iter()
        .filter(|p| p.value(&lookup).is_none())
        .map(|p| p.var)
        .collect();
    vars.sort();
    vars.dedup();
    vars
}

/// The worker's resolution: replaces, in place, every placeholder in `value` by what it stands
/// for ([`Placeholder::value`]; always a string). `path` names `value` in the error, which names
/// the first placeholder that has no value.
pub fn resolve(
    value: &mut Value,
    path: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(), Missing> {
    resolve_in(value, &lookup).map_err(|(var, mut steps)| {
        steps.reverse();
        Missing {
            var,
            path: format!("{path}{}", steps.concat()),
        }
    })
}

/// On error: the variable, and the steps from the failing string up to `value`.
fn resolve_in(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), (String, Vec<String>)> {
    match value {
        Value::String(s) => {
            if let Some(p) = parse(s) {
                *s = p.value(lookup).ok_or((p.var, Vec::new()))?;
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                resolve_in(v, lookup).map_err(|(var, mut steps)| {
                    steps.push(format!("[{i}]"));
                    (var, steps)
                })?;
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                resolve_in(v, lookup).map_err(|(var, mut steps)| {
                    steps.push(format!(".{k}"));
                    (var, steps)
                })?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(var: &str, default: Option<&str>) -> Option<Placeholder> {
        Some(Placeholder {
            var: var.into(),
            default: default.map(Into::into),
        })
    }

    fn env(k: &str) -> Option<String> {
        match k {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            "A|B" => Some("piped".into()),
            _ => None,
        }
    }

    fn one(s: &str) -> Result<Value, Missing> {
        let mut v = json!(s);
        resolve(&mut v, "p", env).map(|_| v)
    }

    #[test]
    fn parses_whole_strings_only() {
        assert_eq!(parse("${env:A}"), p("A", None));
        assert_eq!(parse("${env:A|x}"), p("A", Some("x")));
        assert_eq!(parse("${env:A|}"), p("A", Some("")));
        assert_eq!(parse("${env:A|a|b}"), p("A", Some("a|b")));
        assert_eq!(parse("x ${env:A}"), None);
        assert_eq!(parse("${env:A} x"), None);
        assert_eq!(parse("${sys:A}"), None);
        assert_eq!(parse("${env:}"), None);
        assert_eq!(parse("${env:|d}"), None);
        assert_eq!(parse("plain"), None);
    }

    #[test]
    fn what_looks_like_a_placeholder() {
        for s in [
            "${env:A}",
            "${env:A|x}",
            "${env:}",
            "${sys:A}",
            r"${env:A\}",
            "${}",
        ] {
            assert!(looks_like(s), "{s}");
        }
        for s in [
            "x ${env:A}",
            "${env:A} x",
            "$env:A",
            "{env:A}",
            "${env:A",
            "",
        ] {
            assert!(!looks_like(s), "{s}");
        }
    }

    #[test]
    fn backslash_escapes() {
        assert_eq!(parse(r"${env:A\|B}"), p("A|B", None));
        assert_eq!(parse(r"${env:A|x\}y}"), p("A", Some("x}y")));
        assert_eq!(parse(r"${env:A|c:\\dir}"), p("A", Some(r"c:\dir")));
        assert_eq!(parse(r"${env:A\}"), None);
        assert_eq!(one(r"${env:A\|B}").unwrap(), json!("piped"));
        assert_eq!(one(r"${env:NOPE|back\\}").unwrap(), json!(r"back\"));
        assert_eq!(one(r"${env:SET\}").unwrap(), json!(r"${env:SET\}"));
    }

    #[test]
    fn a_set_variable_wins_else_the_default() {
        assert_eq!(one("${env:SET}").unwrap(), json!("value"));
        assert_eq!(one("x ${env:SET}").unwrap(), json!("x ${env:SET}"));
        assert_eq!(one("${env:NOPE|fallback}").unwrap(), json!("fallback"));
        assert_eq!(one("${env:NOPE|}").unwrap(), json!(""));
        assert_eq!(one("${env:EMPTY|fallback}").unwrap(), json!(""));
        assert_eq!(
            one("${env:NOPE|https://api.openai.com/v1}").unwrap(),
            json!("https://api.openai.com/v1")
        );
    }

    #[test]
    fn finds_recursively_and_resolves() {
        let v =
            json!({"a": "${env:X}", "b": [{"c": "${env:Y|dy}"}], "d": {"e": "${env:Z|}"}, "n": 3});
        assert_eq!(find(&v).len(), 3);
        let x = |k: &str| (k == "X").then(|| "vx".to_string());
        let mut got = v.clone();
        resolve(&mut got, "p", x).unwrap();
        assert_eq!(
            got,
            json!({"a": "vx", "b": [{"c": "dy"}], "d": {"e": ""}, "n": 3})
        );
        assert_eq!(missing(&v, |_| None), vec!["X".to_string()]);
        assert!(missing(&v, x).is_empty());
    }

    #[test]
    fn missing_names_the_variable_and_place() {
        let mut v = json!({"a": [1, {"key": "${env:OPENAI_API_KEY}"}]});
        let err = resolve(&mut v, "node \"llm\" property", env).unwrap_err();
        assert_eq!(err.var, "OPENAI_API_KEY");
        assert_eq!(err.path, "node \"llm\" property.a[1].key");
        assert!(err.to_string().contains("OPENAI_API_KEY"));
    }
}
