//! A start request as the `channel_owners` row keeps it, so another node can start the channel
//! again: what `/start` took, already validated, and the chat it was bound to. The `token`
//! field is not kept (it may be a credential); a restarted worker runs without it.

use serde_json::{json, Map, Value};

use crate::supervisor::StartSpec;

/// `spec` as kept in the row.
pub fn to_json(spec: &StartSpec, graph: &str) -> Value {
    json!({
        "channel_name": spec.channel,
        "graph_name": graph,
        "request_id": spec.request_id,
        "properties": spec.properties,
        "user_uid": spec.user_uid,
        "bot_uid": spec.bot_uid,
        "timeout": spec.timeout,
        "chat_id": spec.chat_id,
        "extra_env": spec.extra_env,
    })
}

/// The start request of a row, again; `None` when the row's text is not one.
pub fn from_json(text: &str) -> Option<StartSpec> {
    let v: Value = serde_json::from_str(text).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let uid = |k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let extra_env = match v.get("extra_env") {
        Some(Value::Array(pairs)) => pairs
            .iter()
            .filter_map(|p| {
                let p = p.as_array()?;
                Some((
                    p.first()?.as_str()?.to_string(),
                    p.get(1)?.as_str()?.to_string(),
                ))
            })
            .collect(),
        _ => Vec::new(),
    };
    Some(StartSpec {
        channel: s("channel_name")?,
        graph: s("graph_name")?,
        request_id: s("request_id"),
        properties: v
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .map(|m: Map<String, Value>| m),
        user_uid: uid("user_uid"),
        bot_uid: uid("bot_uid"),
        token: None,
        timeout: v.get("timeout").and_then(Value::as_i64),
        chat_id: s("chat_id"),
        extra_env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_request_survives_the_row_without_its_token() {
        let mut props = Map::new();
        props.insert("llm".into(), json!({"model": "m"}));
        let spec = StartSpec {
            channel: "c1".into(),
            graph: "echo".into(),
            request_id: Some("r".into()),
            properties: Some(props.clone()),
            user_uid: Some(7),
            bot_uid: None,
            token: Some("secret".into()),
            timeout: Some(-1),
            chat_id: Some("chat".into()),
            extra_env: vec![("A".into(), "b".into())],
        };
        let back = from_json(&to_json(&spec, "echo").to_string()).unwrap();
        assert_eq!(back.channel, "c1");
        assert_eq!(back.graph, "echo");
        assert_eq!(back.properties, Some(props));
        assert_eq!(back.user_uid, Some(7));
        assert_eq!(back.timeout, Some(-1));
        assert_eq!(back.chat_id.as_deref(), Some("chat"));
        assert_eq!(back.extra_env, vec![("A".to_string(), "b".to_string())]);
        assert_eq!(back.token, None);
        assert!(from_json("not json").is_none());
    }
}
