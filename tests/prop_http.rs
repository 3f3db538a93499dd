//! Hostile input over HTTP: arbitrary JSON (shaped like the real bodies, with their field names)
//! and arbitrary bytes POSTed, PATCHed or PUT to every write route of every API family, against
//! one real server. Every answer must be a 2xx or a 4xx, never a 500 or a dropped connection,
//! and the server must be healthy afterwards.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use support::{user_message, TestApp};

/// Field names the parsers look for, so generated bodies reach past the "unknown field" checks.
const KEYS: &[&str] = &[
    "channel_name",
    "graph_name",
    "request_id",
    "properties",
    "timeout",
    "user_uid",
    "bot_uid",
    "token",
    "echo",
    "agentId",
    "agentIds",
    "body",
    "chatId",
    "config",
    "content",
    "deltaText",
    "extendMs",
    "finalText",
    "firstMessage",
    "label",
    "leaseMs",
    "limit",
    "modelId",
    "notificationsMuted",
    "options",
    "pinned",
    "reason",
    "required",
    "retryDelayMs",
    "retryable",
    "role",
    "senderId",
    "streaming",
    "tags",
    "title",
    "titleAutoRenamed",
    "trace",
    "type",
    "waitMs",
    "workerId",
    "message",
    "conversation_id",
    "userId",
    "roomId",
    "stream",
    "from",
    "to",
    "attachments",
    "participants",
    "metadata",
    "bot",
    "enabled",
    "participant",
    "url",
    "context",
    "model",
    "mode",
    "parallel",
    "messageIds",
    "selectedOptionIds",
    "text",
    "values",
    "id",
    "prefix",
];
const JSON_CASES: u32 = 48;
const MUTATED_CASES: u32 = 64;
const BYTE_CASES: u32 = 16;

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-3i64..3).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,10}".prop_map(Value::from),
        prop::sample::select(vec![
            "echo",
            "user",
            "agent",
            "choice",
            "form",
            "text_input",
            "user:primary",
            "",
            " ",
            "-1"
        ])
        .prop_map(Value::from),
    ]
}

fn body_value() -> impl Strategy<Value = Value> {
    let key =
        prop_oneof![4 => prop::sample::select(KEYS).prop_map(str::to_string), 1 => "\\PC{0,6}"];
    scalar().prop_recursive(3, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..7)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A top-level body: mostly objects, sometimes anything.
fn json_body() -> impl Strategy<Value = Value> {
    let key =
        prop_oneof![4 => prop::sample::select(KEYS).prop_map(str::to_string), 1 => "\\PC{0,6}"];
    prop_oneof![
        6 => prop::collection::btree_map(key, body_value(), 0..8)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => body_value(),
    ]
}

fn byte_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        "\\PC{0,64}".prop_map(String::into_bytes),
        // Truncated or doubled JSON.
        (json_body(), any::<u8>()).prop_map(|(v, cut)| {
            let s = v.to_string().into_bytes();
            let n = s.len() * cut as usize / 255;
            s[..n].to_vec()
        }),
        json_body().prop_map(|v| format!("{v}{v}").into_bytes()),
    ]
}

struct Fixtures {
    chat: String,
    message: String,
    request: String,
    batch: String,
    conversation: String,
}

async fn fixtures(s: &TestApp) -> Fixtures {
    let chat = s.new_chat("echo").await;
    let r = s.stream_message(&chat, "echo").await;
    let message = r.body["id"].as_str().unwrap().to_string();
    s.post_message(&chat, user_message("hi")).await;
    let r = s
        .create_request(&chat, json!({"type": "choice", "title": "Pick", "config": {"options": [{"id": "a", "label": "A"}]}}))
        .await;
    let request = r.body["id"].as_str().unwrap_or_default().to_string();
    let r = s.claim_with(json!({"workerId": "w", "waitMs": 3000})).await;
    let batch = r.body["batchId"].as_str().unwrap_or("b").to_string();
    let r = s
        .create_conversation(json!({"title": "t", "participants": ["a", "b"]}))
        .await;
    let conversation = r.body["id"].as_str().unwrap().to_string();
    Fixtures {
        chat,
        message,
        request,
        batch,
        conversation,
    }
}

