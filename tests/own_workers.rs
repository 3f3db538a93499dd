//! agentd's own workers: a worker that is gone hands its work back at once (the next worker of the
//! channel answers without waiting out the dead one's lease, 30 s by default), and workers are
//! never slowed by the write rate limit meant for clients.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{user_message, wait_until, TestApp};

#[tokio::test]
async fn a_stopped_workers_waiting_claim_takes_nothing() {
    let s = TestApp::builder()
        .bundled()
        .env("DISPATCH_MODE", "immediate")
        .start();
    let chat = s
        .start_ok("lr-1", "echo", json!({"timeout": -1}))
        .await
        .chat();
    // The worker is now waiting in a long-poll claim; stopping it leaves that request behind.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.stop("lr-1").await.status, 200);
    let r = s.post_message(&chat, user_message("still there?")).await;
    assert_eq!(r.status, 201);
    s.start_ok("lr-1", "echo", json!({"timeout": -1})).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            s.answers(&chat).await == ["still there?"]
        })
        .await,
        "the new worker did not answer within 10 s (lease default 30 s)\n{}",
        s.output()
    );
}

#[tokio::test]
async fn a_worker_killed_mid_answer_hands_its_batch_back_at_once() {
    let slow = json!({"name": "slow_echo", "nodes": [{"name": "echo", "addon": "echo", "property": {"chunk_delay_ms": 150}}]});
    let s = TestApp::builder()
        .bundled()
        .graph_file("slow_echo", slow)
        .env("DISPATCH_MODE", "immediate")
        .start();
    let w = s
        .start_ok("lr-2", "slow_echo", json!({"timeout": -1}))
        .await;
    let (chat, pid) = (w.chat(), w.pid);
    let text = "one two three four five six seven eight nine ten eleven twelve";
    s.post_message(&chat, user_message(text)).await;
    // Wait until the answer is being streamed, then kill the worker.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            let r = s.list_messages(&chat, "?limit=5").await;
            r.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["stream_state"] == "streaming")
        })
        .await
    );
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    // The supervisor restarts it (on-failure); the batch is handed back at once, not after 30 s.
    assert!(
        wait_until(Duration::from_secs(12), || async {
            s.answers(&chat).await.contains(&text.to_string())
        })
        .await,
        "the batch was not answered again within 12 s\n{}",
        s.output()
    );
    assert_eq!(s.answers(&chat).await.len(), 1, "answered exactly once");
}

#[tokio::test]
async fn own_workers_are_not_held_to_the_client_write_rate_limit() {
    let s = TestApp::builder()
        .bundled()
        .env("DISPATCH_MODE", "immediate")
        .env("WRITE_RATE_LIMIT_MAX", "3")
        .env("WRITE_RATE_LIMIT_WINDOW_MS", "1000")
        .start();
    let chat = s
        .start_ok("ow-3", "echo", json!({"timeout": -1}))
        .await
        .chat();
    let texts: Vec<String> = (0..10).map(|i| format!("message number {i}")).collect();
    let began = std::time::Instant::now();
    for t in &texts {
        // The client stays within its own budget: 3 writes a second.
        let r = loop {
            let r = s.post_message(&chat, user_message(t)).await;
            if r.status != 429 {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(r.status, 201, "{}", r.text);
    }
    // The client needs about 3.3 s for its 10 posts. Held to the same 3 writes a second, the
    // worker (several writes per answer: claim, typing, create, chunks, completes) would eat the
    // client's budget and need over 20 s itself; exempt, it answers as the messages come, and the
    // whole exchange takes about as long as the client's own posts.
    let left = Duration::from_secs(9).saturating_sub(began.elapsed());
    assert!(
        wait_until(left, || async {
            s.answers(&chat).await.len() == texts.len()
        })
        .await,
        "{:?}\n{}",
        s.answers(&chat).await,
        s.output()
    );
    assert!(
        began.elapsed() < Duration::from_secs(9),
        "{:?}",
        began.elapsed()
    );
    // A client over its budget still gets 429.
    let mut limited = false;
    for _ in 0..10 {
        let r = s.post_message(&chat, user_message("flood")).await;
        limited |= r.status == 429;
    }
    assert!(limited);
}
