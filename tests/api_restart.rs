//! Chat and dispatch API: kill -9 and restart keep every acknowledged write and the lease rules.

mod api_support;
mod common;

use std::time::Duration;

use api_support::*;
use serde_json::json;

#[tokio::test]
async fn kill9_keeps_acknowledged_data_and_leases() {
    let env = [
        ("DISPATCH_BATCH_DEBOUNCE_MS", "1500"),
        ("DISPATCH_MAX_ATTEMPTS", "5"),
    ];
    let s = server(&env);
    let mut ev = sse(&s, "", None).await;
    let a = chat(&s).await;
    let b = chat(&s).await;
    let c = chat(&s).await;
    let first_event = next_matching(&mut ev, Duration::from_secs(5), |_| true)
        .await
        .unwrap()
        .id;
    user_msg(&s, &a, "long lease").await;
    user_msg(&s, &b, "short lease").await;
    let ba = claim_with(
        &s,
        json!({ "workerId": "wa", "chatId": a, "waitMs": 5000, "leaseMs": 60000 }),
    )
    .await;
    assert_eq!(ba.status, 200, "{}", ba.text);
    let bb = claim_with(
        &s,
        json!({ "workerId": "wb", "chatId": b, "waitMs": 5000, "leaseMs": 1000 }),
    )
    .await;
    assert_eq!(bb.status, 200, "{}", bb.text);
    // Pending input (its window still open) and a half-streamed answer at the moment of the crash.
    user_msg(&s, &c, "pending at crash").await;
    let m = s
        .post(
            &format!("/api/v1/chats/{a}/messages"),
            json!({ "role": "agent", "senderId": "echo", "streaming": true }),
        )
        .await;
    let mid = m.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        s.post(
            &format!("/api/v1/messages/{mid}/chunks"),
            json!({ "deltaText": "half" })
        )
        .await
        .status,
        200
    );
    let before: Vec<String> = messages(&s, &a)
        .await
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    drop(ev);

    let dir = s.kill9();
    let s = builder(&env).in_dir(dir).start();

    // Every acknowledged message is there, the stream included.
    let after: Vec<String> = messages(&s, &a)
        .await
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(before, after);
    assert_eq!(messages(&s, &a).await[0]["content_partial"], "half");
    assert_eq!(messages(&s, &c).await.len(), 1);
    // A live lease survives the restart: its owner can still finish.
    let r = s
        .post(
            &format!(
                "/api/v1/dispatch/{}/heartbeat",
                ba.body["batchId"].as_str().unwrap()
            ),
            json!({ "workerId": "wa" }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(complete(&s, &ba.body, "wa").await.status, 204);
    // An expired lease comes back to another worker; the dead owner gets 409.
    let again = claim_with(
        &s,
        json!({ "workerId": "wb2", "chatId": b, "waitMs": 5000 }),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["batchId"], bb.body["batchId"]);
    assert_eq!(complete(&s, &bb.body, "wb").await.status, 409);
    // The pending input's window resumes after the restart.
    let pc = claim_with(&s, json!({ "workerId": "wc", "chatId": c, "waitMs": 5000 })).await;
    assert_eq!(pc.status, 200, "{}", pc.text);
    assert_eq!(pc.body["compiledContent"], "pending at crash");
    // The event stream replays from a cursor persisted before the crash.
    let mut rx = sse(&s, &format!("?cursor={first_event}"), None).await;
    let got = collect(&mut rx, Duration::from_millis(800)).await;
    let created: Vec<_> = got.iter().filter(|e| e.event == "chat.created").collect();
    assert_eq!(created.len(), 2, "b and c were created after the cursor");
    assert!(got
        .iter()
        .any(|e| e.event == "message.created" && e.data["payload"]["messageId"] == mid.as_str()));
}
