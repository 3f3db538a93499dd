//! Hostile input, property-based: the merge patch of `/start`, both placeholder parsers, the
//! channel-to-file-name mapping, `compiledContent`, and the interactive-request validators.

use std::collections::HashSet;
use std::path::Path;

use agentd::supervisor::{logs, placeholder as sup_ph};
use agentd::worker::placeholder as wrk_ph;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Any JSON value, a few levels deep, with keys from a small set so that patches overlap targets.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-e]{1,2}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// RFC 7396, section 2, word for word: the reference the crate we use must match.
fn rfc7396(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut t = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            let cur = t.get(k).cloned().unwrap_or(Value::Null);
            t.insert(k.clone(), rfc7396(&cur, v));
        }
    }
    Value::Object(t)
}

fn merged(target: &Value, patch: &Value) -> Value {
    let mut t = target.clone();
    json_patch::merge(&mut t, patch);
    t
}

/// Escapes a placeholder part so `\`, `|` and `}` are literal.
fn esc(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '\\' | '|' | '}' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn merge_patch_follows_rfc_7396(target in json_value(), patch in json_value()) {
        let once = merged(&target, &patch);
        prop_assert_eq!(&once, &rfc7396(&target, &patch));
        // Idempotent: applying the same patch again changes nothing.
        prop_assert_eq!(&merged(&once, &patch), &once);
        match &patch {
            Value::Object(p) => {
                for (k, v) in p {
                    if v.is_null() {
                        prop_assert!(once.get(k).is_none(), "null must delete {}", k);
                    } else {
                        prop_assert!(once.get(k).is_some());
                    }
                }
                // Keys the patch does not name are untouched.
                if let Value::Object(t) = &target {
                    for (k, v) in t {
                        if !p.contains_key(k) {
                            prop_assert_eq!(once.get(k), Some(v));
                        }
                    }
                }
            }
            // A non-object patch replaces the target whole.
            other => prop_assert_eq!(&once, other),
        }
        // The empty object changes no object.
        if target.is_object() {
            prop_assert_eq!(merged(&target, &json!({})), target);
        }
    }

    #[test]
    fn placeholder_parsers_never_panic_and_agree(s in "\\PC{0,24}", tail in "[\\\\|}a-z]{0,6}") {
        for s in [s.clone(), format!("${{env:{s}"), format!("${{env:{s}{tail}}}"), format!("${{{s}}}")] {
            let a = sup_ph::parse(&s).map(|p| (p.var, p.default));
            let b = wrk_ph::parse(&s).map(|p| (p.var, p.default));
            prop_assert_eq!(a, b, "the supervisor's check and the worker's resolver read {:?} differently", s);
        }
    }

    #[test]
    fn placeholders_round_trip(var in "\\PC{1,12}", default in prop::option::of("\\PC{0,12}")) {
        let mut s = format!("${{env:{}", esc(&var));
        if let Some(d) = &default {
            s.push('|');
            s.push_str(&esc(d));
        }
        s.push('}');
        let want = Some((var.clone(), default.clone()));
        prop_assert_eq!(sup_ph::parse(&s).map(|p| (p.var, p.default)), want.clone());
        prop_assert_eq!(wrk_ph::parse(&s).map(|p| (p.var, p.default)), want);
        // Whole string only: anything around it makes it an ordinary string.
        for around in [format!("x{s}"), format!("{s} ")] {
            prop_assert!(sup_ph::parse(&around).is_none());
            prop_assert!(wrk_ph::parse(&around).is_none());
        }
        // Resolution: a set variable wins, else the default, else the check and the resolver
        // both name the variable.
        let doc = json!({"k": s, "n": [1, {"m": "plain ${env:X}"}]});
        let set = |v: &str| (v == var).then(|| "VALUE".to_string());
        let unset = |_: &str| None;
        let mut got = doc.clone();
        wrk_ph::resolve(&mut got, "node", &set).unwrap();
        prop_assert_eq!(&got, &json!({"k": "VALUE", "n": [1, {"m": "plain ${env:X}"}]}));
        prop_assert_eq!(sup_ph::resolve(&doc, set).unwrap(), got);
        let mut got = doc.clone();
        let r = wrk_ph::resolve(&mut got, "node", &unset);
        match &default {
            Some(d) => {
                prop_assert_eq!(&got["k"], &Value::from(d.as_str()));
                prop_assert!(r.is_ok());
            }
            None => {
                prop_assert_eq!(r.unwrap_err().var, var.clone());
                prop_assert_eq!(sup_ph::missing(&doc, unset), vec![var.clone()]);
            }
        }
    }

    #[test]
    fn resolvers_never_panic_on_any_document(doc in json_value(), env in prop::collection::vec("[a-e]{1,2}", 0..4)) {
        let lookup = |v: &str| env.iter().any(|e| e == v).then(|| format!("<{v}>"));
        let _ = sup_ph::resolve(&doc, lookup);
        let _ = sup_ph::missing(&doc, lookup);
        let mut d = doc.clone();
        let _ = wrk_ph::resolve(&mut d, "doc", &lookup);
    }

    #[test]
    fn channel_file_names_stay_inside_and_apart(names in prop::collection::vec("\\PC{0,60}|[./\\\\ a\\x00-\\x1f]{0,12}", 1..24)) {
        let dir = Path::new("/srv/logs");
        let mut seen: HashSet<String> = HashSet::new();
        let distinct: HashSet<&String> = names.iter().collect();
        for name in &distinct {
            let path = logs::log_file(dir, name);
            prop_assert_eq!(path.parent(), Some(dir));
            let file = path.file_name().unwrap().to_str().unwrap().to_string();
            prop_assert!(file.starts_with("worker-") && file.ends_with(".log"));
            let stem = logs::safe_stem(name);
            prop_assert!(!stem.starts_with('.') && !stem.contains(".."));
            prop_assert!(stem.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "{:?}", stem);
            prop_assert!(stem.len() <= 40 + 13);
            prop_assert!(seen.insert(file), "two channels share a file: {:?}", name);
        }
    }

    #[test]
    fn compiled_content_follows_the_reference(contents in prop::collection::vec("\\PC{0,20}|[ \\t\\n]{0,3}", 0..6)) {
        let items: Vec<Value> = contents.iter().map(|c| json!({"content": c})).collect();
        let text = |c: &str| if c.trim().is_empty() { "(no text)".to_string() } else { c.to_string() };
        let want = match contents.len() {
            0 => String::new(),
            1 => text(&contents[0]),
            _ => contents
                .iter()
                .enumerate()
                .map(|(i, c)| format!("[Message {}]\n{}", i + 1, text(c)))
                .collect::<Vec<_>>()
                .join("\n\n"),
        };
        prop_assert_eq!(agentd::store::dispatch::compile(&items), want);
        // Attachments: a line after the header, only for two items or more.
        let names = json!(["note.txt"]);
        let with: Vec<Value> = contents.iter().map(|c| json!({"content": c, "attachmentNames": names})).collect();
        let got = agentd::store::dispatch::compile(&with);
        if contents.len() >= 2 {
            prop_assert_eq!(got.matches("[attachments: [\"note.txt\"]]\n").count(), contents.len());
        } else {
            prop_assert!(!got.starts_with("[attachments"));
        }
    }

    #[test]
    fn request_validators_never_panic(kind in "choice|text_input|form|[a-z]{0,6}", config in json_value(), body in json_value(), title in "\\PC{0,10}") {
        let _ = agentd::store::requests::normalize_config(&kind, &config);
        if let (Ok(cfg), Value::Object(b)) = (agentd::store::requests::normalize_config(&kind, &config), &body) {
            let _ = agentd::store::requests::check_resolution(&kind, &title, &cfg, b);
        }
        if let Value::Object(b) = &body {
            let _ = agentd::store::requests::check_resolution(&kind, &title, &config, b);
        }
    }
}

#[test]
fn compiled_content_matches_the_observed_reference_example() {
    let items = [
        json!({"content": "", "attachmentNames": ["note.txt"]}),
        json!({"content": "see attached"}),
    ];
    assert_eq!(
        agentd::store::dispatch::compile(&items),
        "[Message 1]\n[attachments: [\"note.txt\"]]\n(no text)\n\n[Message 2]\nsee attached"
    );
}
