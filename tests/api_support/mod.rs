//! Helpers shared by the `api_*` integration tests (the chat and dispatch API).
#![allow(dead_code)]

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::common::{Reply, TestServer};

/// Fast dispatch settings for tests; `extra` overrides.
pub fn server(extra: &[(&str, &str)]) -> TestServer {
    builder(extra).start()
}

pub fn builder(extra: &[(&str, &str)]) -> crate::common::Builder {
    let mut b = TestServer::builder()
        .bundled()
        .env("DISPATCH_BATCH_DEBOUNCE_MS", "100")
        .env("DISPATCH_TYPING_GRACE_MS", "600")
        .env("DISPATCH_LEASE_MS", "1000")
        .env("DISPATCH_CLAIM_WAIT_MS", "0")
        .env("DISPATCH_RETRY_BASE_MS", "100")
        .env("WRITE_RATE_LIMIT_MAX", "100000");
    for (k, v) in extra {
        b = b.env(k, *v);
    }
    b
}

pub const AGENT: &str = "echo";

/// Creates a chat for the `echo` agent; returns its id.
pub async fn chat(s: &TestServer) -> String {
    let r = s
        .post(
            "/api/v1/chats",
            json!({ "agentIds": [AGENT], "modelId": "default" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

/// Posts a user message; returns the message id.
pub async fn user_msg(s: &TestServer, chat: &str, text: &str) -> String {
    let r = s
        .post(
            &format!("/api/v1/chats/{chat}/messages"),
            json!({ "role": "user", "senderId": "user:primary", "content": text }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

pub async fn claim(s: &TestServer, worker: &str, wait_ms: u64) -> Reply {
    s.post(
        "/api/v1/dispatch/claim",
        json!({ "workerId": worker, "waitMs": wait_ms }),
    )
    .await
}

pub async fn claim_with(s: &TestServer, body: Value) -> Reply {
    s.post("/api/v1/dispatch/claim", body).await
}

/// Claims one batch, waiting up to 5 s; panics when none comes.
pub async fn claim_one(s: &TestServer, worker: &str) -> Value {
    let r = claim(s, worker, 5000).await;
    assert_eq!(r.status, 200, "expected a batch: {} {}", r.status, r.text);
    r.body
}

pub async fn complete(s: &TestServer, batch: &Value, worker: &str) -> Reply {
    s.post(
        &format!(
            "/api/v1/dispatch/{}/complete",
            batch["batchId"].as_str().unwrap()
        ),
        json!({ "workerId": worker }),
    )
    .await
}

pub async fn fail(
    s: &TestServer,
    batch: &Value,
    worker: &str,
    retryable: bool,
    delay: Option<u64>,
) -> Reply {
    let mut body = json!({ "workerId": worker, "reason": "  bad input ", "retryable": retryable });
    if let Some(d) = delay {
        body["retryDelayMs"] = json!(d);
    }
    s.post(
        &format!(
            "/api/v1/dispatch/{}/fail",
            batch["batchId"].as_str().unwrap()
        ),
        body,
    )
    .await
}

pub async fn messages(s: &TestServer, chat: &str) -> Vec<Value> {
    let r = s
        .get(&format!("/api/v1/chats/{chat}/messages?limit=200"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"].as_array().unwrap().clone()
}

pub fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.body["error"]["code"], code, "{}", r.text);
    assert!(r.body["error"]["message"].is_string(), "{}", r.text);
}

/// One parsed SSE event.
#[derive(Debug, Clone)]
pub struct Ev {
    pub event: String,
    pub id: String,
    pub data: Value,
}

/// Opens the event stream; parsed events arrive on the channel.
pub async fn sse(
    s: &TestServer,
    query: &str,
    last_event_id: Option<&str>,
) -> mpsc::UnboundedReceiver<Ev> {
    let mut req = s
        .client
        .get(s.url(&format!("/api/v1/events/stream{query}")));
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = res.bytes_stream().eventsource();
        while let Some(Ok(e)) = stream.next().await {
            let ev = Ev {
                event: e.event,
                id: e.id,
                data: serde_json::from_str(&e.data).unwrap_or(Value::Null),
            };
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for the next event matching `pred` (up to `within`).
pub async fn next_matching(
    rx: &mut mpsc::UnboundedReceiver<Ev>,
    within: Duration,
    pred: impl Fn(&Ev) -> bool,
) -> Option<Ev> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) if pred(&e) => return Some(e),
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

/// Collects events for `dur`.
pub async fn collect(rx: &mut mpsc::UnboundedReceiver<Ev>, dur: Duration) -> Vec<Ev> {
    let deadline = tokio::time::Instant::now() + dur;
    let mut out = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        out.push(e);
    }
    out
}
