//! `rules`: keyword or pattern rules to answers, a fallback, and interactive requests whose
//! resolutions are answered by the rules again.
//!
//! One piece: under 300 lines of code (the rest is tests), and rule matching, the addon and the
//! reading of a batch's input all serve the one question "which rule answers this?".

use std::time::Duration;

use regex::Regex;
use serde_json::Value;

use super::{opt_bool, opt_str, opt_u64, PropertyError};
use crate::worker::client::Batch;
use crate::worker::turn::{Turn, TurnError};

/// Answer when no rule matches and the graph sets no `fallback`.
pub const DEFAULT_FALLBACK: &str = "Sorry, I do not know how to answer that.";

/// One rule: every matcher it has must match; the first matching rule answers.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Any of the keywords, as whole words, case-insensitive.
    keywords: Option<Regex>,
    /// A regular expression.
    pattern: Option<Regex>,
    /// Any of these option ids was selected in a resolved choice request.
    options: Vec<String>,
    /// Text to answer.
    pub answer: Option<String>,
    /// An interactive request to ask (`{type, title, body?, config}`).
    pub request: Option<Value>,
}

/// What a batch brings to the rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    /// The text the keyword and pattern rules look at.
    pub text: String,
    /// Option ids selected in resolved choice requests.
    pub selected: Vec<String>,
}

impl Rule {
    fn from_value(i: usize, v: &Value) -> Result<Rule, PropertyError> {
        let key = format!("rules[{i}]");
        let err = |m: &str| PropertyError::new(&key, m);
        if !v.is_object() {
            return Err(err("must be an object"));
        }
        let strings = |k: &str| -> Result<Vec<String>, PropertyError> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(vec![]),
                Some(Value::String(s)) => Ok(vec![s.clone()]),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| err(&format!("{k:?} must be a string or an array of strings"))),
                Some(_) => Err(err(&format!(
                    "{k:?} must be a string or an array of strings"
                ))),
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
            Some(
                Regex::new(&format!(r"(?i)(?:^|\b|\s)(?:{})(?:\b|\s|$)", alt.join("|")))
                    .map_err(|e| err(&format!("keywords: {e}")))?,
            )
        };
        let pattern = match v.get("pattern") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => {
                Some(Regex::new(p).map_err(|e| err(&format!("pattern: {e}")))?)
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
            Some(r) => Some(check_request(r).map_err(|m| err(&format!("request: {m}")))?),
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

    /// Whether every matcher of the rule matches `input`.
    pub fn matches(&self, input: &Input) -> bool {
        self.keywords
            .as_ref()
            .map_or(true, |r| r.is_match(&input.text))
            && self
                .pattern
                .as_ref()
                .map_or(true, |r| r.is_match(&input.text))
            && (self.options.is_empty() || self.options.iter().any(|o| input.selected.contains(o)))
    }
}

fn check_request(r: &Value) -> Result<Value, String> {
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

/// The rules addon's properties.
#[derive(Debug, Clone)]
pub struct Rules {
    pub rules: Vec<Rule>,
    pub fallback: String,
    pub stream: bool,
    pub chunk_delay: Duration,
}

impl Rules {
    pub fn from_property(p: &Value) -> Result<Rules, PropertyError> {
        let list = match p.get("rules") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return Err(PropertyError::new("rules", "must be an array")),
        };
        let rules = list
            .iter()
            .enumerate()
            .map(|(i, v)| Rule::from_value(i, v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rules {
            rules,
            fallback: opt_str(p, "fallback")?.unwrap_or_else(|| DEFAULT_FALLBACK.to_string()),
            stream: opt_bool(p, "stream")?.unwrap_or(true),
            chunk_delay: Duration::from_millis(opt_u64(p, "chunk_delay_ms")?.unwrap_or(0)),
        })
    }

    /// The first rule matching `input`.
    pub fn pick(&self, input: &Input) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(input))
    }

    pub async fn answer(&self, turn: &mut Turn<'_>) -> Result<(), TurnError> {
        let input = input_of(turn).await;
        match self.pick(&input) {
            Some(rule) => {
                if let Some(a) = &rule.answer {
                    turn.answer(a, self.stream, self.chunk_delay).await?;
                }
                if let Some(r) = &rule.request {
                    turn.ask(r).await?;
                }
                Ok(())
            }
            None => {
                turn.answer(&self.fallback, self.stream, self.chunk_delay)
                    .await
            }
        }
    }
}

