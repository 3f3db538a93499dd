//! Several agentd nodes on one PostgreSQL schema. PostgreSQL only: on SQLite every node has a
//! database file of its own, so there is nothing to share; there each test says so and returns.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{on_postgres, TestApp, TestSchema};

/// Two nodes on one schema, the second on the first's.
fn two_nodes() -> Option<(TestApp, TestApp)> {
    if !on_postgres() {
        eprintln!("skipped: needs PostgreSQL (AGENTD_TEST_DATABASE_URL)");
        return None;
    }
    let node = |schema: Option<&support::TestSchema>| {
        let b = TestApp::builder()
            .bundled()
            .fast_dispatch()
            .env("DISPATCH_MODE", "immediate");
        match schema {
            Some(s) => b.schema(s).start(),
            None => b.start(),
        }
    };
    let a = node(None);
    let b = node(a.schema());
    Some((a, b))
}

#[tokio::test]
async fn a_message_posted_on_one_node_reaches_a_claim_and_a_stream_on_the_other() {
    let Some((a, b)) = two_nodes() else { return };
    let chat = a.new_chat("echo").await;
    // The chat is in the shared tables.
    assert_eq!(b.chat(&chat).await.status, 200);

    let mut stream = b.events("", None).await;
    // A claim waiting on B, long enough that only a wake-up (not its deadline) can end it with
    // the batch; the message goes in on A once the claim waits.
    let claim = b.claim_with(json!({ "workerId": "w-b", "waitMs": 60_000, "chatId": chat }));
    let post = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.post_user(&chat, "hello from A").await
    };
    let (claimed, message) = tokio::join!(claim, post);
    assert_eq!(claimed.status, 200, "{}", claimed.text);
    assert_eq!(claimed.body["chatId"], chat.as_str(), "{}", claimed.text);
    assert_eq!(claimed.body["compiledContent"], "hello from A");

    // B's event stream carries A's event, live.
    let seen = stream
        .next_matching(Duration::from_secs(30), |e| {
            e.event == "message.created" && e.data["payload"]["messageId"] == message.as_str()
        })
        .await;
    assert!(
        seen.is_some(),
        "B never saw A's message: {:?}",
        stream.seen()
    );
}

#[tokio::test]
async fn events_of_both_nodes_replay_from_the_shared_table_on_either() {
    let Some((a, b)) = two_nodes() else { return };
    let mut live = a.events("", None).await;
    let chat = a.new_chat("echo").await;
    let Some(created) = live
        .next_matching(Duration::from_secs(30), |e| e.event == "chat.created")
        .await
    else {
        panic!("no chat.created on A: {:?}", live.seen());
    };
    let one = a.post_user(&chat, "one").await;
    let two = b.post_user(&chat, "two").await;
    // A replay after the chat's creation, on either node, has both messages in commit order.
    for (name, node) in [("A", &a), ("B", &b)] {
        let mut replay = node.events(&format!("?cursor={}", created.id), None).await;
        let mut got = Vec::new();
        while got.len() < 2 {
            let Some(e) = replay
                .next_matching(Duration::from_secs(30), |e| e.event == "message.created")
                .await
            else {
                panic!("replay on {name} ended early: {:?}", replay.seen());
            };
            got.push(
                e.data["payload"]["messageId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        assert_eq!(got, [one.clone(), two.clone()], "replay on {name}");
    }
}

#[tokio::test]
async fn a_node_whose_connections_are_cut_goes_on_without_an_error() {
    if !on_postgres() {
        eprintln!("skipped: needs PostgreSQL (AGENTD_TEST_DATABASE_URL)");
        return;
    }
    let schema = match TestSchema::create() {
        Some(s) => s.expect("a test schema"),
        None => unreachable!("on PostgreSQL"),
    };
    // Its connections carry the schema's name, so the cut below hits this server only.
    let name = schema.name().to_string();
    let s = TestApp::builder()
        .bundled()
        .fast_dispatch()
        .env("DISPATCH_MODE", "immediate")
        .schema(&schema)
        .env(
            "DATABASE_URL",
            format!("{}&application_name={name}", schema.url()),
        )
        .start();
    let chat = s.new_chat("echo").await;
    s.post_user(&chat, "before").await;
    let mut stream = s.events("", None).await;

    // What a database restart or an idle-connection reaper does to every connection.
    support::database::admin_sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{name}'"
    ))
    .expect("terminate the server's connections");

    // Writes and reads go on, on new connections, without an error answer.
    let after = s.post_user(&chat, "after").await;
    let texts: Vec<String> = s
        .messages(&chat)
        .await
        .iter()
        .filter_map(|m| m["content_final"].as_str().map(str::to_string))
        .collect();
    assert!(
        texts.contains(&"before".to_string()) && texts.contains(&"after".to_string()),
        "{texts:?}"
    );
    assert!(
        s.wait_output("opening a new one", Duration::from_secs(30))
            .await,
        "the connections were not cut: {}",
        s.output()
    );
    // The event stream still gets this node's events, and claims still get work.
    assert!(stream
        .next_matching(Duration::from_secs(30), |e| e.data["payload"]["messageId"]
            == after.as_str())
        .await
        .is_some());
    let claimed = s
        .claim_with(json!({ "workerId": "w", "waitMs": 10_000, "chatId": chat }))
        .await;
    assert_eq!(claimed.status, 200, "{}", claimed.text);
}

#[tokio::test]
async fn a_conversation_stream_on_one_node_carries_the_other_nodes_messages() {
    let Some((a, b)) = two_nodes() else { return };
    let conv = a
        .create_conversation(json!({"title": "across", "participants": ["u1", "u2"]}))
        .await;
    assert_eq!(conv.status, 201, "{}", conv.text);
    let conv = conv.body["id"].as_str().unwrap().to_string();
    let mut stream = b.conversation_stream(&conv, None).await.expect("a stream");
    assert_eq!(stream.status, 200);

    // One that fits a notification whole, one too large for one (read back by its seq).
    let large = "x".repeat(20_000);
    for content in ["from A", large.as_str()] {
        let m = a
            .post_to_conversation(
                &conv,
                json!({"from": "u1", "type": "text", "content": content}),
            )
            .await;
        assert_eq!(m.status, 201, "{}", m.text);
        let id = m.body["id"].as_str().unwrap().to_string();
        let seen = stream
            .next_matching(Duration::from_secs(30), |e| {
                e.event == "message" && e.id == id
            })
            .await;
        let Some(seen) = seen else {
            panic!("B's stream never carried A's message: {:?}", stream.seen());
        };
        let body: serde_json::Value = serde_json::from_str(&seen.raw).unwrap();
        assert_eq!(body["content"], content);
    }
}
