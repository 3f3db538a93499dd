//! `${env:VAR}` and `${env:VAR|default}` placeholders, as the TEN runtime reads them.
//!
//! Only a string that as a whole starts with `${` and ends with `}` is a placeholder; `env` is the
//! only scope. In the part after `env:`, a backslash escapes the next character (so `\|` and `\}`
//! are literal). `|` followed by nothing is an empty default. The supervisor only checks them
//! ([`missing`]); the worker resolves them ([`resolve`]).

use serde_json::Value;

/// One placeholder: the variable and its default, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub var: String,
    pub default: Option<String>,
}

/// Parses `s` as a whole-string placeholder; `None` when it is an ordinary string.
pub fn parse(s: &str) -> Option<Placeholder> {
    let inner = s.strip_prefix("${")?.strip_suffix('}')?;
    let body = inner.strip_prefix("env:")?;
    let mut var = String::new();
    let mut default: Option<String> = None;
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        let c = match c {
            // A trailing lone backslash escapes the closing brace: not a placeholder.
            '\\' => chars.next()?,
            '|' if default.is_none() => {
                default = Some(String::new());
                continue;
            }
            c => c,
        };
        match default.as_mut() {
            Some(d) => d.push(c),
            None => var.push(c),
        }
    }
    if var.is_empty() {
        return None;
    }
    Some(Placeholder { var, default })
}

/// Every placeholder in `v`, walking objects and arrays recursively.
pub fn find(v: &Value) -> Vec<Placeholder> {
    let mut out = Vec::new();
    walk(v, &mut |s| {
        if let Some(p) = parse(s) {
            out.push(p);
        }
    });
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

/// Variables that `v` needs but `lookup` does not have and that have no default (sorted, unique).
pub fn missing(v: &Value, lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut vars: Vec<String> = find(v)
        .into_iter()
        .filter(|p| p.default.is_none() && lookup(&p.var).is_none())
        .map(|p| p.var)
        .collect();
    vars.sort();
    vars.dedup();
    vars
}

/// `v` with every placeholder replaced by its value (always a string): the variable's value when
/// set (even to ""), else the default. Errors with the variables that have neither.
pub fn resolve(v: &Value, lookup: impl Fn(&str) -> Option<String>) -> Result<Value, Vec<String>> {
    let absent = missing(v, &lookup);
    if !absent.is_empty() {
        return Err(absent);
    }
    Ok(replace(v, &lookup))
}

fn replace(v: &Value, lookup: &dyn Fn(&str) -> Option<String>) -> Value {
    match v {
        Value::String(s) => match parse(s) {
            Some(p) => Value::String(lookup(&p.var).or(p.default).unwrap_or_default()),
            None => v.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(|x| replace(x, lookup)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), replace(x, lookup)))
                .collect(),
        ),
        _ => v.clone(),
    }
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
        assert_eq!(parse("plain"), None);
    }

    #[test]
    fn backslash_escapes() {
        assert_eq!(parse(r"${env:A\|B}"), p("A|B", None));
        assert_eq!(parse(r"${env:A|x\}y}"), p("A", Some("x}y")));
        assert_eq!(parse(r"${env:A|c:\\dir}"), p("A", Some(r"c:\dir")));
        assert_eq!(parse(r"${env:A\}"), None);
    }

    #[test]
    fn finds_recursively_and_resolves() {
        let v =
            json!({"a": "${env:X}", "b": [{"c": "${env:Y|dy}"}], "d": {"e": "${env:Z|}"}, "n": 3});
        assert_eq!(find(&v).len(), 3);
        let env = |k: &str| (k == "X").then(|| "vx".to_string());
        assert_eq!(
            resolve(&v, env).unwrap(),
            json!({"a": "vx", "b": [{"c": "dy"}], "d": {"e": ""}, "n": 3})
        );
        let none = |_: &str| None;
        assert_eq!(resolve(&v, none).unwrap_err(), vec!["X".to_string()]);
        let empty = |_: &str| Some(String::new());
        assert_eq!(resolve(&v, empty).unwrap()["a"], "");
    }
}
