//! The chat API front door (`/agents/:id/...`, `/teams/:id/chat`) against the real server and
//! real workers started on demand.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{wait_until, TestApp};

fn broken_graph() -> Value {
    json!({"nodes": [{"name": "echo", "addon": "echo", "property": {}}],
           "runtime": {"command": ["sh", "-c", "echo 'no model configured' >&2; exit 3"], "restart": "never"}})
}

async fn pid_of(server: &TestApp, channel: &str) -> Option<u64> {
    server.worker(channel).await.and_then(|w| w["pid"].as_u64())
}

#[tokio::test]
async fn first_message_starts_the_agent_and_later_ones_reuse_it() {
    let server = TestApp::builder().bundled().start();
    assert!(pid_of(&server, "agent:echo").await.is_none());

    let r = server
        .agent_chat("echo", json!({"message": "hello there"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["response"], "hello there");
    assert_eq!(r.body["agent_id"], "echo");
    assert_eq!(r.body["agent_name"], "Echo");
    let pid = pid_of(&server, "agent:echo")
        .await
        .expect("worker started on demand");

    let r = server.agent_chat("echo", json!({"message": "again"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["response"], "again");
    assert_eq!(
        pid_of(&server, "agent:echo").await,
        Some(pid),
        "the worker is reused"
    );

    let h = server.agent_history("echo", "?limit=10").await;
    assert_eq!(h.status, 200, "{}", h.text);
    let msgs = h.body["messages"].as_array().unwrap();
    let pairs: Vec<(String, String)> = msgs
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().into(),
                m["content"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        vec![
            ("user".into(), "hello there".into()),
            ("assistant".into(), "hello there".into()),
            ("user".into(), "again".into()),
            ("assistant".into(), "again".into()),
        ]
    );
    let h = server.agent_history("echo", "?limit=1").await;
    assert_eq!(h.body["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn idle_agents_are_reaped_and_started_again() {
    let server = TestApp::builder()
        .bundled()
        .env("WORKER_QUIT_TIMEOUT_SECONDS", "1")
        .start();
    let r = server.agent_chat("echo", json!({"message": "one"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(pid_of(&server, "agent:echo").await.is_some());
    assert!(
        wait_until(Duration::from_secs(10), || async {
            pid_of(&server, "agent:echo").await.is_none()
        })
        .await,
        "the idle worker was not reaped"
    );
    let r = server.agent_chat("echo", json!({"message": "two"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["response"], "two");
}

#[tokio::test]
async fn concurrent_first_messages_start_one_worker() {
    let server = TestApp::builder()
        .bundled()
        .env("DISPATCH_MODE", "immediate")
        .start();
    let calls = (0..8).map(|i| server.agent_chat("echo", json!({"message": format!("m{i}")})));
    let replies = futures_util::future::join_all(calls).await;
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let echo_workers = server
        .list()
        .await
        .iter()
        .filter(|w| w["graph_name"] == "echo")
        .count();
    assert_eq!(echo_workers, 1);
}

#[tokio::test]
async fn an_agent_that_cannot_start_is_unavailable_and_the_message_is_kept() {
    let server = TestApp::builder()
        .bundled()
        .graph_file("flaky", broken_graph())
        .start();
    let r = server
        .agent_chat("flaky", json!({"message": "are you there?"}))
        .await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "AGENT_UNAVAILABLE");
    let reason = r.body["error"]["details"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("no model configured") || reason.contains("exit"),
        "{reason}"
    );

    let h = server.agent_history("flaky", "").await;
    assert_eq!(
        h.body["messages"][0]["content"], "are you there?",
        "{}",
        h.text
    );

    // Fix the graph (hot reload): the next message starts a working agent, and the kept message
    // is answered too.
    let fixed = json!({"nodes": [{"name": "echo", "addon": "echo", "property": {}}]});
    std::fs::write(server.root().join("graphs/flaky.json"), fixed.to_string()).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || async {
            server.graphs().await.text.contains("flaky") && {
                let r = server.agent_chat("flaky", json!({"message": "now?"})).await;
                r.status == 200
            }
        })
        .await,
        "the fixed agent never answered"
    );
    assert!(
        wait_until(Duration::from_secs(10), || async {
            let h = server.agent_history("flaky", "?limit=50").await;
            let answers: Vec<String> = h.body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["role"] == "assistant")
                .map(|m| m["content"].as_str().unwrap().to_string())
                .collect();
            answers.iter().any(|a| a == "are you there?") && answers.iter().any(|a| a == "now?")
        })
        .await,
        "the kept message was not answered"
    );
}

#[tokio::test]
async fn streamed_chat_sends_text_frames_then_done() {
    let server = TestApp::builder().bundled().start();
    let mut events = server
        .agent_chat_stream("echo", json!({"message": "stream me please"}))
        .await
        .expect("a stream");
    assert_eq!(events.status, 200);
    assert!(events.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let frames = match events
        .until(Duration::from_secs(20), |e| e.raw == "[DONE]")
        .await
    {
        Some(frames) => frames,
        None => events.seen().to_vec(),
    };
    let mut text = String::new();
    let mut saw_done = false;
    let mut saw_end = false;
    for ev in frames {
        if ev.raw == "[DONE]" {
            saw_end = true;
            break;
        }
        let v = ev.data;
        match v["type"].as_str().unwrap() {
            "text" => text.push_str(v["content"].as_str().unwrap()),
            "done" => saw_done = true,
            other => panic!("unexpected frame {other}: {v}"),
        }
    }
    assert!(saw_done && saw_end);
    assert_eq!(text, "stream me please");
}

#[tokio::test]
async fn conversations_are_created_renamed_used_and_deleted() {
    let server = TestApp::builder().bundled().start();
    let c = server
        .create_agent_conversation("echo", json!({"title": "Trip"}))
        .await;
    assert_eq!(c.status, 201, "{}", c.text);
    let id = c.body["id"].as_str().unwrap().to_string();
    assert_eq!(c.body["title"], "Trip");

    let r = server
        .agent_chat(
            "echo",
            json!({"message": "in the trip", "conversation_id": id}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["conversation_id"], id);

    let r = server
        .update_agent_conversation("echo", &id, json!({"title": "Holiday"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["title"], "Holiday");

    let list = server.agent_conversations("echo").await;
    assert!(list.body["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == id && c["title"] == "Holiday"));

    let h = server
        .agent_history("echo", &format!("?conversation_id={id}"))
        .await;
    assert_eq!(
        h.body["messages"].as_array().unwrap().len(),
        2,
        "{}",
        h.text
    );
    let default = server.agent_history("echo", "").await;
    assert!(
        default.body["messages"].as_array().unwrap().is_empty(),
        "the default conversation is separate"
    );

    let d = server.delete_agent_conversation("echo", &id).await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.body["messages_deleted"], 2);
    let h = server
        .agent_history("echo", &format!("?conversation_id={id}"))
        .await;
    assert_eq!(h.status, 404);
    assert_eq!(h.body["error"]["code"], "CONVERSATION_NOT_FOUND");
    // Another agent cannot reach into this agent's conversations.
    let c2 = server.create_agent_conversation("echo", json!({})).await;
    let id2 = c2.body["id"].as_str().unwrap();
    let r = server
        .agent_chat("faq", json!({"message": "x", "conversation_id": id2}))
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn inbox_lists_unread_answers_until_marked_read() {
    let server = TestApp::builder().bundled().start();
    let r = server
        .agent_chat("echo", json!({"message": "note this"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let inbox = server.agent_inbox("echo").await;
    assert_eq!(inbox.status, 200);
    assert_eq!(inbox.body["unread"], 1, "{}", inbox.text);
    assert_eq!(inbox.body["messages"][0]["content"], "note this");
    let m = server.agent_mark_read("echo").await;
    assert_eq!(m.status, 200, "{}", m.text);
    assert_eq!(m.body["ok"], true);
    assert_eq!(server.agent_inbox("echo").await.body["unread"], 0);
}

#[tokio::test]
async fn team_members_answer_in_parallel_with_a_summary() {
    let server = TestApp::builder().bundled().start();
    let r = server
        .team_chat(
            "helpdesk",
            json!({"message": "what are your opening hours?", "mode": "parallel"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["mode"], "parallel");
    let responses = r.body["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 2);
    let by = |id: &str| {
        responses.iter().find(|x| x["agent_id"] == id).unwrap()["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(by("echo"), "what are your opening hours?");
    assert!(by("faq").contains("Monday"), "{}", by("faq"));
    let summary = r.body["summary"].as_str().unwrap();
    assert!(
        summary.contains("Echo") && summary.contains("FAQ"),
        "{summary}"
    );

    let r = server
        .team_chat("helpdesk", json!({"message": "x", "mode": "shouting"}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["details"]["field"], "mode");
    let r = server.team_chat("nobody", json!({"message": "x"})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "TEAM_NOT_FOUND");
}

#[tokio::test]
async fn bad_requests_get_the_chat_envelope() {
    let server = TestApp::builder().bundled().start();
    let r = server.agent_chat("nobody", json!({"message": "hi"})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "AGENT_NOT_FOUND");
    let r = server.agent_chat("echo", json!({})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "INVALID_MESSAGE");
    assert_eq!(r.body["error"]["details"]["field"], "message");
    let r = server.agent_chat("echo", json!({"message": 5})).await;
    assert_eq!(r.status, 400);
    let r = server
        .post_raw("/agents/echo/chat", "application/json", "{nope")
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "INVALID_REQUEST");
    let r = server.agent_history("echo", "?limit=0").await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn the_key_guards_the_chat_api() {
    let server = TestApp::builder()
        .bundled()
        .env("AGENTD_API_KEY", "sekrit")
        .start();
    let r = server.agent_chat("echo", json!({"message": "hi"})).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "UNAUTHORIZED");
    let r = server
        .send(
            server
                .client
                .post(server.url("/agents/echo/chat"))
                .header("x-api-key", "sekrit")
                .json(&json!({"message": "hi"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = server
        .send(
            server
                .client
                .get(server.url("/agents/echo/history"))
                .header("authorization", "Bearer sekrit"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn a_streamed_chat_to_an_agent_that_cannot_start_is_unavailable_and_kept() {
    let server = TestApp::builder()
        .bundled()
        .graph_file("flaky", broken_graph())
        .start();
    let r = server
        .post(
            "/agents/flaky/chat/stream",
            json!({"message": "stream to nobody"}),
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "AGENT_UNAVAILABLE");
    let h = server.agent_history("flaky", "").await;
    assert_eq!(
        h.body["messages"][0]["content"], "stream to nobody",
        "{}",
        h.text
    );
}
