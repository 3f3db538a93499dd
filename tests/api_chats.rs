//! Chat and dispatch API: health, config, chats, idempotency, error envelopes.

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn health_and_config() {
    let s = TestApp::with_fast_dispatch(&[]);
    let r = s.api_health().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "ok");
    assert!(r.body["uptime"].is_u64());
    let r = s.config().await;
    assert_eq!(r.status, 200);
    let agents = r.body["agents"].as_array().unwrap();
    let echo = agents
        .iter()
        .find(|a| a["id"] == "echo")
        .expect("echo agent");
    assert_eq!(echo["name"], "Echo");
    assert!(echo["description"].as_str().unwrap().contains("Answers"));
    assert_eq!(r.body["models"][0]["id"], "default");
    assert_eq!(r.body["server"]["dispatch"]["mode"], "batched_sequential");
    assert_eq!(r.body["server"]["dispatch"]["leaseMs"], 1000);
    assert_eq!(r.body["server"]["dispatch"]["claim"]["claimManyLimit"], 10);
    assert!(!r.text.contains("instanceSecret\":\""));
}

#[tokio::test]
async fn create_get_list_patch_chats() {
    let s = TestApp::with_fast_dispatch(&[]);
    let r = s
        .create_chat(json!({ "agentIds": ["echo"], "modelId": "default", "title": "  Hello   there  ", "tags": [" a ", "a", "b"] }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let c = r.body.clone();
    assert_eq!(c["id"].as_str().unwrap().len(), 21);
    assert_eq!(c["title"], "Hello   there");
    assert_eq!(c["title_source"], "manual");
    assert_eq!(c["tags"], json!(["a", "b"]));
    assert_eq!(c["agent_ids"], json!(["echo"]));
    assert_eq!(c["model_id"], "default");
    assert_eq!(c["is_archived"], false);
    assert_eq!(c["pending_requests_count"], 0);
    assert!(c["created_at"].as_str().unwrap().ends_with('Z'));
    let id = c["id"].as_str().unwrap();

    // Title from the first message, collapsed and cut to 48 chars; missing modelId → default.
    let long = "word ".repeat(30);
    let r = s
        .create_chat(json!({ "agentIds": ["echo"], "firstMessage": format!("  {long}  ") }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["title"].as_str().unwrap().chars().count(), 48);
    assert_eq!(r.body["title_source"], "default");
    assert_eq!(r.body["model_id"], "default");
    let second = r.body["id"].as_str().unwrap().to_string();
    let msgs = s.messages(&second).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(msgs[0]["content_final"], long.trim());

    let r = s.create_chat(json!({ "agentIds": ["echo"] })).await;
    assert_eq!(r.body["title"], "New Chat");

    let r = s.chat(id).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["id"], id);

    // Pagination: 3 chats, 2 per page.
    let r = s.chats("?limit=2").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(r.body["cursor"]["hasMore"], true);
    let next = r.body["cursor"]["next"].as_str().unwrap().to_string();
    let r2 = s.chats(&format!("?limit=2&cursor={next}")).await;
    assert_eq!(r2.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(r2.body["cursor"]["hasMore"], false);
    assert!(r2.body["cursor"]["next"].is_null());
    let mut all: Vec<String> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(r2.body["data"].as_array().unwrap())
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 3);

    // Filters.
    let r = s.chats("?tag=b").await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    let r = s.chats("?query=HELLO").await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    let r = s.chats("?agentId=assistant").await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 0);

    // Patch.
    let r = s
        .patch_chat(id, json!({ "title": "Renamed", "pinned": true }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["title"], "Renamed");
    assert_eq!(r.body["pinned"], true);
    let r = s.chats("").await;
    assert_eq!(r.body["data"][0]["id"], id, "pinned first");
    let r = s.patch_chat(id, json!({})).await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let r = s.patch_chat(id, json!({ "agentIds": ["assistant"] })).await;
    assert_error(&r, 400, "VALIDATION_ERROR");

    // Archive / unarchive / read / unread.
    for (path, archived) in [("archive", true), ("unarchive", false)] {
        let r = s.chat_action(id, path).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body, json!({ "ok": true }));
        assert_eq!(s.chat(id).await.body["is_archived"], archived);
    }
    s.chat_action(id, "archive").await;
    assert_eq!(
        s.chats("?archived=true").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.chats("?archived=false").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let r = s
        .post_message(
            id,
            json!({ "role": "agent", "senderId": "echo", "content": "hi" }),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(s.chat(id).await.body["unread_count"], 1);
    let r = s.unread_summary().await;
    assert_eq!(r.body["total_unread"], 1, "{}", r.text);
    assert_eq!(r.body["unread_by_agent"]["echo"], 1);
    assert_eq!(s.chat_action(id, "mark-read").await.status, 200);
    let c = s.chat(id).await.body;
    assert_eq!(c["unread_count"], 0);
    assert!(c["last_read_at"].is_string());
    assert_eq!(c["last_message_preview"], "hi");
    assert_eq!(s.chat_action(id, "mark-unread").await.status, 200);
    assert_eq!(s.chat(id).await.body["unread_count"], 1);
    let r = s.pending_summary().await;
    assert_eq!(r.body, json!({ "pending_requests_total": 0 }));
}

#[tokio::test]
async fn chat_errors() {
    let s = TestApp::with_fast_dispatch(&[]);
    let r = s.create_chat(json!({ "modelId": "default" })).await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["message"], "Request validation failed.");
    assert_eq!(
        r.body["error"]["details"]["fieldErrors"]["agentIds"][0],
        "Required"
    );
    assert!(r.body["error"]["details"]["formErrors"].is_array());
    let r = s.create_chat(json!({ "agentIds": ["nope"] })).await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["details"]["field"], "agentIds");
    let r = s
        .create_chat(json!({ "agentIds": ["echo"], "modelId": "gpt-9" }))
        .await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let r = s
        .create_chat(json!({ "agentIds": ["echo"], "title": "   " }))
        .await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let r = s.create_chat(json!([1, 2])).await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let r = s
        .post_raw("/api/v1/chats", "application/json", "{not json")
        .await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    assert_eq!(r.body["error"]["message"], "Malformed JSON in request body");
    assert!(r.body["error"].get("details").is_none());
    // The body is what counts: JSON sent with another content type (`curl -d`) is read.
    let r = s
        .post_raw("/api/v1/chats", "text/plain", "{\"agentIds\":[\"echo\"]}")
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = s
        .post_raw(
            "/api/v1/chats",
            "application/x-www-form-urlencoded",
            "agentIds=echo",
        )
        .await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Content-Type: application/json"),
        "{}",
        r.text
    );
    let r = s.chat("AAAAAAAAAAAAAAAAAAAAA").await;
    assert_error(&r, 404, "NOT_FOUND");
    assert_eq!(
        r.body["error"]["details"]["chatId"],
        "AAAAAAAAAAAAAAAAAAAAA"
    );
    let r = s.chat_action("AAAAAAAAAAAAAAAAAAAAA", "archive").await;
    assert_error(&r, 404, "NOT_FOUND");
    let r = s.get("/api/v1/nothing/here").await;
    assert_error(&r, 404, "NOT_FOUND");
    let r = s.chats("?limit=0").await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let r = s.chats("?cursor=%%%").await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let big = "x".repeat(2_000_000);
    let r = s
        .create_chat(json!({ "agentIds": ["echo"], "title": big }))
        .await;
    assert_error(&r, 413, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn chat_idempotency() {
    let s = TestApp::with_fast_dispatch(&[]);
    let send = |key: &str, body: serde_json::Value| {
        s.send(
            s.client
                .post(s.url("/api/v1/chats"))
                .header("Idempotency-Key", key)
                .json(&body),
        )
    };
    let a = send(
        "k1",
        json!({ "agentIds": ["echo"], "title": "T", "tags": ["x"] }),
    )
    .await;
    assert_eq!(a.status, 201);
    // Same body, keys in another order: the same answer, nothing new.
    let b = send(
        "k1",
        json!({ "tags": ["x"], "title": "T", "agentIds": ["echo"] }),
    )
    .await;
    assert_eq!(b.status, 201);
    assert_eq!(a.body, b.body);
    assert_eq!(s.chats("").await.body["data"].as_array().unwrap().len(), 1);
    let c = send("k1", json!({ "agentIds": ["echo"], "title": "Other" })).await;
    assert_error(&c, 409, "CONFLICT");
    assert_eq!(
        c.body["error"]["message"],
        "Idempotency-Key already used with a different request payload."
    );
    assert_eq!(
        c.body["error"]["details"],
        json!({ "field": "Idempotency-Key", "key": "k1" })
    );
    let d = send("   ", json!({ "agentIds": ["echo"] })).await;
    assert_error(&d, 400, "VALIDATION_ERROR");
    assert_eq!(
        d.body["error"]["message"],
        "Idempotency-Key cannot be empty."
    );
    // A failed call is not remembered.
    let e = send("k2", json!({ "agentIds": ["nope"] })).await;
    assert_eq!(e.status, 400);
    let e = send("k2", json!({ "agentIds": ["echo"] })).await;
    assert_eq!(e.status, 201);
    // Concurrent calls with one key create one chat.
    let calls = (0..8).map(|_| send("k3", json!({ "agentIds": ["echo"], "title": "C" })));
    let replies = futures_util::future::join_all(calls).await;
    let ids: std::collections::HashSet<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 201);
            r.body["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1);
}
