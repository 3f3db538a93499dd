//! The `rules` addon's list of rules: its shape and how its matchers compile. `/start` reads a
//! graph's list with [`read`] to refuse a bad one before anything is spawned; the worker reads it
//! with the same function and answers with what it returns.

use regex::Regex;
use serde_json::Value;

use super::property::PropertyError;

/// One rule as written: every matcher it has must match; the first matching rule answers.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Any of the keywords, as whole words, case-insensitive.
    pub keywords: Option<Regex>,
    /// A regular expression.
    pub pattern: Option<Regex>,
    /// Any of these option ids was selected in a resolved choice request.
    pub options: Vec<String>,
    /// Text to answer.
    pub answer: Option<String>,
    /// An interactive request to ask (`{type, title, body?, config}`, `config` defaulted to `{}`).
    pub request: Option<Value>,
}

/// Reads the `rules` property (absent or `null` is no rules).
pub fn read(list: Option<&Value>) -> Result<Vec<Rule>, PropertyError> {
    match list {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a.iter().enumerate().map(|(i, v)| rule(i, v)).collect(),
        Some(_) => Err(PropertyError::new("rules", "must be an array of rules")),
    }
}

fn rule(i: usize, v: &Value) -> Result<Rule, PropertyError> {
    let key = format!("rules[{i}]");
    let err = |m: &str| PropertyError::new(&key, m);
    if !v.is_object() {
        return Err(err("must be an object"));
    }
    let strings = |k: &str| -> Result<Vec<String>, PropertyError> {
        let wrong = || err(&format!("{k:?} must be a string or an array of strings"));
        match v.get(k) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(wrong),
            Some(_) => Err(wrong()),
        }
    };
    let kws: Vec<String> = strings("keywords")?
        .into_iter()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    let keywords = if kws.is_empty() {
        None
    } else {
        let alt: Vec<String> = kws.iter().map(|k| regex::escape(k)).collect();
        let re = format!(r"(?i)(?:^|\b|\s)(?:{})(?:\b|\s|$)", alt.join("|"));
        Some(Regex::new(&re).map_err(|e| err(&format!("\"keywords\" {}", regex_problem(&e))))?)
    };
    let pattern = match v.get("pattern") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => {
            Some(Regex::new(p).map_err(|e| err(&format!("\"pattern\" {}", regex_problem(&e))))?)
        }
        Some(_) => return Err(err("\"pattern\" must be a string")),
    };
    let mut options = strings("option")?;
    options.extend(strings("options")?);
    let answer = match v.get("answer") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(err("\"answer\" must be a string")),
    };
    let request = match v.get("request") {
        None | Some(Value::Null) => None,
        Some(r) => Some(request(r).map_err(|m| err(&format!("\"request\" {m}")))?),
    };
    if keywords.is_none() && pattern.is_none() && options.is_empty() {
        return Err(err("needs \"keywords\", \"pattern\" or \"option\""));
    }
    if answer.is_none() && request.is_none() {
        return Err(err("needs an \"answer\" or a \"request\""));
    }
    Ok(Rule {
        keywords,
        pattern,
        options,
        answer,
        request,
    })
}

fn request(r: &Value) -> Result<Value, String> {
    let obj = r.as_object().ok_or("must be an object")?;
    match obj.get("type").and_then(Value::as_str) {
        Some("choice" | "text_input" | "form") => {}
        _ => return Err("\"type\" must be \"choice\", \"text_input\" or \"form\"".into()),
    }
    if obj
        .get("title")
        .and_then(Value::as_str)
        .map_or(true, |t| t.trim().is_empty())
    {
        return Err("needs a non-empty \"title\"".into());
    }
    let mut r = r.clone();
    if r.get("config").is_none() {
        r["config"] = Value::Object(Default::default());
    }
    Ok(r)
}

/// Why a regular expression does not compile, without quoting it (the pattern may have come
/// from a placeholder): the last line of the parser's report, or the size limit.
fn regex_problem(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(report) => {
            let last = report
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("error:"))
                .map(str::trim)
                .unwrap_or("a syntax error");
            format!("is not a valid regular expression: {last}")
        }
        regex::Error::CompiledTooBig(limit) => {
            format!("compiles to more than the {limit} bytes a regular expression may take")
        }
        _ => "is not a valid regular expression".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_rules_and_defaults_the_request_config() {
        let rules = read(Some(&json!([
            {"keywords": ["a", " "], "answer": "x"},
            {"option": "o", "request": {"type": "choice", "title": "T"}}
        ])))
        .unwrap();
        assert_eq!(rules.len(), 2);
        assert!(rules[0].keywords.is_some() && rules[0].pattern.is_none());
        assert_eq!(rules[1].options, ["o"]);
        assert_eq!(rules[1].request.as_ref().unwrap()["config"], json!({}));
        assert!(read(None).unwrap().is_empty());
    }

    #[test]
    fn bad_rules_are_named_without_their_text() {
        let e = read(Some(&json!([{"answer": "x"}]))).unwrap_err();
        assert_eq!(e.key, "rules[0]");
        let e = read(Some(&json!([{"pattern": "(sk-secret", "answer": "x"}]))).unwrap_err();
        assert!(e.message.contains("pattern"), "{e}");
        assert!(e.message.contains("unclosed group"), "{e}");
        assert!(!e.to_string().contains("sk-secret"), "{e}");
        let e = read(Some(
            &json!([{"keywords": "k", "request": {"type": "poll", "title": "t"}}]),
        ))
        .unwrap_err();
        assert!(e.message.contains("type"), "{e}");
        assert!(read(Some(&json!({"a": 1}))).is_err());
        assert!(read(Some(&json!([{"keywords": 3, "answer": "x"}]))).is_err());
    }
}
