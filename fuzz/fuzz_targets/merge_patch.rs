//! The RFC 7396 merge patch of `/start`: two JSON documents (split at the first NUL byte);
//! the result matches the RFC's algorithm and applying the patch again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

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

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let (Some(a), Some(b)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(target), Ok(patch)) = (
        serde_json::from_slice::<Value>(a),
        serde_json::from_slice::<Value>(b),
    ) else {
        return;
    };
    let mut once = target.clone();
    json_patch::merge(&mut once, &patch);
    assert_eq!(once, rfc7396(&target, &patch));
    let mut twice = once.clone();
    json_patch::merge(&mut twice, &patch);
    assert_eq!(twice, once);
});
