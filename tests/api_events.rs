//! Chat and dispatch API: the SSE event stream (frames, replay, ephemeral events, overflow).

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use support::*;

#[tokio::test]
async fn frames_and_headers() {
    let s = TestApp::with_fast_dispatch(&[]);
    let res = s
        .client
        .get(s.url("/api/v1/events/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["cache-control"], "no-cache, no-transform");
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    let mut body = res.bytes_stream();
    let mut text = String::new();
    let c = {
        let first = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&first).unwrap());
        assert!(text.starts_with(": stream opened\n\n"), "{text:?}");
        s.new_chat("echo").await
    };
    while !text.contains("chat.created") {
        let b = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&b).unwrap());
    }
    while !text.ends_with("\n\n") {
        let b = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&b).unwrap());
    }
    let frame = text
        .split("\n\n")
        .find(|f| f.starts_with("event: chat.created"))
        .unwrap();
    let lines: Vec<&str> = frame.lines().collect();
    assert_eq!(lines.len(), 3, "{frame}");
    assert_eq!(lines[0], "event: chat.created");
    let data: serde_json::Value =
        serde_json::from_str(lines[1].strip_prefix("data: ").unwrap()).unwrap();
    let id = lines[2].strip_prefix("id: ").unwrap();
    assert_eq!(id.len(), 21);
    assert_eq!(data["id"], id);
    assert_eq!(data["type"], "chat.created");
    assert_eq!(data["payload"], json!({ "chatId": c }));
    assert!(data["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn replay_by_cursor_and_last_event_id() {
    let s = TestApp::with_fast_dispatch(&[]);
    let mut live = s.events("", None).await;
    let c = s.new_chat("echo").await;
    s.post_user(&c, "one").await;
    s.typing(&c, json!({ "agentId": "echo" })).await;
    s.post_user(&c, "two").await;
    let seen = live.collect(Duration::from_millis(800)).await;
    let kinds: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "chat.created",
            "message.created",
            "chat.typing",
            "message.created"
        ],
        "{seen:?}"
    );
    let first = seen[0].id.clone();

    // Replay everything after the first event (no typing: it is ephemeral), then live.
    for (query, header) in [
        (format!("?cursor={first}"), None),
        (String::new(), Some(first.as_str())),
    ] {
        let mut rx = s.events(&query, header).await;
        let got = rx.collect(Duration::from_millis(600)).await;
        let kinds: Vec<&str> = got.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(
            &kinds[..2],
            ["message.created", "message.created"],
            "{query} {header:?}"
        );
        assert!(kinds[2..].iter().all(|k| *k == "chat.read"), "{kinds:?}");
        assert_eq!(got[0].data["payload"]["contentFinal"], "one");
        assert_eq!(got[1].id, seen[3].id);
        // Live events follow the replay without duplicates.
        s.chat_action(&c, "mark-read").await;
        let e = rx
            .next_matching(Duration::from_secs(5), |_| true)
            .await
            .unwrap();
        assert_eq!(e.event, "chat.read");
    }
    // Small replay pages still deliver everything in order.
    let mut rx = s.events(&format!("?cursor={first}&limit=1"), None).await;
    let got = rx.collect(Duration::from_millis(600)).await;
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[3].event, "chat.read");

    // The id of an ephemeral event, or an unknown id, is not a cursor.
    let typing_id = &seen[2].id;
    for bad in [typing_id.as_str(), "nope"] {
        let r = s.get(&format!("/api/v1/events/stream?cursor={bad}")).await;
        assert_error(&r, 400, "VALIDATION_ERROR");
        assert_eq!(r.body["error"]["message"], "cursor event id was not found.");
    }
}

#[tokio::test]
async fn ephemeral_filter() {
    let s = TestApp::with_fast_dispatch(&[]);
    let c = s.new_chat("echo").await;
    let mut rx = s.events("?ephemeral=false", None).await;
    s.typing(&c, json!({ "agentId": "echo" })).await;
    s.user_typing(&c).await;
    s.chat_action(&c, "archive").await;
    let got = rx.collect(Duration::from_millis(600)).await;
    let kinds: Vec<&str> = got.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["chat.archived"]);
}

