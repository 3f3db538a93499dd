//! The conversations front door (`/conversations`, `/messages/:id`, `/stream/:id`, `/events`)
//! against the real server, with bots answered by real workers started on demand.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{wait_until, Ev, EventStream, TestApp};

async fn new_conversation(server: &TestApp) -> String {
    let r = server
        .create_conversation(json!({"title": "Contract 45AB Support", "participants": ["user_prod7", "user_buyer1"], "metadata": {"contractId": "contract_45ab"}}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["title"], "Contract 45AB Support");
    assert!(r.body["createdAt"].as_str().unwrap().ends_with('Z'));
    r.body["id"].as_str().unwrap().to_string()
}

/// Frames until one that `pred` accepts, which must come within 20 s.
async fn read_until(events: &mut EventStream, pred: impl Fn(&Ev) -> bool) -> Vec<Ev> {
    events
        .until(Duration::from_secs(20), pred)
        .await
        .expect("no such frame within 20 s")
}

#[tokio::test]
async fn participants_talk_and_an_enabled_bot_answers_on_the_stream() {
    let server = TestApp::builder()
        .bundled()
        .env("SSE_PING_INTERVAL_MS", "200")
        .start();
    let conv = new_conversation(&server).await;
    let b = server.set_bot(&conv, "echo", true).await;
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(b.body["bots"], json!(["echo"]));

    let mut events = server
        .conversation_stream(&conv, None)
        .await
        .expect("a stream");
    assert_eq!(events.status, 200);

    let m = server
        .post_to_conversation(&conv, json!({"from": "user_prod7", "to": "user_buyer1", "type": "text", "content": "Shipment is on schedule.",
                   "attachments": [{"url": "https://cdn.example.org/uploads/photo.jpg", "contentType": "image/jpeg"}]}))
        .await;
    assert_eq!(m.status, 201, "{}", m.text);
    assert_eq!(m.body["isAutomated"], false);
    assert_eq!(m.body["attachments"][0]["contentType"], "image/jpeg");

    let seen = read_until(&mut events, |e| {
        e.event == "message" && e.raw.contains("\"isAutomated\":true")
    })
    .await;
    let msgs: Vec<Value> = seen
        .iter()
        .filter(|e| e.event == "message")
        .map(|e| serde_json::from_str(&e.raw).unwrap())
        .collect();
    assert_eq!(msgs[0]["from"], "user_prod7");
    assert_eq!(msgs[0]["conversationId"], conv.as_str());
    assert_eq!(msgs.last().unwrap()["from"], "echo");
    assert_eq!(msgs.last().unwrap()["content"], "Shipment is on schedule.");
    assert!(seen
        .iter()
        .all(|e| e.event != "message" || !e.id.is_empty()));
    // Heartbeats keep coming.
    read_until(&mut events, |e| e.event == "ping").await;

    // History with isAutomated, and read receipts.
    let list = server.conversation_messages(&conv, "?limit=50").await;
    assert_eq!(list.status, 200, "{}", list.text);
    let arr = list.body.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[1]["isAutomated"], true);
    let r = server.mark_conversation_read(&conv, "user_buyer1").await;
    assert_eq!(r.body["marked"], 2, "{}", r.text);
    let list = server.conversation_messages(&conv, "").await;
    assert_eq!(list.body[0]["readBy"][0]["participant"], "user_buyer1");

    // Delivery logs: the bot invocation was delivered, with its reply.
    let logs = server.delivery_logs(&conv).await;
    assert_eq!(logs.status, 200);
    let log = &logs.body["logs"][0];
    assert_eq!(log["bot"], "echo");
    assert_eq!(log["status"], "delivered", "{}", logs.text);
    assert_eq!(log["replyId"], arr[1]["id"]);
}

#[tokio::test]
async fn summaries_pagination_and_replay() {
    let server = TestApp::builder().bundled().start();
    let conv = new_conversation(&server).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let m = server
            .post_to_conversation(
                &conv,
                json!({"from": "user_buyer1", "type": "text", "content": format!("m{i}")}),
            )
            .await;
        ids.push(m.body["id"].as_str().unwrap().to_string());
    }
    let list = server.conversations("?participant=user_prod7").await;
    assert_eq!(list.status, 200);
    let s = &list.body[0];
    assert_eq!(s["id"], conv.as_str());
    assert_eq!(s["unreadCount"], 5);
    assert_eq!(s["lastMessage"]["preview"], "m4");
    assert_eq!(s["contractId"], "contract_45ab");
    assert!(server
        .conversations("?participant=nobody")
        .await
        .body
        .as_array()
        .unwrap()
        .is_empty());

    let page = server
        .conversation_messages(&conv, &format!("?limit=2&before={}", ids[4]))
        .await;
    let contents: Vec<&str> = page
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["m2", "m3"]);
    assert_eq!(page.headers["x-has-more"], "true");

    // Replay from a message id with Last-Event-ID.
    let mut events = server
        .conversation_stream(&conv, Some(&ids[2]))
        .await
        .expect("a stream");
    let seen = read_until(&mut events, |e| e.id == ids[4]).await;
    let replayed: Vec<&str> = seen
        .iter()
        .filter(|e| e.event == "message")
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(replayed, [ids[3].as_str(), ids[4].as_str()]);
}

