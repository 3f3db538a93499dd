//! Chat and dispatch API: messages, streaming, typing, interactive requests.

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn message_rules_and_listing() {
    let s = TestApp::with_fast_dispatch(&[]);
    let c = s.new_chat("echo").await;
    let r = s.post_message(&c, json!({ "role": "user", "senderId": "user:primary", "content": "  hello  ", "trace": { "kind": "note" } })).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let m = &r.body;
    assert_eq!(m["content_final"], "hello");
    assert_eq!(m["stream_state"], "complete");
    assert_eq!(m["sender_id"], "user:primary");
    assert_eq!(m["chat_id"], c);
    assert_eq!(m["model_id"], "default");
    assert!(m["content_partial"].is_null());
    assert_eq!(m["trace"]["kind"], "note");
    // The answer is the stored resource, field for field (as the chat's list reads it).
    let streaming = s.stream_message(&c, "echo").await;
    assert_eq!(streaming.status, 201, "{}", streaming.text);
    let list = s.get(&format!("/api/v1/chats/{c}/messages")).await;
    for answered in [m, &streaming.body] {
        let stored = list.body["data"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"] == answered["id"]));
        assert_eq!(stored, Some(answered), "{}", list.text);
    }
    for (role, sender) in [("agent", "echo"), ("system", "system"), ("tool", "tool")] {
        let r = s
            .post_message(
                &c,
                json!({ "role": role, "senderId": sender, "content": "x", "modelId": "ignored" }),
            )
            .await;
        assert_eq!(r.status, 201, "{role}: {}", r.text);
        assert_eq!(r.body["model_id"], "default");
    }
    for bad in [
        json!({ "role": "user", "senderId": "someone", "content": "x" }),
        json!({ "role": "agent", "senderId": "not-an-agent", "content": "x" }),
        json!({ "role": "system", "senderId": "tool", "content": "x" }),
        json!({ "role": "tool", "senderId": "system", "content": "x" }),
        json!({ "role": "robot", "senderId": "x", "content": "x" }),
        json!({ "role": "user", "senderId": "user:primary", "content": "   " }),
        json!({ "role": "user", "senderId": "user:primary" }),
        json!({ "senderId": "user:primary", "content": "x" }),
        json!({ "role": "user", "senderId": "user:primary", "streaming": true }),
        json!({ "role": "agent", "senderId": "echo", "streaming": true, "content": "" }),
        json!({ "role": "agent", "senderId": "echo", "content": 5 }),
    ] {
        let r = s.post_message(&c, bad.clone()).await;
        assert_error(&r, 400, "VALIDATION_ERROR");
        let _ = bad;
    }
    let r = s
        .post_message(
            &c,
            json!({ "role": "agent", "senderId": "echo", "streaming": true, "content": "" }),
        )
        .await;
    assert_eq!(
        r.body["error"]["message"],
        "content is not allowed when streaming=true."
    );
    // Attachment-only content is fine.
    let r = s
        .post_message(
            &c,
            json!({ "role": "user", "senderId": "user:primary", "trace": { "mediaIds": ["m1"] } }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["content_final"], "");
    let r = s
        .post_message("AAAAAAAAAAAAAAAAAAAAA", user_message("x"))
        .await;
    assert_error(&r, 404, "NOT_FOUND");

    // Newest first, cursor walks older.
    for i in 0..5 {
        s.post_user(&c, &format!("n{i}")).await;
    }
    let r = s.list_messages(&c, "?limit=3").await;
    assert_eq!(r.status, 200);
    let d = r.body["data"].as_array().unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(d[0]["content_final"], "n4");
    assert_eq!(d[2]["content_final"], "n2");
    assert_eq!(r.body["cursor"]["hasMore"], true);
    let next = r.body["cursor"]["next"].as_str().unwrap();
    let r = s
        .list_messages(&c, &format!("?limit=3&cursor={next}"))
        .await;
    assert_eq!(r.body["data"][0]["content_final"], "n1");
    let all = s.messages(&c).await;
    assert_eq!(all.len(), 11, "ten posted, with the streaming one");
    let r = s.list_messages(&c, "?limit=201").await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let r = s.list_messages("AAAAAAAAAAAAAAAAAAAAA", "").await;
    assert_error(&r, 404, "NOT_FOUND");
}

#[tokio::test]
async fn streaming_messages() {
    let s = TestApp::with_fast_dispatch(&[]);
    let c = s.new_chat("echo").await;
    let mut ev = s.events("", None).await;
    let r = s.stream_message(&c, "echo").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["stream_state"], "streaming");
    assert!(r.body["content_final"].is_null());
    let mid = r.body["id"].as_str().unwrap().to_string();
    for part in ["Hel", "lo"] {
        let r = s.chunk(&mid, part).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let r = s.chunk(&mid, "").await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let m = s.chunk(&mid, "!").await;
    assert_eq!(m.body["content_partial"], "Hello!");
    let r = s
        .post_raw(
            &format!("/api/v1/messages/{mid}/complete"),
            "application/json",
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["content_final"], "Hello!");
    assert!(r.body["content_partial"].is_null());
    assert_eq!(r.body["stream_state"], "complete");
    // Not streaming any more → 409 with details.
    let r = s.chunk(&mid, "x").await;
    assert_error(&r, 409, "CONFLICT");
    assert_eq!(
        r.body["error"]["message"],
        "Message is not in streaming state."
    );
    assert_eq!(
        r.body["error"]["details"],
        json!({ "messageId": mid, "streamState": "complete" })
    );
    let r = s.complete_message(&mid, json!({})).await;
    assert_error(&r, 409, "CONFLICT");
    let r = s.chunk("AAAAAAAAAAAAAAAAAAAAA", "x").await;
    assert_error(&r, 404, "NOT_FOUND");

    // Events: created, chunks (ephemeral), complete.
    let created = ev
        .next_matching(std::time::Duration::from_secs(5), |e| {
            e.event == "message.created"
        })
        .await
        .unwrap();
    assert_eq!(created.data["payload"]["messageId"], mid);
    assert_eq!(created.data["payload"]["streamState"], "streaming");
    let chunk = ev
        .next_matching(std::time::Duration::from_secs(5), |e| {
            e.event == "message.streaming.chunk"
        })
        .await
        .unwrap();
    assert_eq!(chunk.data["payload"]["deltaText"], "Hel");
    assert_eq!(chunk.id.len(), 21);
    let done = ev
        .next_matching(std::time::Duration::from_secs(5), |e| {
            e.event == "message.streaming.complete"
        })
        .await
        .unwrap();
    assert_eq!(done.data["payload"]["finalText"], "Hello!");
    assert_eq!(done.data["payload"]["role"], "agent");

    // finalText wins; cancel keeps the partial; cancel-streaming.
    let a = s.stream_message(&c, "echo").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.chunk(&a, "draft").await;
    let r = s
        .complete_message(&a, json!({ "finalText": "final" }))
        .await;
    assert_eq!(r.body["content_final"], "final");
    let b = s.stream_message(&c, "echo").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.chunk(&b, "half").await;
    let r = s.cancel_message(&b).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["stream_state"], "cancelled");
    assert_eq!(r.body["content_partial"], "half");
    assert!(r.body["content_final"].is_null());
    let x = s.stream_message(&c, "echo").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let y = s.stream_message(&c, "echo").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s.cancel_streaming(&c).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["cancelledMessageIds"], json!([x, y]));
    // Cancelled messages without content are hidden; the cancelled one with text is listed.
    let ids: Vec<String> = s
        .messages(&c)
        .await
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&b) && !ids.contains(&x) && !ids.contains(&y));
}

