//! Chat and dispatch API: the dispatch state machine, modes, batching, leases, retries.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

#[tokio::test]
async fn batch_payload_and_empty_claims() {
    let s = TestApp::with_fast_dispatch(&[]);
    // Nothing to claim: 204, no body, after about waitMs.
    let t = Instant::now();
    let r = s.claim("w1", 400).await;
    assert_eq!(r.status, 204);
    assert!(r.text.is_empty());
    assert!(
        t.elapsed() >= Duration::from_millis(380),
        "{:?}",
        t.elapsed()
    );
    let r = s.claim("w1", 0).await;
    assert_eq!(r.status, 204);

    let c = s.new_chat("echo").await;
    let mid = s
        .post_message(&c, json!({ "role": "user", "senderId": "user:primary", "content": " hi there ", "trace": { "kind": "voice", "mediaIds": ["m1"] } }))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = s.claim_one("w1").await;
    assert_eq!(b["batchId"].as_str().unwrap().len(), 21);
    assert_eq!(b["chatId"], c);
    assert_eq!(b["kind"], "user_batch");
    assert_eq!(b["agentIdHint"], "echo");
    assert_eq!(b["compiledContent"], "hi there");
    assert_eq!(b["attachments"], json!([]));
    let it = &b["items"][0];
    assert_eq!(it["sourceKind"], "user_message");
    assert_eq!(it["sourceId"], mid);
    assert_eq!(it["senderId"], "user:primary");
    assert_eq!(it["content"], "hi there");
    assert_eq!(it["traceKind"], "voice");
    assert_eq!(it["mediaIds"], json!(["m1"]));
    assert_eq!(it["attachmentNames"], json!([]));
    assert_eq!(it["inputId"].as_str().unwrap().len(), 21);
    assert!(b.get("attemptCount").is_none());
    assert_eq!(s.complete(&b, "w1").await.status, 204);

    // An attachment-only message compiles to "(no text)".
    s.post_message(
        &c,
        json!({ "role": "user", "senderId": "user:primary", "trace": { "mediaIds": ["m2"] } }),
    )
    .await;
    let b = s.claim_one("w1").await;
    assert_eq!(b["compiledContent"], "(no text)");
    assert!(b["items"][0].get("traceKind").is_none());
}

#[tokio::test]
async fn dispatch_validation_and_lease_errors() {
    let s = TestApp::with_fast_dispatch(&[("DISPATCH_MODE", "immediate")]);
    let r = s.claim_with(json!({})).await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    assert_eq!(
        r.body["error"]["details"]["fieldErrors"]["workerId"][0],
        "Required"
    );
    let r = s.claim_with(json!({ "workerId": "w", "waitMs": -1 })).await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let r = s.claim_many(json!({ "workerId": "w", "limit": 0 })).await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let unknown = "AAAAAAAAAAAAAAAAAAAAA";
    for op in ["heartbeat", "complete"] {
        let r = s
            .post(
                &format!("/api/v1/dispatch/{unknown}/{op}"),
                json!({ "workerId": "w" }),
            )
            .await;
        assert_error(&r, 404, "NOT_FOUND");
        assert_eq!(r.body["error"]["message"], "Dispatch batch not found.");
    }
    let r = s
        .fail_with(
            &unknown,
            json!({ "workerId": "w", "reason": "x", "retryable": true }),
        )
        .await;
    assert_error(&r, 404, "NOT_FOUND");

    let c = s.new_chat("echo").await;
    s.post_user(&c, "one").await;
    let b = s.claim_one("w").await;
    let id = b["batchId"].as_str().unwrap();
    let r = s
        .fail_with(&id, json!({ "workerId": "w", "reason": "x" }))
        .await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    assert!(r.body["error"]["details"]["fieldErrors"]["retryable"].is_array());
    let r = s
        .fail_with(
            &id,
            json!({ "workerId": "w", "reason": "   ", "retryable": true }),
        )
        .await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let r = s.heartbeat(&id, json!({ "workerId": "other" })).await;
    assert_error(&r, 409, "CONFLICT");
    assert_eq!(
        r.body["error"]["message"],
        "Dispatch lease is no longer owned by this worker."
    );
    assert_eq!(
        r.body["error"]["details"],
        json!({ "batchId": id, "workerId": "other" })
    );
    let r = s
        .heartbeat(&id, json!({ "workerId": "w", "extendMs": 5000 }))
        .await;
    assert_eq!(r.status, 204);
    assert!(r.text.is_empty());
    assert_eq!(s.complete(&b, "other").await.status, 409);
    assert_eq!(s.complete(&b, "w").await.status, 204);
    let r = s.complete(&b, "w").await;
    assert_error(&r, 409, "CONFLICT");
    assert_eq!(s.fail(&b, "w", true, None).await.status, 409);
}

