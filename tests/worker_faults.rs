//! The real `agentd worker` process against the REAL agentd server, through a fault-injecting TCP
//! proxy ([`fault_proxy`]): the protocol calls the worker makes and what the real server makes of
//! them, and what the worker does when answers are lost, leases run out, the provider fails or it
//! is stopped mid-answer.
//!
//! Each test boots its own server (port 0, own temp dir and SQLite file) and spawns the worker
//! itself with `AGENTD_API_URL` pointing at the proxy in front of that server. The proxy records
//! every exchange, so the tests check the calls the worker sent as well as the server's answers.
//! What `/start`-supervised workers do end to end is in `worker_e2e.rs`.

#[path = "fixtures/fault_proxy.rs"]
mod fault_proxy;
#[path = "fixtures/openai_standin.rs"]
mod openai_standin;
mod support;

use std::time::Duration;

use fault_proxy::{Exchange, Fault, FaultProxy};
use openai_standin::Standin;
use serde_json::{json, Value};
use support::{repo_root, wait_until, TestApp, WorkerProcess, SOON};

/// Runs `agentd worker --property FILE` for one graph of `nodes`, talking to `api`
/// (`.../api/v1`). `env` adds to (or overrides) the worker's environment; without
/// `AGENTD_CHAT_ID` the worker is an unscoped pool worker.
fn spawn_worker(api: &str, nodes: Value, env: &[(&str, &str)]) -> WorkerProcess {
    WorkerProcess::builder(json!({"_ten": {"predefined_graphs": [
        {"name": "g", "auto_start": true, "nodes": nodes, "connections": []}
    ]}}))
    .env("AGENTD_API_URL", api)
    .env("AGENTD_WORKER_ID", "w-1")
    .env("AGENTD_AGENT_ID", "echo")
    // Short long-polls: a worker re-claims soon after a lease comes back.
    .env("AGENTD_CLAIM_WAIT_MS", "2000")
    .envs(env)
    .spawn()
}

/// A real server (bundled config plus `env`) and a proxy in front of it.
fn server(env: &[(&str, &str)]) -> (TestApp, FaultProxy) {
    let s = TestApp::builder().bundled().envs(env).start();
    let p = FaultProxy::start(&s.base_url);
    (s, p)
}

/// The API root through the proxy.
fn api(p: &FaultProxy) -> String {
    format!("{}/api/v1", p.url)
}

fn echo(property: Value) -> Value {
    json!([{"type": "extension", "name": "echo", "addon": "echo", "property": property}])
}

/// Dispatch completions the server accepted (204), by batch id.
fn completed(p: &FaultProxy) -> Vec<String> {
    p.calls("POST", "/api/v1/dispatch/*/complete")
        .iter()
        .filter(|e| e.status == Some(204))
        .map(|e| e.path.split('/').nth(4).unwrap().to_string())
        .collect()
}

fn deltas(calls: &[Exchange]) -> Vec<String> {
    calls
        .iter()
        .map(|c| c.body["deltaText"].as_str().unwrap_or("").to_string())
        .collect()
}

fn words(n: usize) -> String {
    (0..n)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn echo_speaks_the_dispatch_protocol_to_the_real_server() {
    let (s, p) = server(&[]);
    let chat = s.new_chat("echo").await;
    let mut w = spawn_worker(&api(&p), echo(json!({})), &[("AGENTD_CHAT_ID", &chat)]);
    w.ready(SOON);
    let a = s.ask(&chat, "hello big world", "hello big world").await;
    let a = a.unwrap_or_else(|| panic!("no answer\n{}\n{}", w.output(), s.output()));
    assert_eq!(a["stream_state"], "complete");
    // Scoped to its chat: answers as its own agent id.
    assert_eq!(a["sender_id"], "echo");

    // The batch was completed, once, by this worker, and the answer names it.
    assert!(
        wait_until(SOON, || async { completed(&p).len() == 1 }).await,
        "{:?}\n{}",
        p.log(),
        w.output()
    );
    let b = completed(&p)[0].clone();
    assert_eq!(a["trace"]["batchId"], b.as_str(), "{a}");
    let done = p.calls("POST", "/api/v1/dispatch/*/complete");
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].body["workerId"], "w-1");

    let claim = &p.calls("POST", "/api/v1/dispatch/claim")[0];
    assert_eq!(claim.body["workerId"], "w-1");
    assert_eq!(claim.body["chatId"], chat.as_str());
    assert!(claim.body.get("agentId").is_none(), "{:?}", claim.body);
    let creates = p.calls("POST", "/api/v1/chats/*/messages");
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert_eq!(creates[0].status, Some(201));
    assert_eq!(creates[0].body["streaming"], true);
    assert!(
        creates[0].body.get("content").is_none(),
        "{:?}",
        creates[0].body
    );
    assert_eq!(creates[0].body["modelId"], "echo");
    let chunks = p.calls("POST", "/api/v1/messages/*/chunks");
    assert_eq!(deltas(&chunks), ["hello ", "big ", "world"]);
    assert!(chunks.iter().all(|c| c.status == Some(200)), "{chunks:?}");
    let typing = p.calls("POST", "/api/v1/chats/*/typing");
    assert!(!typing.is_empty());
    assert_eq!(typing[0].body["agentId"], "echo");
    assert!(
        p.log().iter().all(|e| e.status.map_or(true, |s| s < 400)),
        "the server refused a call: {:?}",
        p.log()
    );

    let (st, took) = w.terminate(SOON).expect("worker ignored SIGTERM");
    assert!(st.success(), "{st:?}\n{}", w.output());
    // Inside the supervisor's grace, with room for a loaded machine.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(
        w.next_state(Duration::from_secs(2)).as_deref(),
        Some("STOPPING=1")
    );
}