/// Chunks held in memory (a flush interval far away): every read shows the text so far, chunk
/// events come in order, and completion and cancellation take the whole text.
#[tokio::test]
async fn streamed_text_in_memory_is_read_whole() {
    let s = TestApp::with_fast_dispatch(&[("STREAM_FLUSH_MS", "60000")]);
    let c = s.new_chat("echo").await;
    let mut ev = s.events("", None).await;
    let mid = s.stream_message(&c, "echo").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pieces = ["a", "b", "c", "d", "e", "f"];
    // Sent all at once: the answers and the events agree on one order.
    let sent = futures_util::future::join_all(pieces.iter().map(|p| s.chunk(&mid, p))).await;
    for r in &sent {
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["stream_state"], "streaming");
    }
    let mut seen = String::new();
    for _ in pieces {
        let e = ev
            .next_matching(std::time::Duration::from_secs(5), |e| {
                e.event == "message.streaming.chunk"
            })
            .await
            .unwrap();
        seen.push_str(e.data["payload"]["deltaText"].as_str().unwrap());
    }
    let longest = sent
        .iter()
        .map(|r| r.body["content_partial"].as_str().unwrap().to_string())
        .max_by_key(String::len)
        .unwrap();
    assert_eq!(longest, seen);
    let listed = s.messages(&c).await;
    assert_eq!(listed[0]["content_partial"], seen.as_str());
    assert_eq!(
        listed[0]["updated_at"],
        sent.iter()
            .map(|r| r.body["updated_at"].clone())
            .max_by_key(|v| v.to_string())
            .unwrap()
    );
    let done = s.complete_message(&mid, json!({})).await;
    assert_eq!(done.body["content_final"], seen.as_str());
    assert_eq!(s.messages(&c).await[0]["content_final"], seen.as_str());

    // Cancelled: the partial text is kept, from memory.
    let x = s.stream_message(&c, "echo").await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.chunk(&x, "kept").await;
    let r = s.cancel_streaming(&c).await;
    assert_eq!(r.body["cancelledMessageIds"], json!([x]));
    let m = s.messages(&c).await;
    assert_eq!(m[0]["stream_state"], "cancelled");
    assert_eq!(m[0]["content_partial"], "kept");
    let r = s.chunk(&x, "late").await;
    assert_error(&r, 409, "CONFLICT");
}