#[tokio::test]
async fn batching_window_debounce_and_typing() {
    let s = TestApp::with_fast_dispatch(&[
        ("DISPATCH_BATCH_DEBOUNCE_MS", "300"),
        ("DISPATCH_TYPING_GRACE_MS", "1200"),
    ]);
    let c = s.new_chat("echo").await;
    let t0 = Instant::now();
    s.post_user(&c, "first").await;
    s.post_user(&c, "second").await;
    // Sealed at the debounce deadline, not before.
    assert_eq!(s.claim("w", 0).await.status, 204);
    let b = s.claim_one("w").await;
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(280), "{waited:?}");
    assert!(waited < Duration::from_millis(2500), "{waited:?}");
    assert_eq!(b["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        b["compiledContent"],
        "[Message 1]\nfirst\n\n[Message 2]\nsecond"
    );

    // Typing after the first pending input holds the batch for the grace period.
    let t1 = Instant::now();
    s.post_user(&c, "third").await;
    assert_eq!(s.user_typing(&c).await.status, 204);
    s.complete(&b, "w").await;
    assert_eq!(
        s.claim("w", 700).await.status,
        204,
        "sealed during typing grace"
    );
    let b2 = s.claim_one("w").await;
    assert!(
        t1.elapsed() >= Duration::from_millis(1150),
        "{:?}",
        t1.elapsed()
    );
    assert_eq!(b2["compiledContent"], "third");
    // A follow-up during the lease waits and becomes its own next batch.
    s.post_user(&c, "fourth").await;
    assert_eq!(
        s.claim("w", 800).await.status,
        204,
        "chat has a leased batch"
    );
    s.complete(&b2, "w").await;
    let b3 = s.claim_one("w").await;
    assert_eq!(b3["compiledContent"], "fourth");
}

#[tokio::test]
async fn max_batch_wait_seals_despite_typing() {
    let s = TestApp::with_fast_dispatch(&[
        ("DISPATCH_BATCH_DEBOUNCE_MS", "200"),
        ("DISPATCH_TYPING_GRACE_MS", "5000"),
        ("DISPATCH_MAX_BATCH_WAIT_MS", "900"),
    ]);
    let c = s.new_chat("echo").await;
    let t = Instant::now();
    s.post_user(&c, "x").await;
    s.user_typing(&c).await;
    let b = s.claim_one("w").await;
    assert!(
        t.elapsed() >= Duration::from_millis(850),
        "{:?}",
        t.elapsed()
    );
    assert!(
        t.elapsed() < Duration::from_millis(4000),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(b["compiledContent"], "x");
}

#[tokio::test]
async fn two_workers_race_for_one_batch() {
    let s = TestApp::with_fast_dispatch(&[("DISPATCH_MODE", "immediate")]);
    let c = s.new_chat("echo").await;
    let (a, b, _) = tokio::join!(
        s.claim_with(json!({ "workerId": "wa", "waitMs": 3000, "leaseMs": 30000 })),
        s.claim_with(json!({ "workerId": "wb", "waitMs": 1500, "leaseMs": 30000 })),
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            s.post_user(&c, "only one").await
        }
    );
    let statuses = [a.status, b.status];
    assert!(
        statuses.contains(&200) && statuses.contains(&204),
        "{statuses:?}"
    );
    // Many concurrent claimers, several batches: each batch goes to exactly one.
    for i in 0..5 {
        s.post_user(&c, &format!("m{i}")).await;
    }
    let claims = (0..10).map(|i| {
        let w = format!("w{i}");
        let sr = &s;
        async move { sr.claim(&w, 0).await }
    });
    let got = futures_util::future::join_all(claims).await;
    let mut ids: Vec<String> = got
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.body["batchId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5);
}

#[tokio::test]
async fn waiting_claim_wakes_at_once() {
    let s = TestApp::with_fast_dispatch(&[("DISPATCH_MODE", "immediate")]);
    let c = s.new_chat("echo").await;
    let (r, posted_at) = tokio::join!(s.claim("w", 10_000), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.post_user(&c, "wake").await;
        Instant::now()
    });
    assert_eq!(r.status, 200);
    assert!(
        posted_at.elapsed() < Duration::from_millis(400),
        "claim answered {:?} after the post",
        posted_at.elapsed()
    );
}

