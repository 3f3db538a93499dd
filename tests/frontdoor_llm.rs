//! The front doors with the LLM graph (`assistant`, an `openai_chat` agent) against a local
//! OpenAI-compatible stand-in: streaming through a front door, conversation memory by
//! userId/roomId, context reaching the model, and reported model and token usage.

#[path = "fixtures/openai_standin.rs"]
mod openai_standin;
mod support;

use std::time::Duration;

use openai_standin::Standin;
use serde_json::{json, Value};
use support::TestApp;

fn server(standin: &Standin) -> TestApp {
    TestApp::builder()
        .bundled()
        .openai(&standin.url, "sk-test", "gpt-test")
        .start()
}

#[tokio::test]
async fn agent_messages_continue_by_user_and_room_and_carry_context() {
    let standin = Standin::start();
    let s = server(&standin);
    let first = s
        .agent_message("assistant", json!({"text": "my name is Ada", "userId": "u7", "roomId": "r1", "context": {"platform": "discord"}}))
        .await;
    assert_eq!(first.status, 200, "{}\n{}", first.text, s.output());
    assert_eq!(first.body["data"]["response"], "You said: my name is Ada");
    let meta = &first.body["data"]["metadata"];
    assert_eq!(meta["model"], "gpt-test");
    assert!(meta["tokensUsed"].as_u64().unwrap() > 9, "{meta}");

    let req = standin.requests().last().unwrap().body.clone();
    let system: Vec<String> = req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "system")
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect();
    assert!(
        system.iter().any(|c| c.contains("discord")),
        "context not sent: {system:?}"
    );

    let second = s
        .agent_message(
            "assistant",
            json!({"text": "what is my name?", "userId": "u7", "roomId": "r1"}),
        )
        .await;
    assert_eq!(second.status, 200, "{}", second.text);
    let req = standin.requests().last().unwrap().body.clone();
    let contents: Vec<&str> = req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert!(
        contents.contains(&"my name is Ada"),
        "earlier turn missing: {contents:?}"
    );
    assert!(
        contents.contains(&"You said: my name is Ada"),
        "earlier answer missing: {contents:?}"
    );

    // Another room is another conversation: no memory of Ada.
    s.agent_message(
        "assistant",
        json!({"text": "hello", "userId": "u7", "roomId": "r2"}),
    )
    .await;
    let req = standin.requests().last().unwrap().body.clone();
    assert!(!req.to_string().contains("Ada"), "{req}");
}