#[tokio::test]
async fn whole_answers_when_the_node_says_stream_false() {
    let (s, p) = server(&[]);
    let chat = s.new_chat("echo").await;
    let w = spawn_worker(
        &api(&p),
        echo(json!({"prefix": "> ", "stream": false})),
        &[("AGENTD_CHAT_ID", &chat)],
    );
    w.ready(SOON);
    assert!(s.ask(&chat, "hi", "> hi").await.is_some(), "{}", w.output());
    assert!(wait_until(SOON, || async { completed(&p).len() == 1 }).await);
    let creates = p.calls("POST", "/api/v1/chats/*/messages");
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0].body["content"], "> hi");
    assert!(creates[0].body.get("streaming").is_none());
    assert!(p.calls("POST", "/api/v1/messages/*/chunks").is_empty());
    assert_eq!(s.agent_answers(&chat).await.len(), 1);
}

#[tokio::test]
async fn sigterm_mid_stream_cancels_the_message_and_hands_the_batch_back() {
    let (s, p) = server(&[]);
    let chat = s.new_chat("echo").await;
    let text = words(60);
    let mut w = spawn_worker(
        &api(&p),
        echo(json!({"chunk_delay_ms": 100})),
        &[("AGENTD_CHAT_ID", &chat)],
    );
    w.ready(SOON);
    s.post_user(&chat, &text).await;
    assert!(
        wait_until(SOON, || async {
            p.calls("POST", "/api/v1/messages/*/chunks").len() >= 2
        })
        .await,
        "{}",
        w.output()
    );
    let (st, took) = w.terminate(SOON).expect("worker ignored SIGTERM");
    assert!(st.success(), "{st:?}\n{}", w.output());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let first = s.agent_answers(&chat).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["stream_state"], "cancelled");
    let fail = p.calls("POST", "/api/v1/dispatch/*/fail");
    assert_eq!(fail.len(), 1, "{}", w.output());
    assert_eq!(fail[0].body["retryable"], true);
    assert_eq!(fail[0].body["retryDelayMs"], 0);
    assert_eq!(fail[0].status, Some(204), "the server took the failure");
    assert!(completed(&p).is_empty());

    // The real server offers the batch again at once: the next worker answers it, once.
    let w2 = spawn_worker(
        &api(&p),
        echo(json!({})),
        &[("AGENTD_CHAT_ID", &chat), ("AGENTD_WORKER_ID", "w-2")],
    );
    w2.ready(SOON);
    let a = s.wait_answer(&chat, &text).await;
    let a = a.unwrap_or_else(|| panic!("not answered again\n{}", w2.output()));
    assert_eq!(a["trace"]["batchId"], first[0]["trace"]["batchId"]);
    assert!(wait_until(SOON, || async { completed(&p).len() == 1 }).await);
    let all = s.agent_answers(&chat).await;
    assert_eq!(all.len(), 2, "{all:?}");
}