#[tokio::test]
async fn lease_expires_mid_work() {
    let s = TestApp::with_fast_dispatch(&[("DISPATCH_MODE", "immediate")]);
    let c = s.new_chat("echo").await;
    s.post_user(&c, "slow").await;
    let b = s.claim_one("dead").await;
    let id = b["batchId"].as_str().unwrap().to_string();
    // A heartbeat keeps it; then silence lets it expire (lease 1000 ms).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        s.heartbeat(&id, json!({ "workerId": "dead" })).await.status,
        204
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        s.claim("other", 0).await.status,
        204,
        "still leased after the heartbeat"
    );
    // Another worker gets it as soon as the lease ends.
    let t = Instant::now();
    let again = s.claim_one("other").await;
    assert_eq!(again["batchId"], id.as_str());
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    let r = s.complete(&id, "dead").await;
    assert_error(&r, 409, "CONFLICT");
    assert_eq!(s.complete(&again, "other").await.status, 204);
}

#[tokio::test]
async fn retry_delays() {
    let s = TestApp::with_fast_dispatch(&[
        ("DISPATCH_MODE", "sequential"),
        ("DISPATCH_RETRY_BASE_MS", "400"),
    ]);
    let c = s.new_chat("echo").await;
    s.post_user(&c, "a").await;
    s.post_user(&c, "b").await;
    let b = s.claim_one("w").await;
    assert_eq!(b["compiledContent"], "a");
    // Explicit delay; the retried batch blocks the chat's later one.
    let t = Instant::now();
    assert_eq!(s.fail(&b, "w", true, Some(700)).await.status, 204);
    assert_eq!(s.claim("w", 300).await.status, 204);
    let again = s.claim_one("w").await;
    assert_eq!(again["batchId"], b["batchId"]);
    assert!(
        t.elapsed() >= Duration::from_millis(680),
        "{:?}",
        t.elapsed()
    );
    assert!(
        t.elapsed() < Duration::from_millis(1600),
        "{:?}",
        t.elapsed()
    );
    // Default backoff: base * 2^(attempt-1) = 400 * 2 = 800 ms on the second attempt.
    let t = Instant::now();
    s.fail(&again, "w", true, None).await;
    let third = s.claim_one("w").await;
    assert_eq!(third["batchId"], b["batchId"]);
    assert!(
        t.elapsed() >= Duration::from_millis(780),
        "{:?}",
        t.elapsed()
    );
    s.complete(&third, "w").await;
    let next = s.claim_one("w").await;
    assert_eq!(next["compiledContent"], "b");
}

#[tokio::test]
async fn max_attempts_and_terminal_failures() {
    let s = TestApp::with_fast_dispatch(&[
        ("DISPATCH_MODE", "immediate"),
        ("DISPATCH_MAX_ATTEMPTS", "2"),
    ]);
    let c = s.new_chat("echo").await;
    let mut ev = s.events("", None).await;
    s.post_user(&c, "doomed").await;
    let b = s.claim_one("w").await;
    s.fail(&b, "w", true, Some(0)).await;
    let b = s.claim_one("w").await;
    assert_eq!(s.fail(&b, "w", true, Some(0)).await.status, 204);
    assert_eq!(s.claim("w", 300).await.status, 204, "no third attempt");
    let msgs = s.messages(&c).await;
    let sys = &msgs[0];
    assert_eq!(sys["role"], "system");
    assert_eq!(sys["sender_id"], "system");
    assert_eq!(
        sys["content_final"],
        "Dispatch failed after 2 attempts: bad input"
    );
    assert_eq!(sys["trace"], json!({ "dispatchFailure": true }));
    assert_eq!(s.chat(&c).await.body["unread_count"], 1);
    let e = ev
        .next_matching(Duration::from_secs(5), |e| {
            e.event == "message.created" && e.data["payload"]["role"] == "system"
        })
        .await;
    assert!(e.is_some());

    // Not retryable: terminal at once.
    s.post_user(&c, "bad").await;
    let b = s.claim_one("w").await;
    s.fail(&b, "w", false, None).await;
    assert_eq!(
        s.messages(&c).await[0]["content_final"],
        "Dispatch failed after 1 attempts: bad input"
    );
}