#[tokio::test]
async fn llm_answers_stream_through_both_front_doors() {
    let standin = Standin::start();
    let s = server(&standin);

    let mut events = s
        .agent_message_stream(
            "assistant",
            json!({"text": "tell me a story", "userId": "streamer"}),
        )
        .await
        .expect("a stream");
    assert_eq!(events.status, 200);
    let frames = events
        .until(Duration::from_secs(20), |e| e.data["type"] == "done")
        .await
        .unwrap_or_default();
    let mut tokens = Vec::new();
    let mut done = Value::Null;
    for ev in frames {
        let v: Value = serde_json::from_str(&ev.raw).unwrap();
        match v["type"].as_str().unwrap() {
            "token" => tokens.push(v["content"].as_str().unwrap().to_string()),
            "done" => {
                done = v;
                break;
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(tokens.concat(), "You said: tell me a story");
    assert_eq!(done["data"]["response"], "You said: tell me a story");
    assert_eq!(done["data"]["metadata"]["model"], "gpt-test");

    let mut events = s
        .agent_chat_stream("assistant", json!({"message": "and another"}))
        .await
        .expect("a stream");
    let frames = events
        .until(Duration::from_secs(20), |e| e.raw == "[DONE]")
        .await
        .unwrap_or_default();
    let mut text = String::new();
    for ev in frames {
        let data = ev.raw;
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(&data).unwrap();
        if v["type"] == "text" {
            text.push_str(v["content"].as_str().unwrap());
        }
    }
    assert_eq!(text, "You said: and another");
}

#[tokio::test]
async fn a_provider_failure_is_an_honest_front_door_error() {
    let standin = Standin::start();
    let s = TestApp::builder()
        .bundled()
        .openai(&standin.url, "sk-test", "unauthorized")
        .start();
    let r = s.agent_message("assistant", json!({"text": "hi"})).await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert_eq!(r.body["success"], false);
    assert_eq!(r.body["error"]["code"], "AGENT_FAILED");
    assert!(
        r.body["error"]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("Dispatch failed"),
        "{}",
        r.text
    );
}

/// A base URL where nothing listens: every connection is refused.
fn refusing_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/v1")
}

/// A provider that refuses connections fails retryably: when the next try comes after the
/// caller's wait, the caller hears at once why (AGENT_UNAVAILABLE with the reason, the message
/// kept), not after `CHAT_REPLY_TIMEOUT_MS` of silence.
#[tokio::test]
async fn an_unreachable_provider_is_reported_when_its_retry_outlasts_the_wait() {
    let s = TestApp::builder()
        .bundled()
        .openai(&refusing_url(), "sk-test", "gpt-test")
        // The reply timeout is long and the first retry longer still: only the failure event
        // can end this request before the test's own time limit.
        .env("CHAT_REPLY_TIMEOUT_MS", "55000")
        .env("DISPATCH_RETRY_BASE_MS", "600000")
        .env("DISPATCH_RETRY_MAX_MS", "600000")
        .start();
    for (door, r) in [
        (
            "chat",
            s.agent_chat("assistant", json!({"message": "hi"})).await,
        ),
        (
            "v1",
            s.agent_message("assistant", json!({"text": "hi", "userId": "u2"}))
                .await,
        ),
    ] {
        assert_eq!(r.status, 503, "{door}: {}\n{}", r.text, s.output());
        let error = &r.body["error"];
        assert_eq!(error["code"], "AGENT_UNAVAILABLE", "{door}: {}", r.text);
        let reason = error["details"]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("cannot reach the model provider"),
            "{door}: {}",
            r.text
        );
        assert_eq!(error["details"]["messageKept"], true, "{door}: {}", r.text);
    }
}

/// A provider that refuses connections while its batch is retried: the on-demand worker has work
/// in hand, so it is not reaped for inactivity (a 1 s timeout here), and the caller hears the
/// reason once the last attempt has failed.
#[tokio::test]
async fn a_worker_retrying_its_batch_is_not_reaped_and_the_last_failure_is_reported() {
    let s = TestApp::builder()
        .bundled()
        .openai(&refusing_url(), "sk-test", "gpt-test")
        .env("WORKER_QUIT_TIMEOUT_SECONDS", "1")
        .env("DISPATCH_RETRY_BASE_MS", "1500")
        .env("DISPATCH_RETRY_MAX_MS", "1500")
        .env("DISPATCH_MAX_ATTEMPTS", "4")
        .start();
    let asking = s.agent_message("assistant", json!({"text": "hi"}));
    // A reaped worker would leave the batch unclaimed (no terminal failure, a 503 at the reply
    // timeout instead); a replaced one shows as a second pid.
    let watching = async {
        let mut pids = std::collections::BTreeSet::new();
        loop {
            if let Some(pid) = s
                .worker("agent:assistant")
                .await
                .and_then(|w| w["pid"].as_u64())
            {
                pids.insert(pid);
            }
            if pids.len() > 1 {
                return pids;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let r = tokio::select! {
        r = asking => r,
        pids = watching => panic!("the worker was replaced while retrying: pids {pids:?}\n{}", s.output()),
    };
    assert_eq!(r.status, 502, "{}\n{}", r.text, s.output());
    assert_eq!(r.body["error"]["code"], "AGENT_FAILED", "{}", r.text);
    let reason = r.body["error"]["details"]["reason"].as_str().unwrap();
    assert!(reason.contains("after 4 attempts"), "{}", r.text);
    assert!(
        reason.contains("cannot reach the model provider"),
        "{}",
        r.text
    );
}

/// A provider that answers 429 with `Retry-After: 7` while the caller waits at most 5 s: the
/// caller hears the provider's reason at once instead of a timeout.
#[tokio::test]
async fn a_rate_limited_provider_is_reported_when_its_retry_after_outlasts_the_wait() {
    let standin = Standin::start();
    let s = TestApp::builder()
        .bundled()
        .openai(&standin.url, "sk-test", "rate_limited")
        .env("CHAT_REPLY_TIMEOUT_MS", "5000")
        .start();
    let r = s
        .agent_message("assistant", json!({"text": "hi", "userId": "u3"}))
        .await;
    assert_eq!(r.status, 503, "{}\n{}", r.text, s.output());
    assert_eq!(r.body["error"]["code"], "AGENT_UNAVAILABLE", "{}", r.text);
    let reason = r.body["error"]["details"]["reason"].as_str().unwrap();
    assert!(reason.contains("Rate limit reached"), "{}", r.text);
}
