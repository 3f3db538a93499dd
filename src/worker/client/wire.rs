//! The API's shapes an agent reads: dispatch batches, stored messages, and what a claim filters by.

use serde::Deserialize;
use serde_json::Value;

/// One dispatch batch (the reference's DispatchBatch).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    pub batch_id: String,
    pub chat_id: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub agent_id_hint: Option<String>,
    #[serde(default)]
    pub compiled_content: String,
    #[serde(default)]
    pub items: Vec<BatchItem>,
}

impl Batch {
    /// True when every input is a resolved interactive request.
    pub fn is_request_batch(&self) -> bool {
        self.kind == "request_batch"
    }
}

/// One input of a batch.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchItem {
    #[serde(default)]
    pub input_id: String,
    #[serde(default)]
    pub source_kind: String,
    #[serde(default)]
    pub source_id: String,
    #[serde(default)]
    pub sender_id: String,
    #[serde(default)]
    pub content: String,
}

/// A stored message (snake_case, as the server returns it).
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub id: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub sender_id: String,
    #[serde(default)]
    pub content_final: Option<String>,
    #[serde(default)]
    pub content_partial: Option<String>,
    #[serde(default)]
    pub stream_state: String,
    #[serde(default)]
    pub trace: Option<Value>,
}

impl Message {
    /// A string field of the message's trace.
    pub fn trace_str(&self, key: &str) -> Option<&str> {
        self.trace.as_ref()?.get(key)?.as_str()
    }
}

/// What to filter a claim by (agentd's extension; omitted for a plain pool worker).
#[derive(Debug, Clone, Default)]
pub struct ClaimFilter {
    pub chat_id: Option<String>,
    pub agent_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn batch_decodes_reference_payload() {
        let b: Batch = serde_json::from_value(json!({
            "batchId": "b1", "chatId": "c1", "kind": "request_batch", "agentIdHint": null,
            "compiledContent": "[Request resolved: \"Help\"] Selected: hours",
            "items": [{"inputId": "i", "sourceKind": "request_resolved", "sourceId": "r1",
                        "senderId": "user:primary", "content": "x", "mediaIds": [], "attachmentNames": []}],
            "attachments": []
        }))
        .unwrap();
        assert!(b.is_request_batch());
        assert_eq!(b.items[0].source_id, "r1");
        assert_eq!(b.agent_id_hint, None);
    }
}