#[tokio::test]
async fn expired_leases_count_as_attempts() {
    let s = TestApp::with_fast_dispatch(&[
        ("DISPATCH_MODE", "immediate"),
        ("DISPATCH_MAX_ATTEMPTS", "2"),
    ]);
    let c = s.new_chat("echo").await;
    s.post_user(&c, "kills workers").await;
    let first = s.claim_one("w1").await;
    let second = s.claim_one("w2").await; // after w1's lease expired
    assert_eq!(first["batchId"], second["batchId"]);
    let ok = wait_until(Duration::from_secs(5), || async {
        s.messages(&c)
            .await
            .iter()
            .any(|m| m["content_final"] == "Dispatch failed after 2 attempts: lease expired")
    })
    .await;
    assert!(ok, "{:?}", s.messages(&c).await);
    assert_eq!(s.claim("w3", 200).await.status, 204);
}

#[tokio::test]
async fn per_chat_ordering_by_mode() {
    // immediate: a chat's batches may run in parallel.
    let s = TestApp::with_fast_dispatch(&[("DISPATCH_MODE", "immediate")]);
    let c = s.new_chat("echo").await;
    s.post_user(&c, "1").await;
    s.post_user(&c, "2").await;
    let a = s.claim_one("w").await;
    let b = s.claim_one("w").await;
    assert_eq!(
        (a["compiledContent"].as_str(), b["compiledContent"].as_str()),
        (Some("1"), Some("2"))
    );
    drop(s);

    // sequential: one at a time per chat, in order; other chats are not blocked.
    let s = TestApp::with_fast_dispatch(&[("DISPATCH_MODE", "sequential")]);
    let c = s.new_chat("echo").await;
    let d = s.new_chat("echo").await;
    s.post_user(&c, "c1").await;
    s.post_user(&c, "c2").await;
    s.post_user(&d, "d1").await;
    let r = s
        .claim_many(json!({ "workerId": "w", "limit": 10, "waitMs": 0 }))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got: Vec<&str> = r.body["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["compiledContent"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["c1", "d1"]);
    assert_eq!(s.claim("w", 200).await.status, 204);
    let first = r.body["batches"][0].clone();
    s.complete(&first, "w").await;
    assert_eq!(s.claim_one("w").await["compiledContent"], "c2");
    drop(s);

    // batched_sequential: the same rule across batches.
    let s = TestApp::with_fast_dispatch(&[]);
    let c = s.new_chat("echo").await;
    s.post_user(&c, "x1").await;
    let b1 = s.claim_one("w").await;
    s.post_user(&c, "x2").await;
    assert_eq!(s.claim("w", 500).await.status, 204);
    s.fail(&b1, "w", true, Some(0)).await;
    assert_eq!(
        s.claim_one("w").await["compiledContent"],
        "x1",
        "the retry goes first"
    );
}

#[tokio::test]
async fn claim_many_limits() {
    let s = TestApp::with_fast_dispatch(&[
        ("DISPATCH_MODE", "immediate"),
        ("DISPATCH_CLAIM_MANY_LIMIT", "3"),
    ]);
    let c = s.new_chat("echo").await;
    for i in 0..5 {
        s.post_user(&c, &format!("{i}")).await;
    }
    let r = s.claim_many(json!({ "workerId": "w", "limit": 50 })).await;
    assert_eq!(r.body["batches"].as_array().unwrap().len(), 3);
    let r = s.claim_many(json!({ "workerId": "w", "limit": 1 })).await;
    assert_eq!(r.body["batches"].as_array().unwrap().len(), 1);
    let r = s.claim_many(json!({ "workerId": "w" })).await;
    assert_eq!(r.body["batches"].as_array().unwrap().len(), 1);
    let r = s
        .claim_many(json!({ "workerId": "w", "waitMs": 100 }))
        .await;
    assert_eq!(r.status, 204);
    assert!(r.text.is_empty());
}

#[tokio::test]
async fn scoped_claims() {
    let s = TestApp::with_fast_dispatch(&[("DISPATCH_MODE", "immediate")]);
    let c = s.new_chat("echo").await;
    let r = s
        .create_chat(json!({ "agentIds": ["assistant", "echo"] }))
        .await;
    let d = r.body["id"].as_str().unwrap().to_string();
    s.post_user(&c, "for c").await;
    s.post_user(&d, "for d").await;
    let r = s
        .claim_with(json!({ "workerId": "w", "chatId": d, "waitMs": 0 }))
        .await;
    assert_eq!(r.body["compiledContent"], "for d");
    assert_eq!(r.body["agentIdHint"], "assistant");
    assert_eq!(
        s.claim_with(json!({ "workerId": "w", "chatId": d, "waitMs": 0 }))
            .await
            .status,
        204
    );
    assert_eq!(
        s.claim_with(json!({ "workerId": "w", "agentId": "assistant", "waitMs": 0 }))
            .await
            .status,
        204
    );
    let r = s
        .claim_with(json!({ "workerId": "w", "agentId": "echo", "waitMs": 0 }))
        .await;
    assert_eq!(r.body["chatId"], c);
    // A scoped waiter wakes for its own chat only.
    let (r, _) = tokio::join!(
        s.claim_with(json!({ "workerId": "w", "chatId": c, "waitMs": 3000 })),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            s.post_user(&d, "not yours").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            s.post_user(&c, "yours").await;
        }
    );
    assert_eq!(r.body["compiledContent"], "yours");
}