#[tokio::test]
async fn idle_streams_are_cancelled() {
    let s = TestApp::with_fast_dispatch(&[("STREAM_TIMEOUT_SECONDS", "1")]);
    let c = s.new_chat("echo").await;
    let r = s.stream_message(&c, "echo").await;
    let mid = r.body["id"].as_str().unwrap().to_string();
    s.chunk(&mid, "partial").await;
    let ok = wait_until(std::time::Duration::from_secs(5), || async {
        let r = s.chunk(&mid, "").await;
        let _ = r;
        s.messages(&c)
            .await
            .iter()
            .any(|m| m["id"] == mid.as_str() && m["stream_state"] == "cancelled")
    })
    .await;
    assert!(ok, "idle stream was not cancelled");
}

#[tokio::test]
async fn typing_indicators() {
    let s = TestApp::with_fast_dispatch(&[]);
    let c = s.new_chat("echo").await;
    let mut ev = s.events("", None).await;
    let r = s.typing(&c, json!({ "agentId": "echo" })).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.text.is_empty());
    let r = s.user_typing(&c).await;
    assert_eq!(r.status, 204);
    let r = s.typing(&c, json!({})).await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let r = s
        .typing("AAAAAAAAAAAAAAAAAAAAA", json!({ "agentId": "echo" }))
        .await;
    assert_error(&r, 404, "NOT_FOUND");
    let t = ev
        .next_matching(std::time::Duration::from_secs(5), |e| {
            e.event == "chat.typing"
        })
        .await
        .unwrap();
    assert_eq!(t.data["payload"], json!({ "chatId": c, "agentId": "echo" }));
    let u = ev
        .next_matching(std::time::Duration::from_secs(5), |e| {
            e.event == "chat.user_typing"
        })
        .await
        .unwrap();
    assert_eq!(
        u.data["payload"],
        json!({ "chatId": c, "senderId": "user:primary" })
    );
}