/// Builds the rules' input, reading resolved requests back from the chat for their payloads.
async fn input_of(turn: &Turn<'_>) -> Input {
    let batch = turn.batch;
    let resolved: Vec<_> = batch
        .items
        .iter()
        .filter(|i| i.source_kind == "request_resolved")
        .collect();
    let requests = if resolved.is_empty() {
        vec![]
    } else {
        turn.client()
            .list_requests(&batch.chat_id)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!("cannot read the chat's requests, using the batch text: {e}");
                vec![]
            })
    };
    input_from(batch, &requests)
}

/// The rules' input from a batch and the chat's requests (which may be empty).
pub fn input_from(batch: &Batch, requests: &[Value]) -> Input {
    let mut selected = Vec::new();
    let mut texts = Vec::new();
    for item in &batch.items {
        if item.source_kind != "request_resolved" {
            continue;
        }
        let payload = requests
            .iter()
            .find(|r| r.get("id").and_then(Value::as_str) == Some(item.source_id.as_str()))
            .and_then(|r| {
                r.get("resolution_payload")
                    .or_else(|| r.get("resolutionPayload"))
            });
        let (sel, text) = match payload {
            Some(p) => from_payload(p),
            None => from_summary(&item.content),
        };
        selected.extend(sel);
        texts.push(text);
    }
    let text = if batch.is_request_batch() {
        texts.join("\n")
    } else {
        batch.compiled_content.clone()
    };
    Input { text, selected }
}

fn from_payload(p: &Value) -> (Vec<String>, String) {
    if let Some(ids) = p.get("selectedOptionIds").and_then(Value::as_array) {
        let ids: Vec<String> = ids
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        let text = ids.join(", ");
        return (ids, text);
    }
    if let Some(t) = p.get("text").and_then(Value::as_str) {
        return (vec![], t.to_string());
    }
    if let Some(v) = p.get("values") {
        return (vec![], v.to_string());
    }
    (vec![], p.to_string())
}

