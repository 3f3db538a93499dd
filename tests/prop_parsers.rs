//! Hostile input, property-based: the merge patch of `/start`, the placeholder grammar (the
//! server's check and the worker's resolution agree), the channel-to-file-name mapping,
//! `compiledContent`, and the interactive-request validators.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use agentd::contract::placeholder as ph;
use agentd::supervisor::logs;
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

/// Strings made of the grammar's own pieces, so that near-misses are common: `${`, `env:`,
/// escaped `|`, `}` and backslashes, lone and trailing backslashes, empty variables, nested `${`.
fn placeholder_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("${env:"),
        Just("${"),
        Just("env:"),
        Just("}"),
        Just("|"),
        Just("\\"),
        Just("\\|"),
        Just("\\}"),
        Just("\\\\"),
        Just("a"),
        Just("b"),
        Just(" "),
        Just(""),
    ];
    let body = prop::collection::vec(piece, 0..8).prop_map(|p| p.concat());
    prop_oneof![
        body.clone().prop_map(|b| format!("${{env:{b}}}")),
        body.clone().prop_map(|b| format!("${{env:{b}")),
        body,
        "\\PC{0,12}",
    ]
}

/// An environment over the names the strings above can spell; set values may be empty.
fn environment() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map("[ab|}\\\\ ]{0,3}|\\$\\{env:a", "[a-z]{0,3}", 0..6)
}

/// A document whose strings are [`placeholder_like`].
fn placeholder_document() -> impl Strategy<Value = Value> {
    placeholder_like()
        .prop_map(Value::from)
        .prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
}

/// `doc` with every string replaced by what `parse` says it stands for.
fn by_parse(doc: &Value, lookup: &dyn Fn(&str) -> Option<String>) -> Value {
    match doc {
        Value::String(s) => match ph::parse(s) {
            Some(p) => Value::from(lookup(&p.var).or(p.default).unwrap_or_default()),
            None => doc.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(|x| by_parse(x, lookup)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), by_parse(x, lookup)))
                .collect(),
        ),
        other => other.clone(),
    }
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
    fn check_and_resolution_agree_on_any_string(s in placeholder_like(), env in environment()) {
        let lookup = |v: &str| env.get(v).cloned();
        let parsed = ph::parse(&s);
        if parsed.is_some() {
            prop_assert!(s.starts_with("${env:") && s.ends_with('}'), "{:?}", s);
        }
        let missing = ph::missing(&Value::from(s.as_str()), lookup);
        let mut resolved = Value::from(s.as_str());
        let result = ph::resolve(&mut resolved, "p", lookup);
        match (&parsed, &result) {
            // An ordinary string: nothing is missing and it is left as it is.
            (None, _) => {
                prop_assert!(missing.is_empty());
                prop_assert!(result.is_ok());
                prop_assert_eq!(&resolved, &Value::from(s.as_str()));
            }
            // The server's check names the variable exactly when the worker cannot resolve it.
            (Some(p), Err(e)) => {
                prop_assert_eq!(&missing, &vec![p.var.clone()]);
                prop_assert_eq!(&e.var, &p.var);
                prop_assert!(!env.contains_key(&p.var) && p.default.is_none());
            }
            // Otherwise the worker gets the variable's value, else the default.
            (Some(p), Ok(())) => {
                prop_assert!(missing.is_empty(), "checked missing {:?} but resolved {:?}", missing, s);
                let want = env.get(&p.var).cloned().or(p.default.clone());
                prop_assert_eq!(resolved.as_str(), want.as_deref());
            }
        }
    }

    #[test]
    fn check_and_resolution_agree_on_any_document(doc in placeholder_document(), env in environment()) {
        let lookup = |v: &str| env.get(v).cloned();
        let missing = ph::missing(&doc, lookup);
        let mut resolved = doc.clone();
        match ph::resolve(&mut resolved, "doc", lookup) {
            Ok(()) => {
                prop_assert!(missing.is_empty(), "{:?}", missing);
                prop_assert_eq!(&resolved, &by_parse(&doc, &lookup));
            }
            Err(e) => prop_assert!(missing.contains(&e.var), "{:?} not in {:?}", e.var, missing),
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
        prop_assert_eq!(ph::parse(&s).map(|p| (p.var, p.default)), want);
        // Whole string only: anything around it makes it an ordinary string.
        for around in [format!("x{s}"), format!("{s} ")] {
            prop_assert!(ph::parse(&around).is_none());
        }
        // Resolution: a set variable wins, else the default, else the check and the resolver
        // both name the variable.
        let doc = json!({"k": s, "n": [1, {"m": "plain ${env:X}"}]});
        let set = |v: &str| (v == var).then(|| "VALUE".to_string());
        let unset = |_: &str| None;
        let mut got = doc.clone();
        ph::resolve(&mut got, "node", set).unwrap();
        prop_assert_eq!(&got, &json!({"k": "VALUE", "n": [1, {"m": "plain ${env:X}"}]}));
        let mut got = doc.clone();
        let r = ph::resolve(&mut got, "node", unset);
        match &default {
            Some(d) => {
                prop_assert_eq!(&got["k"], &Value::from(d.as_str()));
                prop_assert!(r.is_ok());
            }
            None => {
                prop_assert_eq!(r.unwrap_err().var, var.clone());
                prop_assert_eq!(ph::missing(&doc, unset), vec![var.clone()]);
            }
        }
    }

    #[test]
    fn resolvers_never_panic_on_any_document(doc in json_value(), env in prop::collection::vec("[a-e]{1,2}", 0..4)) {
        let lookup = |v: &str| env.iter().any(|e| e == v).then(|| format!("<{v}>"));
        let _ = ph::missing(&doc, lookup);
        let mut d = doc.clone();
        let _ = ph::resolve(&mut d, "doc", lookup);
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