/// Every write route: method, path (with real ids, so the body parsers are reached) and a valid
/// body that the mutating strategy starts from.
fn routes(f: &Fixtures) -> Vec<(reqwest::Method, String, Value)> {
    use reqwest::Method as M;
    let (c, m, r, b, v) = (&f.chat, &f.message, &f.request, &f.batch, &f.conversation);
    let post = |p: String, seed: Value| (M::POST, p, seed);
    let w = json!({"workerId": "w"});
    vec![
        post(
            "/start".into(),
            json!({"channel_name": "fz", "graph_name": "echo", "request_id": "r",
            "properties": {"echo": {"prefix": "> "}}, "timeout": 5, "user_uid": 1, "token": "t"}),
        ),
        post("/stop".into(), json!({"channel_name": "fz"})),
        post("/ping".into(), json!({"channel_name": "fz"})),
        post(
            format!("/api/v1/messages/{m}/chunks"),
            json!({"deltaText": "x"}),
        ),
        post(
            format!("/api/v1/messages/{m}/complete"),
            json!({"finalText": "x"}),
        ),
        post(format!("/api/v1/messages/{m}/cancel"), json!({})),
        post(
            "/api/v1/chats".into(),
            json!({"agentIds": ["echo"], "modelId": "default", "title": "t"}),
        ),
        (
            M::PATCH,
            format!("/api/v1/chats/{c}"),
            json!({"title": "x", "pinned": true, "tags": ["a"]}),
        ),
        post(format!("/api/v1/chats/{c}/archive"), json!({})),
        post(format!("/api/v1/chats/{c}/unarchive"), json!({})),
        post(format!("/api/v1/chats/{c}/mark-read"), json!({})),
        post(format!("/api/v1/chats/{c}/mark-unread"), json!({})),
        post(
            format!("/api/v1/chats/{c}/messages"),
            json!({"role": "user", "senderId": "user:primary", "content": "hi", "trace": {"kind": "k"}}),
        ),
        post(
            format!("/api/v1/chats/{c}/messages/cancel-streaming"),
            json!({}),
        ),
        post(
            format!("/api/v1/chats/{c}/typing"),
            json!({"agentId": "echo"}),
        ),
        post(format!("/api/v1/chats/{c}/user-typing"), json!({})),
        post(
            format!("/api/v1/chats/{c}/requests"),
            json!({"type": "choice", "title": "Pick", "config": {"options": [{"id": "a", "label": "A"}]}}),
        ),
        (
            M::PATCH,
            format!("/api/v1/requests/{r}"),
            json!({"title": "x"}),
        ),
        post(
            format!("/api/v1/requests/{r}/resolve"),
            json!({"selectedOptionIds": ["a"]}),
        ),
        post(format!("/api/v1/requests/{r}/cancel"), json!({})),
        post(
            "/api/v1/dispatch/claim".into(),
            json!({"workerId": "w", "waitMs": 0, "leaseMs": 1000}),
        ),
        post(
            "/api/v1/dispatch/claim-many".into(),
            json!({"workerId": "w", "waitMs": 0, "limit": 2}),
        ),
        post(
            format!("/api/v1/dispatch/{b}/heartbeat"),
            json!({"workerId": "w", "extendMs": 1000}),
        ),
        post(format!("/api/v1/dispatch/{b}/complete"), w.clone()),
        post(
            format!("/api/v1/dispatch/{b}/fail"),
            json!({"workerId": "w", "reason": "r", "retryable": true}),
        ),
        post("/agents/echo/chat".into(), json!({"message": "hi"})),
        post("/agents/echo/chat/stream".into(), json!({"message": "hi"})),
        post("/agents/echo/conversations".into(), json!({"title": "t"})),
        (
            M::PUT,
            "/agents/echo/conversations/nope".into(),
            json!({"title": "t"}),
        ),
        post("/agents/echo/mark-read".into(), json!({})),
        post(
            "/teams/echo/chat".into(),
            json!({"message": "hi", "mode": "parallel"}),
        ),
        post(
            "/v1/agents/echo/messages".into(),
            json!({"text": "hi", "userId": "u", "roomId": "r"}),
        ),
        post(
            "/v1/agents/echo/messages/stream".into(),
            json!({"text": "hi", "userId": "u", "roomId": "r"}),
        ),
        post(
            "/conversations".into(),
            json!({"title": "t", "participants": ["a", "b"]}),
        ),
        post(
            format!("/conversations/{v}/bots"),
            json!({"bot": "echo", "enabled": true}),
        ),
        post(
            format!("/messages/{v}"),
            json!({"from": "a", "to": "b", "type": "text", "content": "hi"}),
        ),
        post(format!("/messages/{v}/read"), json!({"participant": "a"})),
    ]
}

