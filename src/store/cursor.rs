//! Opaque page cursors: base64url-encoded JSON, so clients cannot depend on their shape.

use serde_json::Value;

use super::error::StoreError;

/// Encodes a cursor.
pub fn encode(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Decodes a cursor; anything that is not one is a validation error on `cursor`.
pub fn decode(s: &str) -> Result<Value, StoreError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| StoreError::field("cursor", "Invalid cursor."))
}
