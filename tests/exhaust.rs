//! Exhaustion (issue 10, item 4) against the real server: JSON nested 100,000 deep on every
//! write route, slow clients trickling heads and bodies, idle event streams past their caps,
//! floods of client-chosen keys, a conversation relay that falls behind its bus, and retention.
//! Each input gets its 4xx, and the server stays healthy and bounded in memory.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::{assert_error, rss_kib, wait_until, TestApp, SOON};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `[[[[...]]]]`, `depth` deep.
fn nested(depth: usize) -> String {
    let mut s = String::with_capacity(depth * 2);
    s.push_str(&"[".repeat(depth));
    s.push_str(&"]".repeat(depth));
    s
}

/// `{"a":{"a":...}}` inside a field of an object, `depth` deep.
fn nested_in_object(field: &str, depth: usize) -> String {
    format!(
        "{{\"{field}\":{}1{}}}",
        "{\"a\":".repeat(depth),
        "}".repeat(depth)
    )
}

/// The family envelope an error answer must have, by route.
fn assert_envelope(route: &str, status: u16, body: &Value, text: &str) {
    let ten = ["/start", "/stop", "/ping", "/token/generate"].contains(&route);
    if ten {
        assert!(body["code"].is_string(), "{route}: {status} {text}");
        assert!(body["data"]["detail"].is_string(), "{route}: {text}");
    } else if route.starts_with("/v1/") {
        assert_eq!(body["success"], false, "{route}: {text}");
        assert!(body["error"]["code"].is_string(), "{route}: {text}");
    } else {
        assert!(
            body["error"]["code"].is_string(),
            "{route}: {status} {text}"
        );
        assert!(body["error"]["message"].is_string(), "{route}: {text}");
    }
}

