//! `compiledContent` of a batch: any items (a JSON array) give the reference format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let out = agentd::store::dispatch::compile(&items);
    match items.len() {
        0 => assert!(out.is_empty()),
        1 => assert!(!out.starts_with("[Message")),
        n => {
            assert!(out.starts_with("[Message 1]\n"));
            assert!(out.contains(&format!("[Message {n}]\n")));
        }
    }
});