#[tokio::test]
async fn a_disabled_bot_stays_quiet_and_the_global_feed_records_everything() {
    let server = TestApp::builder().bundled().start();
    let conv = new_conversation(&server).await;
    server.set_bot(&conv, "echo", true).await;
    let off = server.set_bot(&conv, "echo", false).await;
    assert_eq!(off.body["bots"], json!([]));
    server
        .post_to_conversation(
            &conv,
            json!({"from": "user_prod7", "content": "quiet please"}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        server
            .conversation_messages(&conv, "")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(server.delivery_logs(&conv).await.body["logs"]
        .as_array()
        .unwrap()
        .is_empty());

    let feed = server.feed("").await;
    assert_eq!(feed.status, 200);
    let types: Vec<&str> = feed.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "conversation.created",
            "bot.updated",
            "bot.updated",
            "message.created"
        ]
    );
    let after = feed.body["events"][1]["seq"].as_i64().unwrap();
    let rest = server.feed(&format!("?after={after}")).await;
    assert_eq!(rest.body["events"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_bot_that_cannot_start_is_logged_and_answers_later() {
    let broken = json!({"nodes": [{"name": "e", "addon": "echo"}], "runtime": {"command": ["sh", "-c", "exit 4"], "restart": "never"}});
    let server = TestApp::builder()
        .bundled()
        .graph_file("helper", broken)
        .start();
    let conv = new_conversation(&server).await;
    server.set_bot(&conv, "helper", true).await;
    server
        .post_to_conversation(&conv, json!({"from": "user_prod7", "content": "help me"}))
        .await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            server.delivery_logs(&conv).await.body["logs"][0]["status"] == "unavailable"
        })
        .await
    );
    // Fix the bot; the next message starts it and the kept one is answered as well.
    std::fs::write(
        server.root().join("graphs/helper.json"),
        json!({"nodes": [{"name": "e", "addon": "echo"}]}).to_string(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server
        .post_to_conversation(
            &conv,
            json!({"from": "user_prod7", "content": "still there?"}),
        )
        .await;
    assert!(
        wait_until(Duration::from_secs(15), || async {
            let list = server.conversation_messages(&conv, "").await;
            let bot: Vec<String> = list
                .body
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["isAutomated"] == true)
                .map(|m| m["content"].as_str().unwrap().to_string())
                .collect();
            bot.contains(&"help me".to_string()) && bot.contains(&"still there?".to_string())
        })
        .await,
        "the kept message was not answered"
    );
}

#[tokio::test]
async fn validation_and_auth_errors() {
    let server = TestApp::builder()
        .bundled()
        .env("AGENTD_API_KEY", "k")
        .start();
    let r = server.create_conversation(json!({"title": "x"})).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "UNAUTHORIZED");
    let with_key = |req: reqwest::RequestBuilder| req.header("x-api-key", "k");
    let r = server
        .send(
            with_key(server.client.post(server.url("/conversations")))
                .json(&json!({"participants": "me"})),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = server
        .send(
            with_key(server.client.post(server.url("/conversations"))).json(&json!({"title": "t"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let conv = r.body["id"].as_str().unwrap().to_string();
    let r = server
        .send(
            with_key(server.client.post(server.url(&format!("/messages/{conv}"))))
                .json(&json!({"from": "a", "type": "video", "content": "x"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["details"]["field"], "type");
    let r = server
        .send(with_key(server.client.post(server.url(&format!("/messages/{conv}")))).json(&json!({"from": "a", "type": "image", "attachments": [{"contentType": "image/png"}]})))
        .await;
    assert_eq!(r.status, 400);
    let r = server
        .send(
            with_key(
                server
                    .client
                    .post(server.url(&format!("/conversations/{conv}/bots"))),
            )
            .json(&json!({"bot": "ghost", "enabled": true})),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "AGENT_NOT_FOUND");
    let r = server
        .send(with_key(server.client.get(server.url("/messages/nope"))))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "CONVERSATION_NOT_FOUND");
    // Streams accept the key in the query string (EventSource cannot set headers).
    let stream = server
        .open_stream(server.request(reqwest::Method::GET, &format!("/stream/{conv}?token=k")))
        .await
        .expect("a stream");
    assert_eq!(stream.status, 200);
}