#[tokio::test]
async fn a_lost_lease_cancels_the_message_and_drops_the_batch() {
    let (s, p) = server(&[("DISPATCH_LEASE_MS", "1000")]);
    let chat = s.new_chat("echo").await;
    // The first heartbeat is held until the 1 s lease has long run out on the server.
    p.fault(
        "POST",
        "/api/v1/dispatch/*/heartbeat",
        1,
        Fault::Hold(Duration::from_secs(3)),
    );
    let text = words(50);
    let w = spawn_worker(
        &api(&p),
        echo(json!({"chunk_delay_ms": 150})),
        &[("AGENTD_CHAT_ID", &chat), ("AGENTD_LEASE_MS", "1000")],
    );
    w.ready(SOON);
    s.post_user(&chat, &text).await;
    assert!(
        wait_until(SOON, || async {
            s.agent_answers(&chat)
                .await
                .first()
                .is_some_and(|m| m["stream_state"] == "cancelled")
        })
        .await,
        "{:?}\n{}",
        s.agent_answers(&chat).await,
        w.output()
    );
    let hb = p.calls("POST", "/api/v1/dispatch/*/heartbeat");
    assert_eq!(hb[0].body["workerId"], "w-1");
    assert_eq!(hb[0].body["extendMs"], 1000);
    assert_eq!(hb[0].status, Some(409), "the lease was gone: {hb:?}");
    // The work was dropped: neither completed nor failed by the attempt that lost its lease.
    assert!(p.calls("POST", "/api/v1/dispatch/*/fail").is_empty());

    // The expired lease put the batch back; the worker claims it again and answers it, once.
    let a = s.wait_answer(&chat, &text).await;
    let a = a.unwrap_or_else(|| panic!("not answered again\n{}", w.output()));
    let first = s.agent_answers(&chat).await[0].clone();
    assert_eq!(a["trace"]["batchId"], first["trace"]["batchId"]);
    assert!(
        wait_until(SOON, || async { completed(&p).len() == 1 }).await,
        "{:?}",
        p.calls("POST", "/api/v1/dispatch/*/complete")
    );
    let all = s.agent_answers(&chat).await;
    let complete = all.iter().filter(|m| m["stream_state"] == "complete");
    assert_eq!(complete.count(), 1, "{all:?}");
    assert!(all.iter().all(|m| m["stream_state"] != "streaming"));
}

