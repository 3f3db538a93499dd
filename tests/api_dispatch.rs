//! Chat and dispatch API: the dispatch state machine, modes, batching, leases, retries.

mod api_support;
mod common;

use std::time::{Duration, Instant};

use api_support::*;
use serde_json::json;

#[tokio::test]
async fn batch_payload_and_empty_claims() {
    let s = server(&[]);
    // Nothing to claim: 204, no body, after about waitMs.
    let t = Instant::now();
    let r = claim(&s, "w1", 400).await;
    assert_eq!(r.status, 204);
    assert!(r.text.is_empty());
    assert!(
        t.elapsed() >= Duration::from_millis(380),
        "{:?}",
        t.elapsed()
    );
    let r = claim(&s, "w1", 0).await;
    assert_eq!(r.status, 204);

    let c = chat(&s).await;
    let mid = s
        .post(&format!("/api/v1/chats/{c}/messages"), json!({ "role": "user", "senderId": "user:primary", "content": " hi there ", "trace": { "kind": "voice", "mediaIds": ["m1"] } }))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = claim_one(&s, "w1").await;
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
    assert_eq!(complete(&s, &b, "w1").await.status, 204);

    // An attachment-only message compiles to "(no text)".
    s.post(
        &format!("/api/v1/chats/{c}/messages"),
        json!({ "role": "user", "senderId": "user:primary", "trace": { "mediaIds": ["m2"] } }),
    )
    .await;
    let b = claim_one(&s, "w1").await;
    assert_eq!(b["compiledContent"], "(no text)");
    assert!(b["items"][0].get("traceKind").is_none());
}