#[tokio::test]
async fn json_nested_100000_deep_is_a_400_on_every_write_route() {
    let s = TestApp::with_fast_dispatch(&[]);
    let chat = s.new_chat("echo").await;
    let streaming = s.stream_message(&chat, "echo").await;
    assert_eq!(streaming.status, 201, "{}", streaming.text);
    let message = streaming.body["id"].as_str().unwrap().to_string();
    let req = s
        .create_request(
            &chat,
            json!({"type": "text_input", "title": "Name?", "config": {}}),
        )
        .await;
    let request = req.body["id"].as_str().unwrap_or("rq-none").to_string();
    let conv = s
        .create_conversation(json!({"title": "deep", "participants": ["u1"]}))
        .await;
    assert_eq!(conv.status, 201, "{}", conv.text);
    let conv = conv.body["id"].as_str().unwrap().to_string();
    let agent_conv = s
        .create_agent_conversation("echo", json!({"title": "deep"}))
        .await;
    let agent_conv = agent_conv.body["id"]
        .as_str()
        .or(agent_conv.body["data"]["id"].as_str())
        .unwrap_or("c-none")
        .to_string();

    let routes: Vec<(reqwest::Method, String)> = [
        ("POST", "/start".to_string()),
        ("POST", "/stop".into()),
        ("POST", "/ping".into()),
        ("POST", "/token/generate".into()),
        ("POST", "/api/v1/chats".into()),
        ("PATCH", format!("/api/v1/chats/{chat}")),
        ("POST", format!("/api/v1/chats/{chat}/archive")),
        ("POST", format!("/api/v1/chats/{chat}/unarchive")),
        ("POST", format!("/api/v1/chats/{chat}/mark-read")),
        ("POST", format!("/api/v1/chats/{chat}/mark-unread")),
        ("POST", format!("/api/v1/chats/{chat}/messages")),
        (
            "POST",
            format!("/api/v1/chats/{chat}/messages/cancel-streaming"),
        ),
        ("POST", format!("/api/v1/chats/{chat}/typing")),
        ("POST", format!("/api/v1/chats/{chat}/user-typing")),
        ("POST", format!("/api/v1/chats/{chat}/requests")),
        ("POST", format!("/api/v1/messages/{message}/chunks")),
        ("POST", format!("/api/v1/messages/{message}/complete")),
        ("POST", format!("/api/v1/messages/{message}/cancel")),
        ("PATCH", format!("/api/v1/requests/{request}")),
        ("POST", format!("/api/v1/requests/{request}/resolve")),
        ("POST", format!("/api/v1/requests/{request}/cancel")),
        ("POST", "/api/v1/dispatch/claim".into()),
        ("POST", "/api/v1/dispatch/claim-many".into()),
        ("POST", "/api/v1/dispatch/b-none/heartbeat".into()),
        ("POST", "/api/v1/dispatch/b-none/complete".into()),
        ("POST", "/api/v1/dispatch/b-none/fail".into()),
        ("POST", "/agents/echo/chat".into()),
        ("POST", "/agents/echo/chat/stream".into()),
        ("POST", "/agents/echo/conversations".into()),
        ("PUT", format!("/agents/echo/conversations/{agent_conv}")),
        ("POST", "/agents/echo/mark-read".into()),
        ("POST", "/teams/helpdesk/chat".into()),
        ("POST", "/v1/agents/echo/messages".into()),
        ("POST", "/v1/agents/echo/messages/stream".into()),
        ("POST", "/conversations".into()),
        ("POST", format!("/conversations/{conv}/bots")),
        ("POST", format!("/messages/{conv}")),
        ("POST", format!("/messages/{conv}/read")),
    ]
    .into_iter()
    .map(|(m, p)| (reqwest::Method::from_bytes(m.as_bytes()).unwrap(), p))
    .collect();

    let pid = s.pid();
    let rss_before = rss_kib(pid).expect("the server's RSS");
    let mut refused = Vec::new();
    for (method, path) in &routes {
        // Both shapes: a bare deep array, and a deep value inside a field routes read.
        for body in [nested(100_000), nested_in_object("properties", 100_000)] {
            let r = s
                .send(
                    s.request(method.clone(), path)
                        .header("content-type", "application/json")
                        .body(body),
                )
                .await;
            let route = path.split("?").next().unwrap_or(path);
            let family = if route.starts_with("/start")
                || route.starts_with("/stop")
                || route.starts_with("/ping")
                || route.starts_with("/token/")
            {
                route
            } else {
                path
            };
            if r.status >= 400 {
                assert_envelope(family, r.status, &r.body, &r.text);
            }
            refused.push((format!("{method} {path}"), r.status));
        }
    }
    // A route that reads its body parses it first: the deep body is a 400 there, not "not found".
    // Routes that read a body refuse it with a 400; the few that take no body (actions named by
    // their path, as in Opengram) never parse it and answer as they would without one.
    let bodiless = [
        "/archive",
        "/unarchive",
        "/mark-read",
        "/mark-unread",
        "/cancel-streaming",
        "/user-typing",
        "/cancel",
    ];
    for (route, status) in &refused {
        if route.starts_with("POST /api/v1/") && bodiless.iter().any(|b| route.ends_with(b)) {
            assert!(*status < 500, "{route}: {status}");
        } else {
            assert_eq!(*status, 400, "{route}");
        }
    }
    let h = s.get("/health").await;
    assert_eq!(h.status, 200, "{}", h.text);
    assert!(support::pid_alive(pid));
    let rss_after = rss_kib(pid).expect("the server's RSS");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

/// Sends `head` one byte at a time, `every` apart, and reads until the server ends the
/// connection; what the server sent (`None` if it kept the connection past `within`).
async fn trickle(addr: String, head: Vec<u8>, every: Duration, within: Duration) -> Option<String> {
    let mut conn = TcpStream::connect(addr).await.ok()?;
    let run = async {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        let mut i = 0;
        loop {
            tokio::select! {
                got = conn.read(&mut buf) => match got {
                    Ok(0) | Err(_) => return String::from_utf8_lossy(&answer).into_owned(),
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                },
                _ = tokio::time::sleep(every) => {
                    let byte = head.get(i % head.len().max(1)).copied().unwrap_or(b'x');
                    i += 1;
                    if conn.write_all(&[byte]).await.is_err() {
                        // The server closed: read what it said before.
                        let _ = conn.read_to_end(&mut answer).await;
                        return String::from_utf8_lossy(&answer).into_owned();
                    }
                }
            }
        }
    };
    tokio::time::timeout(within, run).await.ok()
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_do_not_stall_others() {
    let s = TestApp::builder()
        .bundled()
        .envs(&[
            ("CLIENT_REQUEST_TIMEOUT_MS", "1000"),
            ("BODY_TIMEOUT_MS", "1500"),
            ("KEEP_ALIVE_SECONDS", "2"),
            ("HTTP_MAX_CONNECTIONS", "16"),
        ])
        .start();
    let addr = s.base_url.trim_start_matches("http://").to_string();

    // Heads trickled in, on more connections than the cap: every one is ended by the server.
    let header: Vec<u8> = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b'a', 10_000))
        .collect();
    let slow: Vec<_> = (0..24)
        .map(|_| {
            tokio::spawn(trickle(
                addr.clone(),
                header.clone(),
                Duration::from_millis(100),
                Duration::from_secs(60),
            ))
        })
        .collect();
    // Meanwhile a normal request gets through (within the generous client timeout).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ok = s.get("/health").await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    for t in slow {
        let answer = t.await.unwrap();
        let answer = answer.expect("a trickling client kept its connection for 60 s");
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }

    // Bodies trickled in after a complete head: a 408 in the family's envelope.
    for (path, body_start) in [
        ("/api/v1/chats", "{\"agentIds\":[\"echo\"],\"title\":\""),
        ("/start", "{\"channel_name\":\"slow\",\"graph_name\":\""),
        ("/agents/echo/chat", "{\"message\":\""),
        ("/v1/agents/echo/messages", "{\"message\":\""),
        ("/conversations", "{\"title\":\""),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{body_start}"
        );
        let mut conn = TcpStream::connect(&addr).await.unwrap();
        conn.write_all(head.as_bytes()).await.unwrap();
        let answer = trickle_on(conn, Duration::from_millis(100), Duration::from_secs(60))
            .await
            .expect("a trickled body kept its connection for 60 s");
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        if path == "/start" {
            assert!(body.contains("\"code\":\"10000\""), "{body}");
            assert!(body.contains("BODY_TIMEOUT_MS"), "{body}");
        } else {
            assert!(body.contains("\"REQUEST_TIMEOUT\""), "{path}: {body}");
        }
        if path.starts_with("/v1/") {
            assert!(body.contains("\"success\":false"), "{body}");
        }
    }

    // An idle keep-alive connection is closed after KEEP_ALIVE_SECONDS.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(SOON, idle.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "an idle keep-alive connection stayed open");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));

    let ok = s.get("/health").await;
    assert_eq!(ok.status, 200, "{}", ok.text);
}

