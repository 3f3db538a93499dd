//! `rules`: keyword or pattern rules to answers, a fallback, and interactive requests whose
//! resolutions are answered by the rules again.
//!
//! The list of rules is read by [`crate::contract::addons::rules`], the reader `/start` checks a
//! graph with. The rest stays in one piece: rule matching, the addon and the reading of a
//! batch's input all serve the one question "which rule answers this?".

use std::time::Duration;

use serde_json::Value;

use super::PropertyError;
use crate::contract::addons::property::{boolean, text, uint};
use crate::contract::addons::rules::read as read_rules;
pub use crate::contract::addons::rules::Rule;
use crate::worker::client::Batch;
use crate::worker::turn::{Turn, TurnError};

/// Answer when no rule matches and the graph sets no `fallback`.
pub const DEFAULT_FALLBACK: &str = "Sorry, I do not know how to answer that.";

/// What a batch brings to the rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    /// The text the keyword and pattern rules look at.
    pub text: String,
    /// Option ids selected in resolved choice requests.
    pub selected: Vec<String>,
}

/// Whether every matcher of `rule` matches `input`.
pub fn matches(rule: &Rule, input: &Input) -> bool {
    rule.keywords
        .as_ref()
        .map_or(true, |r| r.is_match(&input.text))
        && rule
            .pattern
            .as_ref()
            .map_or(true, |r| r.is_match(&input.text))
        && (rule.options.is_empty() || rule.options.iter().any(|o| input.selected.contains(o)))
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
        Ok(Rules {
            rules: read_rules(p.get("rules"))?,
            fallback: text(p, "fallback")?.unwrap_or_else(|| DEFAULT_FALLBACK.to_string()),
            stream: boolean(p, "stream")?.unwrap_or(true),
            chunk_delay: Duration::from_millis(uint(p, "chunk_delay_ms")?.unwrap_or(0)),
        })
    }

    /// The first rule matching `input`.
    pub fn pick(&self, input: &Input) -> Option<&Rule> {
        self.rules.iter().find(|r| matches(r, input))
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
