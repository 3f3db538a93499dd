//! `${env:VAR|default}` placeholders: the supervisor's check and the worker's resolver read any
//! string the same way, and resolving any document never panics.
#![no_main]

use agentd::supervisor::placeholder as sup;
use agentd::worker::placeholder as wrk;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let a = sup::parse(s).map(|p| (p.var, p.default));
    let b = wrk::parse(s).map(|p| (p.var, p.default));
    assert_eq!(a, b);
    if a.is_some() {
        assert!(s.starts_with("${env:") && s.ends_with('}'));
    }
    if let Ok(mut doc) = serde_json::from_str::<Value>(s) {
        let lookup = |v: &str| (v.len() % 2 == 0).then(|| v.to_string());
        let _ = sup::missing(&doc, lookup);
        let _ = sup::resolve(&doc, lookup);
        let _ = wrk::resolve(&mut doc, "doc", &lookup);
    }
});