/// Keeps sending one body byte every `every` on `conn` until the server answers and closes.
async fn trickle_on(mut conn: TcpStream, every: Duration, within: Duration) -> Option<String> {
    let run = async {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            tokio::select! {
                got = conn.read(&mut buf) => match got {
                    Ok(0) | Err(_) => return String::from_utf8_lossy(&answer).into_owned(),
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                },
                _ = tokio::time::sleep(every) => {
                    if conn.write_all(b"a").await.is_err() {
                        let _ = conn.read_to_end(&mut answer).await;
                        return String::from_utf8_lossy(&answer).into_owned();
                    }
                }
            }
        }
    };
    tokio::time::timeout(within, run).await.ok()
}

#[tokio::test]
async fn idle_event_streams_are_capped_per_client_and_in_total() {
    let s = TestApp::builder()
        .bundled()
        .envs(&[
            ("TRUST_PROXY_HEADERS", "true"),
            ("SSE_MAX_PER_CLIENT", "3"),
            ("SSE_MAX_TOTAL", "5"),
            // A closed stream is noticed at its next write: the conversation streams ping often.
            ("SSE_PING_INTERVAL_MS", "200"),
        ])
        .start();
    let conv = s
        .create_conversation(json!({"title": "caps", "participants": ["u1"]}))
        .await;
    let conv = conv.body["id"].as_str().unwrap().to_string();
    let open = |ip: &str, path: &str| {
        s.request(reqwest::Method::GET, path)
            .header("x-forwarded-for", ip)
            .header("accept", "text/event-stream")
    };
    // Streams held as bare responses: dropping one closes its connection.
    let hold = |req: reqwest::RequestBuilder| async move {
        let res = req.send().await.expect("the stream opens");
        assert_eq!(res.status().as_u16(), 200);
        res
    };

    // One client: three streams of three families, then a 429 in each family's envelope.
    let mut held = Vec::new();
    for path in [
        "/api/v1/events/stream".to_string(),
        format!("/stream/{conv}"),
        "/ops/workers/stream".to_string(),
    ] {
        held.push(hold(open("10.0.0.1", &path)).await);
    }
    let r = s.send(open("10.0.0.1", "/api/v1/events/stream")).await;
    assert_error(&r, 429, "TOO_MANY_STREAMS");
    assert_eq!(r.header("retry-after"), "5");
    let r = s.send(open("10.0.0.1", &format!("/stream/{conv}"))).await;
    assert_error(&r, 429, "TOO_MANY_STREAMS");
    let r = s.send(open("10.0.0.1", "/events")).await;
    assert_error(&r, 429, "TOO_MANY_STREAMS");
    let r = s.send(open("10.0.0.1", "/ops/workers/stream")).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (429, Some("429")),
        "{}",
        r.text
    );
    assert!(r.body["data"]["detail"]
        .as_str()
        .unwrap()
        .contains("SSE_MAX_PER_CLIENT"));
    // Plain requests of the same client are not streams: they still work.
    assert_eq!(s.send(open("10.0.0.1", "/health")).await.status, 200);

    // Other clients: the total cap answers 503.
    let mut others = Vec::new();
    for _ in 0..2 {
        others.push(hold(open("10.0.0.2", &format!("/stream/{conv}"))).await);
    }
    let r = s.send(open("10.0.0.3", "/api/v1/events/stream")).await;
    assert_error(&r, 503, "STREAMS_FULL");
    let r = s.send(open("10.0.0.3", &format!("/stream/{conv}"))).await;
    assert_error(&r, 503, "STREAMS_FULL");
    let r = s.send(open("10.0.0.3", "/ops/workers/stream")).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (503, Some("503")),
        "{}",
        r.text
    );

    // Streams that close give their places back.
    drop(others);
    let reopened = support::wait_for(SOON, || async {
        let res = open("10.0.0.3", "/api/v1/events/stream")
            .send()
            .await
            .ok()?;
        (res.status().as_u16() == 200).then_some(res)
    })
    .await;
    assert!(reopened.is_some(), "closed streams were never counted out");
    assert_eq!(s.get("/health").await.status, 200);
    drop(held);
}

