//! The agent messages front door (`/v1/agents/:agentId/messages`) against the real server and
//! real workers started on demand.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::TestApp;

#[tokio::test]
async fn a_message_gets_the_answer_in_the_success_envelope() {
    let server = TestApp::builder().bundled().start();
    let r = server
        .agent_message("echo", json!({"text": "What is DeFi?", "userId": "user_123", "roomId": "room_abc", "context": {"platform": "discord"}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["success"], true);
    let d = &r.body["data"];
    assert_eq!(d["response"], "What is DeFi?");
    assert_eq!(d["agentId"], "echo");
    assert_eq!(d["userId"], "user_123");
    assert_eq!(d["roomId"], "room_abc");
    assert!(d["messageId"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(d["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(d["metadata"]["responseTime"].as_f64().unwrap() >= 0.0);
    assert_eq!(d["metadata"]["model"], "echo");
    assert_eq!(r.header("x-ratelimit-limit"), "60");
    assert_eq!(r.header("x-ratelimit-remaining"), "59");
    assert!(r.header("x-ratelimit-reset").parse::<u64>().unwrap() > 1_700_000_000);
}

#[tokio::test]
async fn the_same_user_and_room_continue_one_conversation() {
    let server = TestApp::builder().bundled().start();
    let send = |text: &str, room: &str| {
        server.agent_message(
            "echo",
            json!({"text": text, "userId": "u1", "roomId": room}),
        )
    };
    let a = send("first", "r1").await;
    let b = send("second", "r1").await;
    let c = send("elsewhere", "r2").await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.body["data"]["conversationId"],
        b.body["data"]["conversationId"]
    );
    assert_ne!(
        a.body["data"]["conversationId"],
        c.body["data"]["conversationId"]
    );
    // The conversation holds both turns, in order, as the agent sees them.
    let chat = a.body["data"]["conversationId"].as_str().unwrap();
    let msgs = server.list_messages(chat, "?limit=10").await;
    let texts: Vec<String> = msgs.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|m| m["content_final"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(texts, ["first", "first", "second", "second"]);
    // The context travels with the message to the agent.
    let user_msg = msgs.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "user")
        .unwrap()
        .clone();
    assert_eq!(user_msg["trace"]["userId"], "u1");
}

#[tokio::test]
async fn streaming_sends_tokens_then_done() {
    let server = TestApp::builder().bundled().start();
    for path in [
        "/v1/agents/echo/messages/stream",
        "/v1/agents/echo/messages",
    ] {
        let mut events = server
            .post_stream(
                path,
                json!({"text": "tokens one by one", "userId": "s", "stream": true}),
            )
            .await
            .expect("a stream");
        assert_eq!(events.status, 200);
        assert!(events.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        assert_eq!(events.headers["x-ratelimit-limit"], "60");
        let frames = events
            .until(Duration::from_secs(20), |e| e.data["type"] == "done")
            .await
            .unwrap_or_default();
        let mut text = String::new();
        let mut done: Option<Value> = None;
        for ev in frames {
            let v: Value = serde_json::from_str(&ev.raw).unwrap();
            match v["type"].as_str().unwrap() {
                "token" => text.push_str(v["content"].as_str().unwrap()),
                "done" => {
                    done = Some(v);
                    break;
                }
                other => panic!("unexpected {other}: {v}"),
            }
        }
        assert_eq!(text, "tokens one by one");
        assert_eq!(done.unwrap()["data"]["response"], "tokens one by one");
    }
}

#[tokio::test]
async fn the_per_minute_limit_answers_429_with_headers() {
    let server = TestApp::builder()
        .bundled()
        .env("AGENT_RATE_LIMIT_PER_MINUTE", "2")
        .start();
    for i in 0..2 {
        let r = server
            .agent_message("echo", json!({"text": format!("m{i}")}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let r = server
        .agent_message("echo", json!({"text": "one too many"}))
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.body["success"], false);
    assert_eq!(r.body["error"]["code"], "RATE_LIMITED");
    assert_eq!(r.header("x-ratelimit-remaining"), "0");
    assert!(r.header("retry-after").parse::<u64>().unwrap() >= 1);
    // Other agents have their own budget.
    let r = server.agent_message("faq", json!({"text": "hours?"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn the_concurrency_limit_answers_429() {
    // A worker that is up but never answers keeps the first request in flight.
    let silent = json!({"nodes": [], "runtime": {"command": ["sh", "-c", "exec sleep 600"], "ready": "settle", "settle_ms": 50}});
    let server = TestApp::builder()
        .bundled()
        .graph_file("silent", silent)
        .env("AGENT_MAX_CONCURRENT", "1")
        .env("CHAT_REPLY_TIMEOUT_MS", "3000")
        .start();
    let first = server.agent_message("silent", json!({"text": "hello?"}));
    let second = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server
            .agent_message("silent", json!({"text": "anyone?"}))
            .await
    };
    let (a, b) = tokio::join!(first, second);
    assert_eq!(b.status, 429, "{}", b.text);
    assert_eq!(b.body["error"]["code"], "RATE_LIMITED");
    assert_eq!(a.status, 504, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "AGENT_TIMEOUT");
}

#[tokio::test]
async fn errors_use_the_documented_codes() {
    let broken = json!({"nodes": [{"name": "e", "addon": "echo"}], "runtime": {"command": ["sh", "-c", "exit 7"], "restart": "never"}});
    let server = TestApp::builder()
        .bundled()
        .graph_file("broken", broken)
        .start();
    let r = server.agent_message("echo", json!({"userId": "x"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        json!({"success": false, "error": {"code": "INVALID_MESSAGE", "message": "Field 'text' is required", "details": {"field": "text", "reason": "Field 'text' is required"}}})
    );
    let r = server.agent_message("echo", json!({"text": "   "})).await;
    assert_eq!(
        r.body["error"]["details"]["reason"],
        "Field cannot be empty"
    );
    let r = server
        .agent_message("echo", json!({"text": "x", "context": "flat"}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["details"]["field"], "context");
    let r = server
        .agent_message("agent_a1b2c3", json!({"text": "x"}))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "AGENT_NOT_FOUND");
    assert_eq!(
        r.body["error"]["message"],
        "Agent with ID 'agent_a1b2c3' not found"
    );
    let r = server.agent_message("broken", json!({"text": "x"})).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["error"]["code"], "AGENT_UNAVAILABLE");
    assert_eq!(r.body["error"]["details"]["status"], "error");
    assert!(
        !r.header("x-ratelimit-limit").is_empty(),
        "limits are reported on errors too"
    );
}

#[tokio::test]
async fn the_key_guards_the_messages_api() {
    let server = TestApp::builder()
        .bundled()
        .env("AGENTD_API_KEY", "k1")
        .start();
    let r = server.agent_message("echo", json!({"text": "x"})).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["success"], false);
    assert_eq!(r.body["error"]["code"], "UNAUTHORIZED");
    let r = server
        .send(
            server
                .client
                .post(server.url("/v1/agents/echo/messages"))
                .bearer_auth("k1")
                .json(&json!({"text": "x"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}