/// A valid body with up to two fields given hostile values, maybe one dropped, maybe one added.
fn mutated(seed: Value) -> impl Strategy<Value = Value> {
    let keys: Vec<String> = seed
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let n = keys.len().max(1);
    (
        prop::collection::vec((0..n, body_value()), 0..3),
        prop::option::of(0..n),
        prop::option::of((prop::sample::select(KEYS), body_value())),
    )
        .prop_map(move |(changes, drop, extra)| {
            let mut v = seed.clone();
            if let Some(o) = v.as_object_mut() {
                for (i, val) in changes {
                    if let Some(k) = keys.get(i) {
                        o.insert(k.clone(), val);
                    }
                }
                if let Some(k) = drop.and_then(|i| keys.get(i)) {
                    o.remove(k);
                }
                if let Some((k, val)) = extra {
                    o.insert(k.to_string(), val);
                }
            }
            v
        })
}

/// Long polls are bounded here (the parser still sees the key, with a short wait).
fn tame(mut v: Value) -> Value {
    if let Some(w) = v.get_mut("waitMs") {
        if w.as_u64().is_some_and(|n| n > 200) {
            *w = json!(200);
        }
    }
    v
}

#[test]
fn every_write_route_answers_hostile_bodies_with_2xx_or_4xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = TestApp::builder()
        .bundled()
        .env("WRITE_RATE_LIMIT_MAX", "1000000")
        .env("AGENT_RATE_LIMIT_PER_MINUTE", "1000000")
        .env("DISPATCH_CLAIM_WAIT_MS", "0")
        .env("WORKERS_MAX", "20")
        .start();
    let f = rt.block_on(fixtures(&s));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let sent = AtomicUsize::new(0);
    let mut accepted = Vec::new();
    let t = Instant::now();
    for (method, path, seed) in routes(&f) {
        let ok = AtomicUsize::new(0);
        let send = |ct: &str, body: Vec<u8>| -> Result<(), TestCaseError> {
            sent.fetch_add(1, Ordering::Relaxed);
            let (status, text) = rt
                .block_on(async {
                    let res = client
                        .request(method.clone(), s.url(&path))
                        .header("content-type", ct)
                        .body(body.clone())
                        .send()
                        .await?;
                    let status = res.status().as_u16();
                    Ok::<_, reqwest::Error>((status, res.text().await.unwrap_or_default()))
                })
                .map_err(|e| TestCaseError::fail(format!("{method} {path}: {e}")))?;
            if status < 300 {
                ok.fetch_add(1, Ordering::Relaxed);
            }
            prop_assert!(
                (200..500).contains(&status),
                "{} {} answered {} {} to {:?}",
                method,
                path,
                status,
                text,
                String::from_utf8_lossy(&body)
            );
            Ok(())
        };
        let mut runner = TestRunner::new(Config {
            cases: JSON_CASES,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&json_body(), |v| {
                send("application/json", tame(v).to_string().into_bytes())
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", tail(&s)));
        let mut runner = TestRunner::new(Config {
            cases: MUTATED_CASES,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&mutated(seed), |v| {
                send("application/json", tame(v).to_string().into_bytes())
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", tail(&s)));
        let mut runner = TestRunner::new(Config {
            cases: BYTE_CASES,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&byte_body(), |b| send("application/json", b))
            .unwrap_or_else(|e| panic!("{e}\n{}", tail(&s)));
        accepted.push(format!("{method} {path}: {}", ok.load(Ordering::Relaxed)));
    }
    println!(
        "{} hostile requests in {:?}; accepted (2xx) per route:\n{}",
        sent.load(Ordering::Relaxed),
        t.elapsed(),
        accepted.join("\n")
    );
    rt.block_on(async {
        assert_eq!(s.health().await.status, 200);
        assert_eq!(s.api_health().await.status, 200);
        let r = s.list_messages(&f.chat, "").await;
        assert_eq!(r.status, 200);
    });
    assert!(!s.output().contains("panicked"), "{}", tail(&s));
}

fn tail(s: &TestApp) -> String {
    let out = s.output();
    out[out.len().saturating_sub(3000)..].to_string()
}