#[tokio::test]
async fn replay_overflow_closes_the_stream() {
    let s = TestApp::with_fast_dispatch(&[]);
    let c = s.new_chat("echo").await;
    let first = {
        let mut rx = s.events("", None).await;
        s.post_user(&c, "start").await;
        rx.next_matching(Duration::from_secs(5), |_| true)
            .await
            .unwrap()
            .id
    };
    // A big backlog, read slowly, while many live events arrive: the server gives up.
    // About 12 MB of backlog: more than the socket buffers hold, so the replay blocks.
    for i in 0..120 {
        let r = s.post_message(&c, json!({ "role": "tool", "senderId": "tool", "content": format!("{i} {}", "x".repeat(100_000)) })).await;
        assert_eq!(r.status, 201);
    }
    let res = s
        .client
        .get(s.url(&format!("/api/v1/events/stream?cursor={first}&limit=1")))
        .send()
        .await
        .unwrap();
    // While the client reads nothing, more live events arrive than the replay may queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..12 {
        let calls = (0..100).map(|_| s.typing(&c, json!({ "agentId": "echo" })));
        futures_util::future::join_all(calls).await;
    }
    let mut body = res.bytes_stream();
    let mut tail = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(Ok(b))) = tokio::time::timeout_at(deadline, body.next()).await {
        tail.push_str(&String::from_utf8_lossy(&b));
        if tail.len() > 8192 {
            tail.drain(..tail.len() - 4096);
        }
        if tail.contains(": replay queue overflowed; reconnect required") {
            break;
        }
    }
    assert!(
        tail.contains(": replay queue overflowed; reconnect required"),
        "{}",
        &tail[tail.len().saturating_sub(300)..]
    );
    // The server closed the stream after the notice.
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(rest.is_ok(), "stream not closed");
}

#[tokio::test]
async fn slow_client_is_dropped_not_buffered() {
    let s = TestApp::with_fast_dispatch(&[]);
    let c = s.new_chat("echo").await;
    // A client that never reads: the server must keep going (and the client gets dropped).
    let res = s
        .client
        .get(s.url("/api/v1/events/stream"))
        .send()
        .await
        .unwrap();
    for _ in 0..20 {
        let calls = (0..100).map(|_| s.typing(&c, json!({ "agentId": "echo" })));
        futures_util::future::join_all(calls).await;
    }
    let r = s.api_health().await;
    assert_eq!(r.status, 200);
    drop(res);
}

#[tokio::test]
async fn event_payloads() {
    let s = TestApp::with_fast_dispatch(&[]);
    let mut rx = s.events("", None).await;
    let r = s
        .create_chat(json!({ "agentIds": ["echo"], "firstMessage": "hi" }))
        .await;
    let c = r.body["id"].as_str().unwrap().to_string();
    s.patch_chat(&c, json!({ "pinned": true })).await;
    s.chat_action(&c, "archive").await;
    s.chat_action(&c, "unarchive").await;
    s.chat_action(&c, "mark-read").await;
    s.chat_action(&c, "mark-unread").await;
    let req = s.create_request(&c, json!({ "type": "choice", "title": "Pick", "config": { "options": [{ "id": "a", "label": "A" }] } })).await;
    let rid = req.body["id"].as_str().unwrap().to_string();
    s.resolve(&rid, json!({ "selectedOptionIds": ["a"] })).await;
    let req2 = s
        .create_request(
            &c,
            json!({ "type": "text_input", "title": "Say", "config": {}, "trace": { "t": 1 } }),
        )
        .await;
    let rid2 = req2.body["id"].as_str().unwrap().to_string();
    s.cancel_request(&rid2).await;
    let m = s.stream_message(&c, "echo").await;
    let mid = m.body["id"].as_str().unwrap().to_string();
    s.cancel_streaming(&c).await;

    let got = rx.collect(Duration::from_millis(800)).await;
    let kinds: Vec<&str> = got.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "chat.created",
            "message.created",
            "chat.updated",
            "chat.archived",
            "chat.unarchived",
            "chat.read",
            "chat.unread",
            "request.created",
            "request.resolved",
            "request.created",
            "request.cancelled",
            "message.created",
            "message.streaming.complete"
        ]
    );
    let by = |k: &str| got.iter().find(|e| e.event == k).unwrap().data["payload"].clone();
    for k in [
        "chat.created",
        "chat.updated",
        "chat.archived",
        "chat.unarchived",
        "chat.read",
        "chat.unread",
    ] {
        assert_eq!(by(k), json!({ "chatId": c }), "{k}");
    }
    let first = by("message.created");
    assert_eq!(first["contentFinal"], "hi");
    assert_eq!(first["role"], "user");
    assert_eq!(first["senderId"], "user:primary");
    assert_eq!(first["streamState"], "complete");
    assert!(first.get("trace").is_none(), "no trace for firstMessage");
    assert!(first["createdAt"].is_string());
    assert_eq!(
        by("request.created"),
        json!({ "chatId": c, "requestId": rid, "type": "choice", "title": "Pick" })
    );
    let res = by("request.resolved");
    assert_eq!(res["status"], "resolved");
    assert_eq!(res["senderId"], "user:primary");
    assert_eq!(
        res["resolutionPayload"],
        json!({ "selectedOptionIds": ["a"] })
    );
    assert_eq!(res["resolution_payload"], res["resolutionPayload"]);
    let can = by("request.cancelled");
    assert_eq!(can["requestId"], rid2);
    assert_eq!(can["status"], "cancelled");
    assert_eq!(can["trace"], json!({ "t": 1 }));
    let done = by("message.streaming.complete");
    assert_eq!(done["messageId"], mid);
    assert_eq!(done["streamState"], "cancelled");
    assert!(done.get("role").is_none(), "no role from cancel-streaming");
}
