//! Fault drill: clients that never read their event streams (the front door's `/stream/:id` and
//! `/events`, and `/api/v1/events/stream`) while many large events flow. agentd's memory stays
//! bounded and a client that reads keeps getting every event.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use support::{rss_kib, TestApp};

const MESSAGES: usize = 2000;
const CONTENT_BYTES: usize = 8 * 1024;
/// The front door's live bus keeps the last 1024 events; past them, memory must stay flat.
const PLATEAU_FROM: usize = 1200;

/// agentd's resident set in KiB.
fn rss(s: &TestApp) -> u64 {
    rss_kib(s.pid()).expect("agentd's VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_hold_no_unbounded_memory_nor_stall_others() {
    let s = TestApp::builder()
        .env("WRITE_RATE_LIMIT_MAX", "1000000")
        .env("SSE_PING_INTERVAL_MS", "50")
        .start();
    let r = s
        .create_conversation(json!({"title": "drill", "participants": ["a", "b"]}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let conv = r.body["id"].as_str().unwrap().to_string();
    let post = |n: usize| {
        let content = format!("{n:06} {}", "x".repeat(CONTENT_BYTES));
        s.post_to_conversation(
            &conv,
            json!({"from": "a", "to": "b", "type": "text", "content": content}),
        )
    };
    // Warm up (SQLite cache, buffers), then take the baseline.
    for n in 0..50 {
        assert_eq!(post(n).await.status, 201);
    }
    let base = rss(&s);

    // Three clients that never read a byte after the headers.
    let sse = |path: &str| {
        s.client
            .get(s.url(path))
            .header("accept", "text/event-stream")
            .send()
    };
    let stuck = [
        sse(&format!("/stream/{conv}")).await.unwrap(),
        sse("/events").await.unwrap(),
        sse("/api/v1/events/stream").await.unwrap(),
    ];
    for r in &stuck {
        assert_eq!(r.status(), 200);
    }
    // And one that reads: it must see every message, the last one promptly.
    let reader = sse(&format!("/stream/{conv}")).await.unwrap();
    let reading = tokio::spawn(async move {
        let mut body = reader.bytes_stream();
        let mut seen = std::collections::BTreeSet::new();
        let mut buf = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.extend_from_slice(&chunk);
            // Whole frames only; the unfinished tail waits for more bytes.
            while let Some(end) = find(&buf, b"\n\n") {
                let frame = String::from_utf8_lossy(&buf[..end]).into_owned();
                buf.drain(..end + 2);
                if let (true, Some(i)) = (frame.contains("event: message"), frame.find(" xxxx")) {
                    seen.insert(frame[i - 6..i].to_string());
                }
                if seen.len() == MESSAGES {
                    return (seen.len(), Instant::now());
                }
            }
        }
        (seen.len(), Instant::now())
    });

    let t = Instant::now();
    let mut peak = base;
    let mut half = 0;
    for (i, chunk) in (50..MESSAGES + 50)
        .collect::<Vec<_>>()
        .chunks(8)
        .enumerate()
    {
        if i == PLATEAU_FROM / 8 {
            half = peak;
        }
        let replies = futures_util::future::join_all(chunk.iter().map(|n| post(*n))).await;
        for r in replies {
            assert_eq!(r.status, 201, "{}", r.text);
        }
        peak = peak.max(rss(&s));
    }
    let posted = Instant::now();
    let (seen, last_at) = tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("the reading client got the last message")
        .unwrap();
    let flowed_mib = (MESSAGES * CONTENT_BYTES * 3) / (1024 * 1024);
    println!(
        "drill: {MESSAGES} messages in {:?}; {flowed_mib} MiB offered to the stuck clients; \
         RSS {} MiB -> {} MiB at {PLATEAU_FROM} -> peak {} MiB; reader saw {seen}, last {:?} after the last post",
        posted - t,
        base / 1024,
        half / 1024,
        peak / 1024,
        last_at.saturating_duration_since(posted)
    );
    assert_eq!(seen, MESSAGES, "the reading client missed messages");
    // Far less than what the stuck clients were offered: nothing is queued per client.
    assert!(
        peak - base < 24 * 1024,
        "RSS grew by {} MiB",
        (peak - base) / 1024
    );
    // A plateau: once the bus is full, more events add little (buffers are capped, not per event).
    assert!(
        peak - half < 8 * 1024,
        "RSS grew by {} MiB after the bus was full",
        (peak - half) / 1024
    );
    // Still healthy, and the stuck clients' tasks do not block new ones.
    assert_eq!(s.health().await.status, 200);
    let mut fresh = sse(&format!("/stream/{conv}"))
        .await
        .unwrap()
        .bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(2), fresh.next()).await;
    assert!(matches!(first, Ok(Some(Ok(_)))));
    // The front door's stuck clients fell behind the live bus: once they read again they get what
    // was buffered for them (a bounded amount), a notice, and the end of the stream.
    let [conv_stream, feed, api] = stuck;
    for r in [conv_stream, feed] {
        let mut b = r.bytes_stream();
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            let mut tail = Vec::new();
            let mut n = 0usize;
            while let Some(Ok(c)) = b.next().await {
                n += c.len();
                tail.extend_from_slice(&c);
                tail.drain(..tail.len().saturating_sub(200));
            }
            (n, String::from_utf8_lossy(&tail).into_owned())
        })
        .await;
        let (n, tail) = got.expect("a client that fell behind is disconnected");
        assert!(tail.contains("fell behind"), "{tail}");
        assert!(n < 16 * 1024 * 1024, "{n} bytes were held for it");
    }
    drop(api);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
