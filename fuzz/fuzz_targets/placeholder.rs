//! `${env:VAR|default}` placeholders: on any string, the server's check names a variable exactly
//! when the worker's resolution fails on it, and resolving any document never panics.
#![no_main]

use agentd::contract::placeholder as ph;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let lookup = |v: &str| (v.len() % 2 == 0).then(|| v.to_string());
    let parsed = ph::parse(s);
    if parsed.is_some() {
        assert!(s.starts_with("${env:") && s.ends_with('}'));
    }
    let missing = ph::missing(&Value::from(s), lookup);
    let mut resolved = Value::from(s);
    match ph::resolve(&mut resolved, "s", lookup) {
        Ok(()) => {
            assert!(missing.is_empty());
            let want = parsed.map_or(Some(s.to_string()), |p| p.value(lookup));
            assert_eq!(resolved.as_str(), want.as_deref());
        }
        Err(e) => assert_eq!(missing, vec![e.var]),
    }
    if let Ok(mut doc) = serde_json::from_str::<Value>(s) {
        let missing = ph::missing(&doc, lookup);
        let r = ph::resolve(&mut doc, "doc", lookup);
        assert_eq!(r.is_ok(), missing.is_empty());
    }
});