#[tokio::test]
async fn a_stream_whose_client_hangs_up_gives_its_place_back_without_waiting_for_a_write() {
    // The default keep-alive interval (15 s): nothing is written to an idle stream meanwhile.
    let s = TestApp::builder()
        .bundled()
        .envs(&[("TRUST_PROXY_HEADERS", "true"), ("SSE_MAX_PER_CLIENT", "1")])
        .start();
    for (path, client) in [
        ("/api/v1/events/stream", "10.0.0.9"),
        ("/ops/workers/stream", "10.0.0.10"),
    ] {
        let open = || {
            s.request(reqwest::Method::GET, path)
                .header("x-forwarded-for", client)
                .header("accept", "text/event-stream")
        };
        let first = open().send().await.expect("the stream opens");
        assert_eq!(first.status().as_u16(), 200, "{path}");
        let r = s.send(open()).await;
        assert_eq!(r.status, 429, "{path}: {}", r.text);
        let hung_up = Instant::now();
        drop(first);
        let reopened = support::wait_for(Duration::from_secs(5), || async {
            let res = open().send().await.ok()?;
            (res.status().as_u16() == 200).then_some(res)
        })
        .await;
        assert!(
            reopened.is_some(),
            "{path}: the closed stream kept its place for 5 s"
        );
        eprintln!("{path}: place back after {:?}", hung_up.elapsed());
    }
}

