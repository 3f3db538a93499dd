//! The validators of interactive requests (`POST /chats/:id/requests` config, `POST
//! /requests/:id/resolve` payload) on any JSON: an answer, never a panic. The first byte picks the
//! request type.
#![no_main]

use agentd::store::requests::{check_resolution, normalize_config};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let kind = ["choice", "text_input", "form", "other"][pick as usize % 4];
    let Ok(v) = serde_json::from_slice::<Value>(rest) else {
        return;
    };
    // The document is either {config, body} or a config alone.
    let config = v.get("config").cloned().unwrap_or_else(|| v.clone());
    let body = v
        .get("body")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Ok(cfg) = normalize_config(kind, &config) {
        // A normalized config is stable under normalization.
        assert_eq!(normalize_config(kind, &cfg).ok(), Some(cfg.clone()));
        let _ = check_resolution(kind, "title", &cfg, &body);
    }
});