#[tokio::test]
async fn interactive_requests() {
    let s = TestApp::with_fast_dispatch(&[("DISPATCH_MODE", "immediate")]);
    let c = s.new_chat("echo").await;
    let choice = s
        .create_request(&c, json!({ "type": "choice", "title": " Pick ", "config": { "options": [{ "id": "a", "label": "A", "variant": "primary" }, { "id": "b", "label": "B" }], "maxSelections": 2 } }))
        .await;
    assert_eq!(choice.status, 201, "{}", choice.text);
    assert_eq!(choice.body["title"], "Pick");
    assert_eq!(choice.body["status"], "pending");
    assert_eq!(choice.body["config"]["minSelections"], 0);
    assert_eq!(s.chat(&c).await.body["pending_requests_count"], 1);
    assert_eq!(s.pending_summary().await.body["pending_requests_total"], 1);
    let cid = choice.body["id"].as_str().unwrap().to_string();

    for bad in [
        json!({ "type": "choice", "title": "x", "config": { "options": [] } }),
        json!({ "type": "choice", "title": "x", "config": { "options": [{ "id": "a", "label": "A" }, { "id": "a", "label": "B" }] } }),
        json!({ "type": "choice", "title": "x", "config": { "options": [{ "id": "a", "label": "A", "variant": "loud" }] } }),
        json!({ "type": "choice", "title": "x", "config": { "options": [{ "id": "a", "label": "A" }], "minSelections": 2 } }),
        json!({ "type": "text_input", "title": "x", "config": { "validation": { "pattern": "(" } } }),
        json!({ "type": "form", "title": "x", "config": { "fields": [{ "name": "a", "type": "select" }] } }),
        json!({ "type": "form", "title": "x", "config": { "fields": [{ "name": "a", "type": "text", "options": ["x"] }] } }),
        json!({ "type": "form", "title": "x", "config": { "fields": [{ "name": "a", "type": "text" }, { "name": "a", "type": "date" }] } }),
        json!({ "type": "poll", "title": "x", "config": {} }),
        json!({ "type": "choice", "title": "  ", "config": { "options": [{ "id": "a", "label": "A" }] } }),
        json!({ "type": "choice", "title": "x" }),
    ] {
        let r = s.create_request(&c, bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }

    // Resolution validation.
    assert_eq!(
        s.resolve(&cid, json!({ "selectedOptionIds": ["zzz"] }))
            .await
            .status,
        400
    );
    assert_eq!(
        s.resolve(&cid, json!({ "selectedOptionIds": ["a", "a"] }))
            .await
            .status,
        400
    );
    assert_eq!(s.resolve(&cid, json!({})).await.status, 400);
    let r = s
        .resolve(&cid, json!({ "selectedOptionIds": ["a", "b"] }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "resolved");
    assert_eq!(r.body["resolved_by"], "user");
    assert_eq!(
        r.body["resolution_payload"],
        json!({ "selectedOptionIds": ["a", "b"] })
    );
    // Not pending any more → 400.
    let r = s.resolve(&cid, json!({ "selectedOptionIds": ["a"] })).await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let r = s.cancel_request(&cid).await;
    assert_error(&r, 400, "VALIDATION_ERROR");

    // The resolution became a request_batch.
    let b = s.claim_one("w").await;
    assert_eq!(b["kind"], "request_batch");
    assert_eq!(b["items"][0]["sourceKind"], "request_resolved");
    assert_eq!(b["items"][0]["sourceId"], cid);
    assert_eq!(b["items"][0]["senderId"], "user:primary");
    assert_eq!(
        b["compiledContent"],
        "[Request resolved: \"Pick\"] Selected: a, b"
    );
    assert_eq!(s.complete(&b, "w").await.status, 204);

    // text_input by the backend; form; cancel.
    let t = s.create_request(&c, json!({ "type": "text_input", "title": "Name?", "body": "Tell me", "config": { "placeholder": "name", "validation": { "minLength": 2, "pattern": "^[a-z]+$" } } })).await;
    assert_eq!(t.status, 201, "{}", t.text);
    let tid = t.body["id"].as_str().unwrap().to_string();
    assert_eq!(s.resolve(&tid, json!({ "text": "A" })).await.status, 400);
    assert_eq!(s.resolve(&tid, json!({ "text": "   " })).await.status, 400);
    let r = s
        .resolve(&tid, json!({ "text": " bob ", "resolvedBy": "backend" }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["resolved_by"], "backend");
    let b = s.claim_one("w").await;
    assert_eq!(b["items"][0]["senderId"], "backend");
    assert_eq!(
        b["compiledContent"],
        "[Request resolved: \"Name?\"] Response: bob"
    );
    s.complete(&b, "w").await;

    let f = s
        .create_request(
            &c,
            json!({ "type": "form", "title": "Form", "config": { "fields": [
            { "name": "who", "type": "text", "required": true },
            { "name": "ok", "type": "checkbox" },
            { "name": "pick", "type": "select", "options": ["x", "y"] },
            { "name": "many", "type": "multiselect", "options": ["x", "y"] }
        ], "submitLabel": "Send" } }),
        )
        .await;
    assert_eq!(f.status, 201, "{}", f.text);
    let fid = f.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        s.resolve(&fid, json!({ "values": { "ok": true } }))
            .await
            .status,
        400,
        "required missing"
    );
    assert_eq!(
        s.resolve(&fid, json!({ "values": { "who": "me", "zzz": 1 } }))
            .await
            .status,
        400,
        "unknown field"
    );
    assert_eq!(
        s.resolve(&fid, json!({ "values": { "who": "me", "ok": "yes" } }))
            .await
            .status,
        400,
        "checkbox type"
    );
    assert_eq!(
        s.resolve(&fid, json!({ "values": { "who": "me", "pick": "z" } }))
            .await
            .status,
        400,
        "select option"
    );
    assert_eq!(
        s.resolve(
            &fid,
            json!({ "values": { "who": "me", "many": ["x", "q"] } })
        )
        .await
        .status,
        400,
        "multiselect"
    );
    let r = s
        .resolve(
            &fid,
            json!({ "values": { "who": "me", "ok": true, "many": ["y"] } }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let b = s.claim_one("w").await;
    assert_eq!(
        b["compiledContent"],
        "[Request resolved: \"Form\"] Form values: {\"many\":[\"y\"],\"ok\":true,\"who\":\"me\"}"
    );
    s.complete(&b, "w").await;

    let x = s.create_request(&c, json!({ "type": "choice", "title": "Later", "config": { "options": [{ "id": "a", "label": "A" }] } })).await;
    let xid = x.body["id"].as_str().unwrap().to_string();
    let r = s
        .patch_request(&xid, json!({ "title": "Sooner", "body": null }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["title"], "Sooner");
    let r = s.patch_request(&xid, json!({ "status": "resolved" })).await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let r = s.cancel_request(&xid).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "cancelled");
    assert_eq!(
        s.claim("w", 300).await.status,
        204,
        "cancel does not dispatch"
    );
    let r = s.cancel_request("AAAAAAAAAAAAAAAAAAAAA").await;
    assert_error(&r, 404, "NOT_FOUND");

    // Listing by status.
    assert_eq!(
        s.requests(&c, "").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        s.requests(&c, "?status=all").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        s.requests(&c, "?status=resolved").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        s.requests(&c, "?status=cancelled").await.body["data"][0]["id"],
        xid
    );
    assert_eq!(s.requests(&c, "?status=bogus").await.status, 400);
    assert_eq!(s.chat(&c).await.body["pending_requests_count"], 0);
}

#[tokio::test]
async fn request_idempotency() {
    let s = TestApp::with_fast_dispatch(&[]);
    let c = s.new_chat("echo").await;
    let path = format!("/api/v1/chats/{c}/requests");
    let body = json!({ "type": "choice", "title": "Q", "config": { "options": [{ "id": "a", "label": "A" }] } });
    let send = |key: &str, b: serde_json::Value| {
        s.send(
            s.client
                .post(s.url(&path))
                .header("Idempotency-Key", key)
                .json(&b),
        )
    };
    let a = send("r1", body.clone()).await;
    assert_eq!(a.status, 201);
    let b = send("r1", body.clone()).await;
    assert_eq!(b.status, 201);
    assert_eq!(a.body, b.body);
    let r = s.requests(&c, "?status=all").await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    let r = send("r1", json!({ "type": "choice", "title": "Other", "config": { "options": [{ "id": "a", "label": "A" }] } })).await;
    assert_error(&r, 409, "CONFLICT");
    let r = send("", body.clone()).await;
    assert_error(&r, 400, "VALIDATION_ERROR");
}

/// PostgreSQL's text cannot hold NUL: there a message with one is refused as the input's fault
/// (400, nothing written), on SQLite it is stored as sent. Runs on both, asserting each.
#[tokio::test]
async fn a_nul_character_is_stored_on_sqlite_and_refused_on_postgres() {
    let s = TestApp::with_fast_dispatch(&[]);
    let c = s.new_chat("echo").await;
    let r = s.post_message(&c, user_message("a\u{0}b")).await;
    if on_postgres() {
        assert_error(&r, 400, "VALIDATION_ERROR");
        assert!(r.text.contains("NUL"), "{}", r.text);
        assert!(s.messages(&c).await.is_empty(), "nothing half-written");
        // The connection it failed on still works.
        s.post_user(&c, "after").await;
    } else {
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.body["content_final"], "a\u{0}b");
    }
}