/// The reference's minimal agent loop (section 11), over plain HTTP.
#[tokio::test]
async fn minimal_agent_loop() {
    let s = TestApp::with_fast_dispatch(&[]);
    let c = s.new_chat("echo").await;
    let agent = {
        let url = s.url("");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let post = |p: String, b: serde_json::Value| {
                http.post(format!("{url}/api/v1{p}")).json(&b).send()
            };
            let w = "loop-worker";
            let mut handled = 0;
            while handled < 2 {
                let r = post(
                    "/dispatch/claim".into(),
                    json!({ "workerId": w, "waitMs": 10000 }),
                )
                .await
                .unwrap();
                if r.status() == 204 {
                    continue;
                }
                let b: serde_json::Value = r.json().await.unwrap();
                let (chat, id) = (
                    b["chatId"].as_str().unwrap().to_string(),
                    b["batchId"].as_str().unwrap().to_string(),
                );
                assert_eq!(
                    post(
                        format!("/chats/{chat}/typing"),
                        json!({ "agentId": "echo" })
                    )
                    .await
                    .unwrap()
                    .status(),
                    204
                );
                assert_eq!(
                    post(
                        format!("/dispatch/{id}/heartbeat"),
                        json!({ "workerId": w })
                    )
                    .await
                    .unwrap()
                    .status(),
                    204
                );
                let text = b["compiledContent"].as_str().unwrap().to_string();
                if handled == 0 {
                    let r = post(format!("/chats/{chat}/messages"), json!({ "role": "agent", "senderId": "echo", "content": format!("echo: {text}") })).await.unwrap();
                    assert_eq!(r.status(), 201);
                } else {
                    let m: serde_json::Value = post(
                        format!("/chats/{chat}/messages"),
                        json!({ "role": "agent", "senderId": "echo", "streaming": true }),
                    )
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                    let mid = m["id"].as_str().unwrap();
                    for word in text.split(' ') {
                        assert_eq!(
                            post(
                                format!("/messages/{mid}/chunks"),
                                json!({ "deltaText": format!("{word} ") })
                            )
                            .await
                            .unwrap()
                            .status(),
                            200
                        );
                    }
                    assert_eq!(
                        post(format!("/messages/{mid}/complete"), json!({}))
                            .await
                            .unwrap()
                            .status(),
                        200
                    );
                }
                assert_eq!(
                    post(format!("/dispatch/{id}/complete"), json!({ "workerId": w }))
                        .await
                        .unwrap()
                        .status(),
                    204
                );
                handled += 1;
            }
        })
    };
    s.post_user(&c, "hello agent").await;
    let ok = wait_until(Duration::from_secs(10), || async {
        s.messages(&c)
            .await
            .iter()
            .any(|m| m["content_final"] == "echo: hello agent")
    })
    .await;
    assert!(ok);
    s.post_user(&c, "stream this").await;
    tokio::time::timeout(Duration::from_secs(15), agent)
        .await
        .unwrap()
        .unwrap();
    let msgs = s.messages(&c).await;
    assert_eq!(msgs[0]["content_final"], "stream this ");
    assert_eq!(msgs[0]["stream_state"], "complete");
}