/// Reads a request line of compiledContent: `[Request resolved: "T"] Selected: a, b`.
fn from_summary(content: &str) -> (Vec<String>, String) {
    if let Some((_, ids)) = content.split_once("] Selected: ") {
        let ids: Vec<String> = ids
            .split(", ")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let text = ids.join(", ");
        return (ids, text);
    }
    for marker in ["] Response: ", "] Form values: "] {
        if let Some((_, rest)) = content.split_once(marker) {
            return (vec![], rest.to_string());
        }
    }
    (vec![], content.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn faq() -> Rules {
        let doc: Value = serde_json::from_str(include_str!("../../../graphs/faq.json")).unwrap();
        Rules::from_property(&doc["nodes"][0]["property"]).unwrap()
    }

    fn user(text: &str) -> Input {
        Input {
            text: text.into(),
            selected: vec![],
        }
    }

    fn batch(kind: &str, items: Value, compiled: &str) -> Batch {
        serde_json::from_value(json!({
            "batchId": "b", "chatId": "c", "kind": kind, "agentIdHint": null,
            "compiledContent": compiled, "items": items, "attachments": []
        }))
        .unwrap()
    }

    #[test]
    fn keywords_are_whole_words_and_case_insensitive() {
        let r = Rules::from_property(&json!({"rules": [
            {"keywords": ["hours", "open"], "answer": "9-17"},
            {"keywords": "talk to a person", "answer": "ok"}
        ]}))
        .unwrap();
        assert_eq!(
            r.pick(&user("When are you OPEN?"))
                .unwrap()
                .answer
                .as_deref(),
            Some("9-17")
        );
        assert_eq!(
            r.pick(&user("Hours please")).unwrap().answer.as_deref(),
            Some("9-17")
        );
        assert!(r.pick(&user("reopened")).is_none());
        assert_eq!(
            r.pick(&user("I want to Talk to a person."))
                .unwrap()
                .answer
                .as_deref(),
            Some("ok")
        );
    }

    #[test]
    fn patterns_and_first_match_wins() {
        let r = Rules::from_property(&json!({"rules": [
            {"pattern": "(?i)\\b(price|cost)s?\\b", "answer": "free"},
            {"keywords": ["price"], "answer": "never reached"}
        ], "fallback": "dunno"}))
        .unwrap();
        assert_eq!(
            r.pick(&user("what does it COST"))
                .unwrap()
                .answer
                .as_deref(),
            Some("free")
        );
        assert_eq!(
            r.pick(&user("prices?")).unwrap().answer.as_deref(),
            Some("free")
        );
        assert!(r.pick(&user("hello")).is_none());
        assert_eq!(r.fallback, "dunno");
    }

    #[test]
    fn option_rules_need_a_selection() {
        let r = Rules::from_property(&json!({"rules": [
            {"option": "hours", "answer": "picked hours"},
            {"keywords": ["hours"], "answer": "typed hours"}
        ]}))
        .unwrap();
        let picked = Input {
            text: "hours".into(),
            selected: vec!["hours".into()],
        };
        assert_eq!(
            r.pick(&picked).unwrap().answer.as_deref(),
            Some("picked hours")
        );
        assert_eq!(
            r.pick(&user("hours")).unwrap().answer.as_deref(),
            Some("typed hours")
        );
    }

    #[test]
    fn bad_rules_are_named() {
        let e = Rules::from_property(&json!({"rules": [{"answer": "x"}]})).unwrap_err();
        assert!(e.to_string().contains("rules[0]"), "{e}");
        let e =
            Rules::from_property(&json!({"rules": [{"pattern": "(", "answer": "x"}]})).unwrap_err();
        assert!(e.to_string().contains("pattern"), "{e}");
        let e = Rules::from_property(
            &json!({"rules": [{"keywords": ["a"], "request": {"type": "poll", "title": "t"}}]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("type"), "{e}");
    }

    #[test]
    fn request_batch_input_from_payload_and_from_summary() {
        let b = batch(
            "request_batch",
            json!([{"inputId": "i", "sourceKind": "request_resolved", "sourceId": "r1",
                    "senderId": "user:primary", "content": "[Request resolved: \"Help\"] Selected: pricing, hours"}]),
            "[Request resolved: \"Help\"] Selected: pricing, hours",
        );
        let from_summary = input_from(&b, &[]);
        assert_eq!(from_summary.selected, ["pricing", "hours"]);
        let reqs = [json!({"id": "r1", "resolution_payload": {"selectedOptionIds": ["contact"]}})];
        let from_payload = input_from(&b, &reqs);
        assert_eq!(from_payload.selected, ["contact"]);
        assert_eq!(from_payload.text, "contact");

        let t = batch(
            "request_batch",
            json!([{"inputId": "i", "sourceKind": "request_resolved", "sourceId": "r2",
                    "senderId": "user:primary", "content": "[Request resolved: \"Name\"] Response: Ada"}]),
            "",
        );
        assert_eq!(input_from(&t, &[]).text, "Ada");

        let u = batch(
            "user_batch",
            json!([{"inputId": "i", "sourceKind": "user_message", "sourceId": "m", "senderId": "user:primary", "content": "hi"}]),
            "hi",
        );
        assert_eq!(input_from(&u, &[]), user("hi"));
    }

    #[test]
    fn bundled_faq_asks_and_answers_a_choice() {
        let r = faq();
        assert!(r
            .pick(&user("When are you open?"))
            .unwrap()
            .answer
            .is_some());
        assert!(r.pick(&user("how much does it cost?")).is_some());
        let help = r.pick(&user("help")).unwrap();
        let req = help.request.as_ref().expect("help asks a question");
        assert_eq!(req["type"], "choice");
        for opt in req["config"]["options"].as_array().unwrap() {
            let id = opt["id"].as_str().unwrap();
            let picked = Input {
                text: id.into(),
                selected: vec![id.into()],
            };
            let rule = r
                .pick(&picked)
                .unwrap_or_else(|| panic!("no rule for option {id}"));
            assert!(
                rule.answer.is_some() && rule.request.is_none(),
                "option {id}"
            );
        }
        assert!(r.pick(&user("zebra")).is_none());
    }
}