/// The rows of `table` in the server's database (read through a connection of our own).
fn count(db: &Path, table: &str) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the database");
    c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

#[tokio::test]
async fn a_flood_of_client_keys_is_pruned_and_memory_stays_bounded() {
    let s = TestApp::builder()
        .bundled()
        .fast_dispatch()
        .envs(&[
            ("TRUST_PROXY_HEADERS", "true"),
            ("WRITE_RATE_LIMIT_MAX", "1000"),
            ("IDEMPOTENCY_TTL_SECONDS", "1"),
            ("RETENTION_SWEEP_MS", "200"),
        ])
        .start();
    let db = s.root().join("data/agentd.db");
    let pid = s.pid();
    let chat = s.new_chat("echo").await;
    // Warm up, then measure.
    for i in 0..50 {
        s.send(
            s.request(
                reqwest::Method::POST,
                &format!("/api/v1/chats/{chat}/typing"),
            )
            .header("x-forwarded-for", format!("10.9.0.{i}"))
            .json(&json!({"agentId": "echo"})),
        )
        .await;
    }
    let before = rss_kib(pid).expect("RSS");

    // 12,000 requests, each from another client IP (a rate-limit key each) with another
    // Idempotency-Key (a stored row each), and 500 event streams opened and dropped.
    let n = 12_000;
    let sent = futures_util::stream::iter(0..n)
        .map(|i| {
            let req = s
                .request(reqwest::Method::POST, "/api/v1/chats")
                .header(
                    "x-forwarded-for",
                    format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                )
                .header("idempotency-key", format!("flood-{i}"))
                .json(&json!({"agentIds": ["echo"], "title": format!("flood {i}")}));
            async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
        })
        .buffer_unordered(32)
        .collect::<Vec<u16>>()
        .await;
    let created = sent.iter().filter(|s| **s == 201).count();
    assert!(created > n * 9 / 10, "only {created} of {n} were created");
    for i in 0..500 {
        let st = s
            .open_stream(
                s.request(reqwest::Method::GET, "/api/v1/events/stream")
                    .header("x-forwarded-for", format!("10.200.{}.{}", i / 256, i % 256)),
            )
            .await;
        assert!(st.is_ok(), "stream {i} did not open");
    }

    // Idempotency keys past their TTL are pruned by the retention pass.
    assert!(
        wait_until(SOON, || async { count(&db, "idempotency") == 0 }).await,
        "{} idempotency rows left",
        count(&db, "idempotency")
    );
    let h = s.get("/health").await;
    assert_eq!(h.status, 200, "{}", h.text);
    let after = rss_kib(pid).expect("RSS");
    eprintln!("RSS before the flood {before} KiB, after {after} KiB");
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB after the flood"
    );
}