#[tokio::test]
async fn dispatch_validation_and_lease_errors() {
    let s = server(&[("DISPATCH_MODE", "immediate")]);
    let r = s.post("/api/v1/dispatch/claim", json!({})).await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    assert_eq!(
        r.body["error"]["details"]["fieldErrors"]["workerId"][0],
        "Required"
    );
    let r = s
        .post(
            "/api/v1/dispatch/claim",
            json!({ "workerId": "w", "waitMs": -1 }),
        )
        .await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let r = s
        .post(
            "/api/v1/dispatch/claim-many",
            json!({ "workerId": "w", "limit": 0 }),
        )
        .await;
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
        .post(
            &format!("/api/v1/dispatch/{unknown}/fail"),
            json!({ "workerId": "w", "reason": "x", "retryable": true }),
        )
        .await;
    assert_error(&r, 404, "NOT_FOUND");

    let c = chat(&s).await;
    user_msg(&s, &c, "one").await;
    let b = claim_one(&s, "w").await;
    let id = b["batchId"].as_str().unwrap();
    let r = s
        .post(
            &format!("/api/v1/dispatch/{id}/fail"),
            json!({ "workerId": "w", "reason": "x" }),
        )
        .await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    assert!(r.body["error"]["details"]["fieldErrors"]["retryable"].is_array());
    let r = s
        .post(
            &format!("/api/v1/dispatch/{id}/fail"),
            json!({ "workerId": "w", "reason": "   ", "retryable": true }),
        )
        .await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let r = s
        .post(
            &format!("/api/v1/dispatch/{id}/heartbeat"),
            json!({ "workerId": "other" }),
        )
        .await;
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
        .post(
            &format!("/api/v1/dispatch/{id}/heartbeat"),
            json!({ "workerId": "w", "extendMs": 5000 }),
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(r.text.is_empty());
    assert_eq!(complete(&s, &b, "other").await.status, 409);
    assert_eq!(complete(&s, &b, "w").await.status, 204);
    let r = complete(&s, &b, "w").await;
    assert_error(&r, 409, "CONFLICT");
    assert_eq!(fail(&s, &b, "w", true, None).await.status, 409);
}

#[tokio::test]
async fn batching_window_debounce_and_typing() {
    let s = server(&[
        ("DISPATCH_BATCH_DEBOUNCE_MS", "300"),
        ("DISPATCH_TYPING_GRACE_MS", "1200"),
    ]);
    let c = chat(&s).await;
    let t0 = Instant::now();
    user_msg(&s, &c, "first").await;
    user_msg(&s, &c, "second").await;
    // Sealed at the debounce deadline, not before.
    assert_eq!(claim(&s, "w", 0).await.status, 204);
    let b = claim_one(&s, "w").await;
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
    user_msg(&s, &c, "third").await;
    assert_eq!(
        s.post(&format!("/api/v1/chats/{c}/user-typing"), json!(null))
            .await
            .status,
        204
    );
    complete(&s, &b, "w").await;
    assert_eq!(
        claim(&s, "w", 700).await.status,
        204,
        "sealed during typing grace"
    );
    let b2 = claim_one(&s, "w").await;
    assert!(
        t1.elapsed() >= Duration::from_millis(1150),
        "{:?}",
        t1.elapsed()
    );
    assert_eq!(b2["compiledContent"], "third");
    // A follow-up during the lease waits and becomes its own next batch.
    user_msg(&s, &c, "fourth").await;
    assert_eq!(
        claim(&s, "w", 800).await.status,
        204,
        "chat has a leased batch"
    );
    complete(&s, &b2, "w").await;
    let b3 = claim_one(&s, "w").await;
    assert_eq!(b3["compiledContent"], "fourth");
}

#[tokio::test]
async fn max_batch_wait_seals_despite_typing() {
    let s = server(&[
        ("DISPATCH_BATCH_DEBOUNCE_MS", "200"),
        ("DISPATCH_TYPING_GRACE_MS", "5000"),
        ("DISPATCH_MAX_BATCH_WAIT_MS", "900"),
    ]);
    let c = chat(&s).await;
    let t = Instant::now();
    user_msg(&s, &c, "x").await;
    s.post(&format!("/api/v1/chats/{c}/user-typing"), json!(null))
        .await;
    let b = claim_one(&s, "w").await;
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
    let s = server(&[("DISPATCH_MODE", "immediate")]);
    let c = chat(&s).await;
    let (a, b, _) = tokio::join!(
        claim_with(
            &s,
            json!({ "workerId": "wa", "waitMs": 3000, "leaseMs": 30000 })
        ),
        claim_with(
            &s,
            json!({ "workerId": "wb", "waitMs": 1500, "leaseMs": 30000 })
        ),
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            user_msg(&s, &c, "only one").await
        }
    );
    let statuses = [a.status, b.status];
    assert!(
        statuses.contains(&200) && statuses.contains(&204),
        "{statuses:?}"
    );
    // Many concurrent claimers, several batches: each batch goes to exactly one.
    for i in 0..5 {
        user_msg(&s, &c, &format!("m{i}")).await;
    }
    let claims = (0..10).map(|i| {
        let w = format!("w{i}");
        let sr = &s;
        async move { claim(sr, &w, 0).await }
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
    let s = server(&[("DISPATCH_MODE", "immediate")]);
    let c = chat(&s).await;
    let (r, posted_at) = tokio::join!(claim(&s, "w", 10_000), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        user_msg(&s, &c, "wake").await;
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
    let s = server(&[("DISPATCH_MODE", "immediate")]);
    let c = chat(&s).await;
    user_msg(&s, &c, "slow").await;
    let b = claim_one(&s, "dead").await;
    let id = b["batchId"].as_str().unwrap().to_string();
    // A heartbeat keeps it; then silence lets it expire (lease 1000 ms).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        s.post(
            &format!("/api/v1/dispatch/{id}/heartbeat"),
            json!({ "workerId": "dead" })
        )
        .await
        .status,
        204
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        claim(&s, "other", 0).await.status,
        204,
        "still leased after the heartbeat"
    );
    // Another worker gets it as soon as the lease ends.
    let t = Instant::now();
    let again = claim_one(&s, "other").await;
    assert_eq!(again["batchId"], id.as_str());
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    let r = s
        .post(
            &format!("/api/v1/dispatch/{id}/complete"),
            json!({ "workerId": "dead" }),
        )
        .await;
    assert_error(&r, 409, "CONFLICT");
    assert_eq!(complete(&s, &again, "other").await.status, 204);
}

#[tokio::test]
async fn retry_delays() {
    let s = server(&[
        ("DISPATCH_MODE", "sequential"),
        ("DISPATCH_RETRY_BASE_MS", "400"),
    ]);
    let c = chat(&s).await;
    user_msg(&s, &c, "a").await;
    user_msg(&s, &c, "b").await;
    let b = claim_one(&s, "w").await;
    assert_eq!(b["compiledContent"], "a");
    // Explicit delay; the retried batch blocks the chat's later one.
    let t = Instant::now();
    assert_eq!(fail(&s, &b, "w", true, Some(700)).await.status, 204);
    assert_eq!(claim(&s, "w", 300).await.status, 204);
    let again = claim_one(&s, "w").await;
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
    fail(&s, &again, "w", true, None).await;
    let third = claim_one(&s, "w").await;
    assert_eq!(third["batchId"], b["batchId"]);
    assert!(
        t.elapsed() >= Duration::from_millis(780),
        "{:?}",
        t.elapsed()
    );
    complete(&s, &third, "w").await;
    let next = claim_one(&s, "w").await;
    assert_eq!(next["compiledContent"], "b");
}

#[tokio::test]
async fn max_attempts_and_terminal_failures() {
    let s = server(&[
        ("DISPATCH_MODE", "immediate"),
        ("DISPATCH_MAX_ATTEMPTS", "2"),
    ]);
    let c = chat(&s).await;
    let mut ev = sse(&s, "", None).await;
    user_msg(&s, &c, "doomed").await;
    let b = claim_one(&s, "w").await;
    fail(&s, &b, "w", true, Some(0)).await;
    let b = claim_one(&s, "w").await;
    assert_eq!(fail(&s, &b, "w", true, Some(0)).await.status, 204);
    assert_eq!(claim(&s, "w", 300).await.status, 204, "no third attempt");
    let msgs = messages(&s, &c).await;
    let sys = &msgs[0];
    assert_eq!(sys["role"], "system");
    assert_eq!(sys["sender_id"], "system");
    assert_eq!(
        sys["content_final"],
        "Dispatch failed after 2 attempts: bad input"
    );
    assert_eq!(sys["trace"], json!({ "dispatchFailure": true }));
    assert_eq!(
        s.get(&format!("/api/v1/chats/{c}")).await.body["unread_count"],
        1
    );
    let e = next_matching(&mut ev, Duration::from_secs(5), |e| {
        e.event == "message.created" && e.data["payload"]["role"] == "system"
    })
    .await;
    assert!(e.is_some());

    // Not retryable: terminal at once.
    user_msg(&s, &c, "bad").await;
    let b = claim_one(&s, "w").await;
    fail(&s, &b, "w", false, None).await;
    assert_eq!(
        messages(&s, &c).await[0]["content_final"],
        "Dispatch failed after 1 attempts: bad input"
    );
}

#[tokio::test]
async fn expired_leases_count_as_attempts() {
    let s = server(&[
        ("DISPATCH_MODE", "immediate"),
        ("DISPATCH_MAX_ATTEMPTS", "2"),
    ]);
    let c = chat(&s).await;
    user_msg(&s, &c, "kills workers").await;
    let first = claim_one(&s, "w1").await;
    let second = claim_one(&s, "w2").await; // after w1's lease expired
    assert_eq!(first["batchId"], second["batchId"]);
    let ok = common::wait_until(Duration::from_secs(5), || async {
        messages(&s, &c)
            .await
            .iter()
            .any(|m| m["content_final"] == "Dispatch failed after 2 attempts: lease expired")
    })
    .await;
    assert!(ok, "{:?}", messages(&s, &c).await);
    assert_eq!(claim(&s, "w3", 200).await.status, 204);
}

#[tokio::test]
async fn per_chat_ordering_by_mode() {
    // immediate: a chat's batches may run in parallel.
    let s = server(&[("DISPATCH_MODE", "immediate")]);
    let c = chat(&s).await;
    user_msg(&s, &c, "1").await;
    user_msg(&s, &c, "2").await;
    let a = claim_one(&s, "w").await;
    let b = claim_one(&s, "w").await;
    assert_eq!(
        (a["compiledContent"].as_str(), b["compiledContent"].as_str()),
        (Some("1"), Some("2"))
    );
    drop(s);

    // sequential: one at a time per chat, in order; other chats are not blocked.
    let s = server(&[("DISPATCH_MODE", "sequential")]);
    let c = chat(&s).await;
    let d = chat(&s).await;
    user_msg(&s, &c, "c1").await;
    user_msg(&s, &c, "c2").await;
    user_msg(&s, &d, "d1").await;
    let r = s
        .post(
            "/api/v1/dispatch/claim-many",
            json!({ "workerId": "w", "limit": 10, "waitMs": 0 }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got: Vec<&str> = r.body["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["compiledContent"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["c1", "d1"]);
    assert_eq!(claim(&s, "w", 200).await.status, 204);
    let first = r.body["batches"][0].clone();
    complete(&s, &first, "w").await;
    assert_eq!(claim_one(&s, "w").await["compiledContent"], "c2");
    drop(s);

    // batched_sequential: the same rule across batches.
    let s = server(&[]);
    let c = chat(&s).await;
    user_msg(&s, &c, "x1").await;
    let b1 = claim_one(&s, "w").await;
    user_msg(&s, &c, "x2").await;
    assert_eq!(claim(&s, "w", 500).await.status, 204);
    fail(&s, &b1, "w", true, Some(0)).await;
    assert_eq!(
        claim_one(&s, "w").await["compiledContent"],
        "x1",
        "the retry goes first"
    );
}

#[tokio::test]
async fn claim_many_limits() {
    let s = server(&[
        ("DISPATCH_MODE", "immediate"),
        ("DISPATCH_CLAIM_MANY_LIMIT", "3"),
    ]);
    let c = chat(&s).await;
    for i in 0..5 {
        user_msg(&s, &c, &format!("{i}")).await;
    }
    let r = s
        .post(
            "/api/v1/dispatch/claim-many",
            json!({ "workerId": "w", "limit": 50 }),
        )
        .await;
    assert_eq!(r.body["batches"].as_array().unwrap().len(), 3);
    let r = s
        .post(
            "/api/v1/dispatch/claim-many",
            json!({ "workerId": "w", "limit": 1 }),
        )
        .await;
    assert_eq!(r.body["batches"].as_array().unwrap().len(), 1);
    let r = s
        .post("/api/v1/dispatch/claim-many", json!({ "workerId": "w" }))
        .await;
    assert_eq!(r.body["batches"].as_array().unwrap().len(), 1);
    let r = s
        .post(
            "/api/v1/dispatch/claim-many",
            json!({ "workerId": "w", "waitMs": 100 }),
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(r.text.is_empty());
}

#[tokio::test]
async fn scoped_claims() {
    let s = server(&[("DISPATCH_MODE", "immediate")]);
    let c = chat(&s).await;
    let r = s
        .post(
            "/api/v1/chats",
            json!({ "agentIds": ["assistant", "echo"] }),
        )
        .await;
    let d = r.body["id"].as_str().unwrap().to_string();
    user_msg(&s, &c, "for c").await;
    user_msg(&s, &d, "for d").await;
    let r = claim_with(&s, json!({ "workerId": "w", "chatId": d, "waitMs": 0 })).await;
    assert_eq!(r.body["compiledContent"], "for d");
    assert_eq!(r.body["agentIdHint"], "assistant");
    assert_eq!(
        claim_with(&s, json!({ "workerId": "w", "chatId": d, "waitMs": 0 }))
            .await
            .status,
        204
    );
    assert_eq!(
        claim_with(
            &s,
            json!({ "workerId": "w", "agentId": "assistant", "waitMs": 0 })
        )
        .await
        .status,
        204
    );
    let r = claim_with(
        &s,
        json!({ "workerId": "w", "agentId": "echo", "waitMs": 0 }),
    )
    .await;
    assert_eq!(r.body["chatId"], c);
    // A scoped waiter wakes for its own chat only.
    let (r, _) = tokio::join!(
        claim_with(&s, json!({ "workerId": "w", "chatId": c, "waitMs": 3000 })),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            user_msg(&s, &d, "not yours").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            user_msg(&s, &c, "yours").await;
        }
    );
    assert_eq!(r.body["compiledContent"], "yours");
}

/// The reference's minimal agent loop (section 11), over plain HTTP.
#[tokio::test]
async fn minimal_agent_loop() {
    let s = server(&[]);
    let c = chat(&s).await;
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
    user_msg(&s, &c, "hello agent").await;
    let ok = common::wait_until(Duration::from_secs(10), || async {
        messages(&s, &c)
            .await
            .iter()
            .any(|m| m["content_final"] == "echo: hello agent")
    })
    .await;
    assert!(ok);
    user_msg(&s, &c, "stream this").await;
    tokio::time::timeout(Duration::from_secs(15), agent)
        .await
        .unwrap()
        .unwrap();
    let msgs = messages(&s, &c).await;
    assert_eq!(msgs[0]["content_final"], "stream this ");
    assert_eq!(msgs[0]["stream_state"], "complete");
}

#[tokio::test]
async fn disconnected_claim_stops_waiting() {
    let s = server(&[("DISPATCH_MODE", "immediate")]);
    let c = chat(&s).await;
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
    user_msg(&s, &c, "for the living").await;
    let r = claim(&s, "alive", 2000).await;
    assert_eq!(r.status, 200, "the batch went to a disconnected claimer");
}

#[tokio::test]
async fn mixed_batch_and_huge_numbers() {
    let s = server(&[("DISPATCH_BATCH_DEBOUNCE_MS", "300")]);
    let c = chat(&s).await;
    let r = s
        .post(
            &format!("/api/v1/chats/{c}/requests"),
            json!({ "type": "text_input", "title": "Why?", "config": {} }),
        )
        .await;
    let rid = r.body["id"].as_str().unwrap().to_string();
    user_msg(&s, &c, "first").await;
    assert_eq!(
        s.post(
            &format!("/api/v1/requests/{rid}/resolve"),
            json!({ "text": "because" })
        )
        .await
        .status,
        200
    );
    let b = claim_with(
        &s,
        json!({ "workerId": "w", "waitMs": 5000, "leaseMs": u64::MAX }),
    )
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
        .post(
            &format!("/api/v1/dispatch/{id}/heartbeat"),
            json!({ "workerId": "w", "extendMs": u64::MAX }),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        claim(&s, "other", 0).await.status,
        204,
        "the lease still holds"
    );
    let r = s
        .post(
            &format!("/api/v1/dispatch/{id}/fail"),
            json!({ "workerId": "w", "reason": "x", "retryable": true, "retryDelayMs": u64::MAX }),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = claim_with(&s, json!({ "workerId": "w", "waitMs": 1e300 })).await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    assert_eq!(s.get("/api/v1/health").await.status, 200);
}