#[tokio::test]
async fn earlier_attempts_are_never_answered_twice() {
    let (s, p) = server(&[]);
    let (ca, cb) = (s.new_chat("echo").await, s.new_chat("echo").await);
    s.post_user(&ca, "first").await;
    s.post_user(&cb, "second").await;
    // The test plays a worker that died mid-way: it claims both batches with a 1 s lease...
    let claim = |chat: String| {
        let s = &s;
        async move {
            let r = s
                .claim_with(
                    json!({"workerId": "w-dead", "leaseMs": 1000, "waitMs": 10000, "chatId": chat}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.body["batchId"].as_str().unwrap().to_string()
        }
    };
    let (ba, bb) = (claim(ca.clone()).await, claim(cb.clone()).await);
    // ...answers the first in full but never completes it...
    let r = s
        .post_message(
            &ca,
            json!({"role": "agent", "senderId": "echo", "content": "first",
                   "trace": {"batchId": ba, "reply": "dead:1"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // ...and half streams the second.
    let r = s
        .post_message(
            &cb,
            json!({"role": "agent", "senderId": "echo", "streaming": true,
                   "trace": {"batchId": bb, "reply": "dead:1"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let half = r.body["id"].as_str().unwrap().to_string();
    let r = s.chunk(&half, "sec").await;
    assert_eq!(r.status, 200, "{}", r.text);

    // When the leases run out the batches come back to a live pool worker.
    let w = spawn_worker(&api(&p), echo(json!({"stream": false})), &[]);
    w.ready(SOON);
    assert!(
        wait_until(SOON, || async {
            let c = completed(&p);
            c.contains(&ba) && c.contains(&bb)
        })
        .await,
        "{:?}\n{}",
        p.log(),
        w.output()
    );
    // The first was already answered: only completed, nothing written.
    let a = s.agent_answers(&ca).await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert!(p
        .calls("POST", &format!("/api/v1/chats/{ca}/messages"))
        .is_empty());
    // The half-written second was cancelled and answered anew.
    let b = s.agent_answers(&cb).await;
    assert_eq!(b.len(), 2, "{b:?}");
    assert_eq!(b[0]["id"], half.as_str());
    assert_eq!(b[0]["stream_state"], "cancelled");
    assert_eq!(b[1]["content_final"], "second");
    assert_eq!(
        p.calls("POST", &format!("/api/v1/messages/{half}/cancel"))
            .len(),
        1
    );

    // The answer to a message creation is lost, but the server stored it: it is found, not resent.
    p.fault(
        "POST",
        &format!("/api/v1/chats/{ca}/messages"),
        1,
        Fault::LoseAnswer,
    );
    s.post_user(&ca, "third").await;
    assert!(
        wait_until(SOON, || async { completed(&p).len() == 3 }).await,
        "{:?}\n{}",
        p.log(),
        w.output()
    );
    let creates = p.calls("POST", &format!("/api/v1/chats/{ca}/messages"));
    assert_eq!(creates.len(), 1, "resent: {creates:?}");
    assert_eq!(creates[0].fault, Some(Fault::LoseAnswer));
    assert_eq!(creates[0].status, Some(201));
    let thirds: Vec<_> = s
        .agent_answers(&ca)
        .await
        .into_iter()
        .filter(|m| m["content_final"] == "third")
        .collect();
    assert_eq!(thirds.len(), 1, "{thirds:?}");
}

#[tokio::test]
async fn a_chunk_whose_answer_is_lost_is_not_sent_twice() {
    let (s, p) = server(&[]);
    let chat = s.new_chat("echo").await;
    p.fault("POST", "/api/v1/messages/*/chunks", 1, Fault::LoseAnswer);
    let w = spawn_worker(&api(&p), echo(json!({})), &[("AGENTD_CHAT_ID", &chat)]);
    w.ready(SOON);
    assert!(
        s.ask(&chat, "one two three", "one two three")
            .await
            .is_some(),
        "{}",
        w.output()
    );
    assert!(wait_until(SOON, || async { completed(&p).len() == 1 }).await);
    let chunks = p.calls("POST", "/api/v1/messages/*/chunks");
    assert_eq!(deltas(&chunks), ["one ", "two ", "three"], "{chunks:?}");
    assert_eq!(chunks[0].fault, Some(Fault::LoseAnswer));
    assert_eq!(chunks[0].status, Some(200), "the lost chunk was applied");
    assert_eq!(s.agent_answers(&chat).await.len(), 1);
}

#[tokio::test]
async fn a_request_whose_answer_is_lost_is_asked_once() {
    let (s, p) = server(&[]);
    let chat = s.new_chat("faq").await;
    p.fault("POST", "/api/v1/chats/*/requests", 1, Fault::LoseAnswer);
    let faq: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("graphs/faq.json")).unwrap(),
    )
    .unwrap();
    let w = spawn_worker(
        &api(&p),
        faq["nodes"].clone(),
        &[("AGENTD_CHAT_ID", &chat), ("AGENTD_AGENT_ID", "faq")],
    );
    w.ready(SOON);
    s.post_user(&chat, "help").await;
    assert!(
        wait_until(SOON, || async { completed(&p).len() == 1 }).await,
        "{:?}\n{}",
        p.log(),
        w.output()
    );
    // Sent again after the lost answer, with the same batch-derived key: the server asked once.
    let posts = p.calls("POST", "/api/v1/chats/*/requests");
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(posts[0].fault, Some(Fault::LoseAnswer));
    assert_eq!(posts[0].status, Some(201));
    let key = posts[0]
        .idempotency_key
        .clone()
        .expect("an Idempotency-Key");
    assert!(key.contains(&completed(&p)[0]), "{key}");
    assert_eq!(posts[1].idempotency_key.as_deref(), Some(key.as_str()));
    assert!(posts[1].status.is_some_and(|s| s < 300), "{posts:?}");
    let r = s.requests(&chat, "?status=all").await;
    let all = r.body["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["type"], "choice");
    let a = s.agent_answers(&chat).await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["sender_id"], "faq");
}

#[tokio::test]
async fn an_unscoped_pool_worker_answers_as_each_chats_agent() {
    let (s, p) = server(&[]);
    let w = spawn_worker(&api(&p), echo(json!({"stream": false})), &[]);
    w.ready(SOON);
    let (ca, cb) = (s.new_chat("echo").await, s.new_chat("faq").await);
    s.post_user(&ca, "one").await;
    s.post_user(&cb, "two").await;
    let a = s.wait_answer(&ca, "one").await;
    let b = s.wait_answer(&cb, "two").await;
    let (a, b) = (
        a.unwrap_or_else(|| panic!("{}", w.output())),
        b.unwrap_or_else(|| panic!("{}", w.output())),
    );
    // The server's agent hint (the chat's first agent) names the sender.
    assert_eq!(a["sender_id"], "echo");
    assert_eq!(
        b["sender_id"], "faq",
        "the echo worker answers as the faq chat's agent"
    );
    for c in p.calls("POST", "/api/v1/dispatch/claim") {
        assert!(
            c.body.get("chatId").is_none() && c.body.get("agentId").is_none(),
            "{:?}",
            c.body
        );
    }
}

fn llm(standin: &Standin, model: &str) -> Value {
    json!([{"type": "extension", "name": "llm", "addon": "openai_chat",
        "property": {"base_url": standin.url, "api_key": "sk-test", "model": model}}])
}

#[tokio::test]
async fn provider_errors_fail_the_batch_honestly() {
    let standin = Standin::start();
    // One attempt: each failure is final, and the server says so in the chat.
    let (s, p) = server(&[("DISPATCH_MAX_ATTEMPTS", "1")]);
    // (401 and a 500 that clears on retry are in worker_e2e.)
    for (i, (model, retryable, delay)) in [
        ("rate_limited", true, Some(7000)),
        ("server_error", true, None),
        ("cut", true, None),
    ]
    .into_iter()
    .enumerate()
    {
        let chat = s.new_chat("echo").await;
        let w = spawn_worker(&api(&p), llm(&standin, model), &[("AGENTD_CHAT_ID", &chat)]);
        w.ready(SOON);
        s.post_user(&chat, "a b c d e f").await;
        assert!(
            wait_until(SOON, || async {
                s.history(&chat).await.iter().any(|m| {
                    m["role"] == "system"
                        && m["content_final"]
                            .as_str()
                            .is_some_and(|t| t.starts_with("Dispatch failed after 1 attempts"))
                })
            })
            .await,
            "{model}: {:?}\n{}",
            s.history(&chat).await,
            w.output()
        );
        // The server's answer to the worker's `fail` (the system message may show first).
        let taken = || {
            p.calls("POST", "/api/v1/dispatch/*/fail")
                .into_iter()
                .filter(|e| e.status == Some(204))
                .collect::<Vec<_>>()
        };
        assert!(
            wait_until(SOON, || async { taken().len() == i + 1 }).await,
            "{model}: {:?}",
            p.log()
        );
        let fail = taken().pop().unwrap();
        assert_eq!(fail.body["workerId"], "w-1");
        assert_eq!(fail.body["retryable"], retryable, "{model}");
        assert_eq!(
            fail.body.get("retryDelayMs").and_then(Value::as_u64),
            delay,
            "{model}"
        );
        assert!(!fail.body["reason"].as_str().unwrap().is_empty());
        // Never a message left streaming.
        let answers = s.agent_answers(&chat).await;
        for m in &answers {
            assert_ne!(m["stream_state"], "streaming", "{model}: {m}");
        }
        if model == "cut" {
            assert_eq!(answers.len(), 1, "{answers:?}");
            assert_eq!(answers[0]["stream_state"], "cancelled");
        } else {
            assert!(answers.is_empty(), "{model}: {answers:?}");
        }
    }
}

/// A worker whose config is wrong stops before it needs any API.
fn broken_worker(nodes: Value) -> WorkerProcess {
    spawn_worker("http://127.0.0.1:9/api/v1", nodes, &[])
}

#[test]
fn a_missing_variable_stops_the_worker_naming_it() {
    let mut w = broken_worker(
        json!([{"type": "extension", "name": "llm", "addon": "openai_chat",
        "property": {"model": "m", "api_key": "${env:AGENTD_TEST_NOT_SET}"}}]),
    );
    let st = w.wait_exit(SOON).expect("the worker must exit");
    assert!(!st.success());
    w.wait_output("AGENTD_TEST_NOT_SET", Duration::from_secs(5));
    assert!(w.output().contains("AGENTD_TEST_NOT_SET"), "{}", w.output());
}

#[test]
fn an_unknown_addon_stops_the_worker_naming_it() {
    let mut w = broken_worker(
        json!([{"type": "extension", "name": "rtc", "addon": "agora_rtc", "property": {}}]),
    );
    let st = w.wait_exit(SOON).expect("the worker must exit");
    assert!(!st.success());
    w.wait_output("agora_rtc", Duration::from_secs(5));
    assert!(w.output().contains("agora_rtc"), "{}", w.output());
}