#[tokio::test]
async fn disconnected_claim_stops_waiting() {
    let s = TestApp::with_fast_dispatch(&[("DISPATCH_MODE", "immediate")]);
    let c = s.new_chat("echo").await;
    // A claimer that gives up (its connection closes) must not take the next batch.
    let gone = s
        .client
        .post(s.url("/api/v1/dispatch/claim"))
        .json(&json!({ "workerId": "gone", "waitMs": 5000 }))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gone.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.post_user(&c, "for the living").await;
    let r = s.claim("alive", 2000).await;
    assert_eq!(r.status, 200, "the batch went to a disconnected claimer");
}

#[tokio::test]
async fn mixed_batch_and_huge_numbers() {
    let s = TestApp::with_fast_dispatch(&[("DISPATCH_BATCH_DEBOUNCE_MS", "300")]);
    let c = s.new_chat("echo").await;
    let r = s
        .create_request(
            &c,
            json!({ "type": "text_input", "title": "Why?", "config": {} }),
        )
        .await;
    let rid = r.body["id"].as_str().unwrap().to_string();
    s.post_user(&c, "first").await;
    assert_eq!(
        s.resolve(&rid, json!({ "text": "because" })).await.status,
        200
    );
    let b = s
        .claim_with(json!({ "workerId": "w", "waitMs": 5000, "leaseMs": u64::MAX }))
        .await;
    assert_eq!(b.status, 200, "{}", b.text);
    assert_eq!(
        b.body["kind"], "user_batch",
        "mixed inputs make a user batch"
    );
    assert_eq!(
        b.body["compiledContent"],
        "[Message 1]\nfirst\n\n[Message 2]\n[Request resolved: \"Why?\"] Response: because"
    );
    let id = b.body["batchId"].as_str().unwrap();
    let r = s
        .heartbeat(&id, json!({ "workerId": "w", "extendMs": u64::MAX }))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        s.claim("other", 0).await.status,
        204,
        "the lease still holds"
    );
    let r = s
        .fail_with(
            &id,
            json!({ "workerId": "w", "reason": "x", "retryable": true, "retryDelayMs": u64::MAX }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .claim_with(json!({ "workerId": "w", "waitMs": 1e300 }))
        .await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    assert_eq!(s.api_health().await.status, 200);
}

/// A follow-up that arrives while its chat's batch is being completed is sealed as soon as the
/// batch is done, not at the next planned deadline (here the 60 s lease): the completion's wake
/// must reach the scheduler even when the scheduler's pass is running at that moment (a lost
/// wake once held a worker's answer to a resolved request for 30 s). The crossing is a matter
/// of thread timing, so this drives many of them rather than one; the rule itself is checked
/// deterministically in `store::dispatch::scheduler`'s unit test.
#[tokio::test]
async fn a_follow_up_during_the_completion_is_sealed_at_once() {
    let s = TestApp::with_fast_dispatch(&[
        ("DISPATCH_BATCH_DEBOUNCE_MS", "0"),
        ("DISPATCH_LEASE_MS", "60000"),
    ]);
    // Several chats at once, so that scheduler passes and completions keep crossing.
    let chats = (0..6).map(|k| {
        let s = &s;
        async move {
            let c = s.new_chat("echo").await;
            let w = format!("w{k}");
            s.post_user(&c, "m0").await;
            let mut held = s
                .claim_with(json!({ "workerId": w, "waitMs": 5000, "chatId": c }))
                .await
                .body;
            for i in 1..=40u64 {
                let text = format!("m{i}");
                let (_, done) = tokio::join!(s.post_user(&c, &text), async {
                    tokio::time::sleep(Duration::from_micros(100 * i)).await;
                    s.complete(&held, &w).await
                });
                assert_eq!(done.status, 204, "{}", done.text);
                let r = s
                    .claim_with(json!({ "workerId": w, "waitMs": 5000, "chatId": c }))
                    .await;
                assert_eq!(
                    r.status, 200,
                    "chat {k}: follow-up {i} was not sealed within 5 s of the completion"
                );
                assert_eq!(r.body["compiledContent"], text);
                held = r.body;
            }
        }
    });
    futures_util::future::join_all(chats).await;
}
