//! `${env:VAR}` and `${env:VAR|default}` placeholders, resolved the way the TEN runtime does.
//!
//! Only a string that as a whole begins with `${env:` and ends with `}` is a placeholder; there is
//! no interpolation inside longer strings. A backslash escapes the next character of the part
//! after `env:` (so `\|` and `\}` are literal). `|` with nothing after it is an empty default.
//! A set variable (even to "") wins; unset with a default gives the default; unset without one
//! is an error that names the variable.

use serde_json::Value;

/// A placeholder whose variable is unset and that has no default.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {var} is not set and {path} has no default")]
pub struct Missing {
    /// The variable's name.
    pub var: String,
    /// Where the placeholder sits (`node "llm" property.api_key`).
    pub path: String,
}

/// One grammar for both sides: the supervisor's check at `/start` accepts exactly what the worker
/// resolves.
pub use crate::supervisor::placeholder::{parse, Placeholder};

/// Resolves every placeholder in `value`, walking objects and arrays. `path` names the place of
/// `value` in error messages; `lookup` reads a variable.
pub fn resolve(
    value: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Missing> {
    match value {
        Value::String(s) => {
            if let Some(p) = parse(s) {
                *s = match (lookup(&p.var), p.default) {
                    (Some(v), _) => v,
                    (None, Some(d)) => d,
                    (None, None) => {
                        return Err(Missing {
                            var: p.var,
                            path: path.to_string(),
                        })
                    }
                };
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                resolve(v, &format!("{path}[{i}]"), lookup)?;
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                resolve(v, &format!("{path}.{k}"), lookup)?;
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
        resolve(&mut v, "p", &env).map(|_| v)
    }

    #[test]
    fn whole_string_only() {
        assert_eq!(one("${env:SET}").unwrap(), json!("value"));
        assert_eq!(one("x ${env:SET}").unwrap(), json!("x ${env:SET}"));
        assert_eq!(one("${env:SET} x").unwrap(), json!("${env:SET} x"));
        assert_eq!(one("${other:SET}").unwrap(), json!("${other:SET}"));
    }

    #[test]
    fn defaults() {
        assert_eq!(one("${env:NOPE|fallback}").unwrap(), json!("fallback"));
        assert_eq!(one("${env:NOPE|}").unwrap(), json!(""));
        assert_eq!(one("${env:EMPTY|fallback}").unwrap(), json!(""));
        assert_eq!(
            one("${env:NOPE|https://api.openai.com/v1}").unwrap(),
            json!("https://api.openai.com/v1")
        );
        assert_eq!(one("${env:NOPE|a|b}").unwrap(), json!("a|b"));
    }

    #[test]
    fn escapes() {
        assert_eq!(one(r"${env:A\|B}").unwrap(), json!("piped"));
        assert_eq!(one(r"${env:NOPE|x\}y}").unwrap(), json!("x}y"));
        assert_eq!(one(r"${env:NOPE|back\\}").unwrap(), json!(r"back\"));
        assert_eq!(one(r"${env:SET\}").unwrap(), json!(r"${env:SET\}"));
    }

    #[test]
    fn missing_names_the_variable_and_place() {
        let mut v = json!({"a": [1, {"key": "${env:OPENAI_API_KEY}"}]});
        let err = resolve(&mut v, "node \"llm\" property", &env).unwrap_err();
        assert_eq!(err.var, "OPENAI_API_KEY");
        assert_eq!(err.path, "node \"llm\" property.a[1].key");
        assert!(err.to_string().contains("OPENAI_API_KEY"));
    }

    #[test]
    fn nested_values_resolve() {
        let mut v = json!({"a": {"b": ["${env:SET}", 3, true]}, "c": "${env:NOPE|d}"});
        resolve(&mut v, "p", &env).unwrap();
        assert_eq!(v, json!({"a": {"b": ["value", 3, true]}, "c": "d"}));
    }
}