#[tokio::test]
async fn the_conversation_relay_catches_up_after_falling_behind() {
    // A bus of 2 events: the relay falls behind at once under the echo bot's chunks.
    let s = TestApp::builder()
        .bundled()
        .fast_dispatch()
        .env("EVENT_BUS_CAPACITY", "2")
        .start();
    let conv = s
        .create_conversation(json!({"title": "lag", "participants": ["u1"]}))
        .await;
    let conv = conv.body["id"].as_str().unwrap().to_string();
    assert_eq!(s.set_bot(&conv, "echo", true).await.status, 200);
    // Bursts of typing events on another chat, for as long as the bot answers: the relay's
    // bus overflows again and again, answers' events among what it misses.
    let noisy = s.new_chat("echo").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let (client, url, stop) = (
            s.client.clone(),
            s.url(&format!("/api/v1/chats/{noisy}/typing")),
            stop.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let burst =
                    (0..50).map(|_| client.post(&url).json(&json!({"agentId": "echo"})).send());
                futures_util::future::join_all(burst).await;
            }
        })
    };
    let n = 12;
    for i in 0..n {
        let r = s
            .post_to_conversation(
                &conv,
                json!({"from": "u1", "type": "text", "content": format!("message number {i} with several words to stream")}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let answered = wait_until(Duration::from_secs(90), || async {
        let list = s.conversation_messages(&conv, "?limit=100").await;
        list.body
            .as_array()
            .map(|a| a.iter().filter(|m| m["from"] == "echo").count())
            .unwrap_or(0)
            >= n
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    flood.await.unwrap();
    let list = s.conversation_messages(&conv, "?limit=100").await;
    let answers: Vec<&Value> = list
        .body
        .as_array()
        .map(|a| a.iter().filter(|m| m["from"] == "echo").collect())
        .unwrap_or_default();
    assert!(
        answered,
        "{} of {n} bot answers reached the conversation",
        answers.len()
    );
    // Each answer once: catching up does not copy an answer twice.
    assert_eq!(answers.len(), n, "{}", list.text);
    assert!(
        s.output().contains("conversation relay fell behind"),
        "{}",
        s.output()
    );
}

#[tokio::test]
async fn events_batches_and_inputs_past_their_retention_are_pruned() {
    let s = TestApp::builder()
        .bundled()
        .fast_dispatch()
        .envs(&[
            ("EVENTS_RETENTION_SECONDS", "2"),
            ("DISPATCH_RETENTION_SECONDS", "2"),
            ("RETENTION_SWEEP_MS", "200"),
        ])
        .start();
    let db = s.root().join("data/agentd.db");
    let chat = s.new_chat("echo").await;
    // One batch answered by hand: an input, a batch, events.
    s.post_user(&chat, "hello").await;
    let batch = s.claim_one("w1").await;
    let r = s.complete(&batch, "w1").await;
    assert!(r.status < 300, "{}", r.text);
    let cursor: Option<String> = rusqlite::Connection::open(&db)
        .and_then(|c| {
            c.query_row("SELECT id FROM events ORDER BY seq LIMIT 1", [], |r| {
                r.get(0)
            })
        })
        .ok();
    assert!(count(&db, "events") > 0);
    assert!(count(&db, "dispatch_batches") > 0);
    assert!(count(&db, "dispatch_inputs") > 0);

    assert!(
        wait_until(SOON, || async {
            count(&db, "events") == 0
                && count(&db, "dispatch_batches") == 0
                && count(&db, "dispatch_inputs") == 0
        })
        .await,
        "left: {} events, {} batches, {} inputs",
        count(&db, "events"),
        count(&db, "dispatch_batches"),
        count(&db, "dispatch_inputs")
    );
    // Messages are not events: the chat keeps its history.
    assert!(!s.messages(&chat).await.is_empty());
    // A cursor into pruned events is a clear 400, not an empty replay.
    if let Some(cursor) = cursor {
        let r = s
            .send(s.request(
                reqwest::Method::GET,
                &format!("/api/v1/events/stream?cursor={cursor}"),
            ))
            .await;
        assert_error(&r, 400, "VALIDATION_ERROR");
    }
}
