//! Chat and dispatch API: API key rules and the write rate limit.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{assert_error, TestApp};

const KEY: &str = "s3cret-key";

#[tokio::test]
async fn key_rules() {
    let s = TestApp::with_fast_dispatch(&[("AGENTD_API_KEY", KEY)]);
    let bearer = format!("Bearer {KEY}");
    // Health is public; reads are public by default.
    assert_eq!(s.api_health().await.status, 200);
    assert_eq!(s.chats("").await.status, 200);
    assert_eq!(s.config().await.status, 200);
    let r = s.config().await;
    assert!(!r.text.contains(KEY));
    assert_eq!(r.body["security"]["instanceSecretEnabled"], true);
    // Writes need the key.
    let r = s.create_chat(json!({ "agentIds": ["echo"] })).await;
    assert_error(&r, 401, "UNAUTHORIZED");
    assert_eq!(
        r.body["error"]["message"],
        "Missing or invalid instance secret."
    );
    let r = s
        .send(
            s.client
                .post(s.url("/api/v1/chats"))
                .header("Authorization", "Bearer wrong")
                .json(&json!({ "agentIds": ["echo"] })),
        )
        .await;
    assert_eq!(r.status, 401);
    let r = s
        .send(
            s.client
                .post(s.url("/api/v1/chats"))
                .header("Authorization", format!("bearer {KEY}"))
                .json(&json!({ "agentIds": ["echo"] })),
        )
        .await;
    assert_eq!(r.status, 401, "the scheme is case-sensitive");
    let r = s
        .send(
            s.client
                .post(s.url("/api/v1/chats"))
                .header("Authorization", &bearer)
                .json(&json!({ "agentIds": ["echo"] })),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let c = r.body["id"].as_str().unwrap().to_string();
    let r = s
        .send(
            s.client
                .post(s.url(&format!("/api/v1/chats/{c}/user-typing?token={KEY}"))),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = s.claim("w", 0).await;
    assert_eq!(r.status, 401);
    // The event stream is always gated.
    let r = s.get("/api/v1/events/stream").await;
    assert_error(&r, 401, "UNAUTHORIZED");
    let by_token = s.events(&format!("?token={KEY}"), None).await;
    assert_eq!(by_token.status, 200);
    drop(by_token);
    let by_header = s
        .open_stream(
            s.request(reqwest::Method::GET, "/api/v1/events/stream")
                .header("Authorization", &bearer),
        )
        .await
        .expect("a stream");
    assert_eq!(by_header.status, 200);
}

#[tokio::test]
async fn reads_can_require_the_key() {
    let s = TestApp::with_fast_dispatch(&[("AGENTD_API_KEY", KEY), ("READS_REQUIRE_KEY", "true")]);
    assert_eq!(s.api_health().await.status, 200);
    assert_error(&s.chats("").await, 401, "UNAUTHORIZED");
    assert_error(&s.config().await, 401, "UNAUTHORIZED");
    assert_eq!(s.chats(&format!("?token={KEY}")).await.status, 200);
}

#[tokio::test]
async fn open_without_a_key() {
    let s = TestApp::with_fast_dispatch(&[("READS_REQUIRE_KEY", "true")]);
    assert_eq!(s.chats("").await.status, 200);
    assert_eq!(s.events("", None).await.status, 200);
}

#[tokio::test]
async fn write_rate_limit() {
    let s = TestApp::with_fast_dispatch(&[
        ("AGENTD_API_KEY", KEY),
        ("WRITE_RATE_LIMIT_MAX", "20"),
        // 20 per 20 s: the budget refills one write a second (the limiter is GCRA, not a fixed
        // window), slow enough that the burst below normally sees none come back.
        ("WRITE_RATE_LIMIT_WINDOW_MS", "20000"),
    ]);
    let c = {
        let r = s
            .send(
                s.client
                    .post(s.url(&format!("/api/v1/chats?token={KEY}")))
                    .json(&json!({ "agentIds": ["echo"] })),
            )
            .await;
        r.body["id"].as_str().unwrap().to_string()
    };
    // Rejected calls do not use the budget (auth runs first).
    for _ in 0..30 {
        let r = s.typing(&c, json!({ "agentId": "echo" })).await;
        assert_eq!(r.status, 401);
    }
    let path = format!("/api/v1/chats/{c}/typing?token={KEY}");
    let calls = (0..30).map(|_| s.post(&path, json!({ "agentId": "echo" })));
    let burst = std::time::Instant::now();
    let got = futures_util::future::join_all(calls).await;
    // On a loaded machine the burst may outlast a refill; each second it took may add one write.
    let refilled = burst.elapsed().as_secs() as usize;
    let ok = got.iter().filter(|r| r.status == 204).count();
    let limited: Vec<_> = got.iter().filter(|r| r.status == 429).collect();
    assert!(
        (19..=19 + refilled).contains(&ok),
        "one write went to creating the chat: {ok} passed, {refilled} s of refill"
    );
    assert_eq!(limited.len(), 30 - ok);
    let r = limited[0];
    assert_error(r, 429, "RATE_LIMITED");
    assert_eq!(r.body["error"]["message"], "Write rate limit exceeded.");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "{retry}");
    // Reads are not limited.
    assert_eq!(s.chats("").await.status, 200);
    // The budget refills: a write is allowed again a second later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        s.post(&path, json!({ "agentId": "echo" })).await.status,
        204
    );
}

#[tokio::test]
async fn rate_limit_per_client_ip_behind_a_proxy() {
    let s = TestApp::with_fast_dispatch(&[
        ("WRITE_RATE_LIMIT_MAX", "2"),
        ("WRITE_RATE_LIMIT_WINDOW_MS", "60000"),
        ("TRUST_PROXY_HEADERS", "true"),
    ]);
    let c = s.new_chat("echo").await; // counted for the direct client
    let typing = |ip: &'static str| {
        let path = format!("/api/v1/chats/{c}/typing");
        let sr = &s;
        async move {
            sr.send(
                sr.client
                    .post(sr.url(&path))
                    .header("X-Forwarded-For", format!("{ip}, 10.0.0.1"))
                    .json(&json!({ "agentId": "echo" })),
            )
            .await
            .status
        }
    };
    assert_eq!(typing("1.1.1.1").await, 204);
    assert_eq!(typing("1.1.1.1").await, 204);
    assert_eq!(typing("1.1.1.1").await, 429);
    assert_eq!(typing("2.2.2.2").await, 204);
}
