//! End to end: the real server starts the bundled graphs' real workers through `/start`, and the
//! answers come back through the chat API and its event stream.

mod common;
#[path = "fixtures/openai_standin.rs"]
mod openai_standin;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{wait_until, TestServer};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use openai_standin::Standin;
use serde_json::{json, Value};

/// Generous: the machine may be loaded.
const SOON: Duration = Duration::from_secs(30);

/// Starts `graph` on `channel` through `/start`; returns its data (with `chat_id` and `pid`).
async fn start(s: &TestServer, channel: &str, graph: &str) -> Value {
    let r = s
        .post(
            "/start",
            json!({"request_id": "r-1", "channel_name": channel, "graph_name": graph}),
        )
        .await;
    assert_eq!(
        r.body["code"],
        "0",
        "start {graph}: {}\n{}",
        r.text,
        s.output()
    );
    assert!(r.body["data"]["chat_id"].is_string(), "{}", r.text);
    r.body["data"].clone()
}

async fn post_user(s: &TestServer, chat: &str, text: &str) -> Value {
    let r = s
        .post(
            &format!("/api/v1/chats/{chat}/messages"),
            json!({"role": "user", "senderId": "user:primary", "content": text}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body
}

/// The chat's messages, oldest first.
async fn messages(s: &TestServer, chat: &str) -> Vec<Value> {
    let r = s
        .get(&format!("/api/v1/chats/{chat}/messages?limit=200"))
        .await;
    let mut v = r.body["data"].as_array().cloned().unwrap_or_default();
    v.reverse();
    v
}

async fn agent_answers(s: &TestServer, chat: &str) -> Vec<Value> {
    messages(s, chat)
        .await
        .into_iter()
        .filter(|m| m["role"] == "agent")
        .collect()
}

/// Waits for a complete agent message with exactly `text`.
async fn wait_answer(s: &TestServer, chat: &str, text: &str) -> bool {
    wait_until(SOON, || async {
        agent_answers(s, chat)
            .await
            .iter()
            .any(|m| m["stream_state"] == "complete" && m["content_final"] == text)
    })
    .await
}

/// Collects every event of `GET /api/v1/events/stream` in the background.
fn follow_events(s: &TestServer) -> Arc<Mutex<Vec<Value>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let o = out.clone();
    let url = s.url("/api/v1/events/stream");
    tokio::spawn(async move {
        let Ok(res) = reqwest::Client::new().get(url).send().await else {
            return;
        };
        let mut events = res.bytes_stream().eventsource();
        while let Some(Ok(ev)) = events.next().await {
            if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                o.lock().unwrap().push(v);
            }
        }
    });
    out
}

fn events_of(events: &Arc<Mutex<Vec<Value>>>, kind: &str, chat: &str) -> Vec<Value> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind && e["payload"]["chatId"] == chat)
        .cloned()
        .collect()
}

async fn stop(s: &TestServer, channel: &str) -> Value {
    let r = s.post("/stop", json!({"channel_name": channel})).await;
    assert_eq!(r.body["code"], "0", "stop: {}", r.text);
    r.body
}

#[tokio::test]
async fn echo_answers_streamed_on_the_event_stream_and_in_the_list() {
    let s = TestServer::builder().bundled().start();
    let events = follow_events(&s);
    let data = start(&s, "e2e-echo", "echo").await;
    let chat = data["chat_id"].as_str().unwrap().to_string();
    // Let the event stream connect before the message goes out.
    tokio::time::sleep(Duration::from_millis(200)).await;
    post_user(&s, &chat, "hello agent world").await;
    assert!(
        wait_answer(&s, &chat, "hello agent world").await,
        "{}",
        s.output()
    );

    let answer = agent_answers(&s, &chat).await.pop().unwrap();
    assert_eq!(answer["sender_id"], "echo");
    let id = answer["id"].as_str().unwrap().to_string();
    assert!(
        wait_until(SOON, || async {
            !events_of(&events, "message.streaming.complete", &chat).is_empty()
        })
        .await
    );
    let created = events_of(&events, "message.created", &chat);
    assert!(
        created
            .iter()
            .any(|e| e["payload"]["messageId"] == id.as_str()
                && e["payload"]["streamState"] == "streaming"),
        "{created:?}"
    );
    let chunks: String = events_of(&events, "message.streaming.chunk", &chat)
        .iter()
        .filter(|e| e["payload"]["messageId"] == id.as_str())
        .map(|e| e["payload"]["deltaText"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(chunks, "hello agent world");
    let done = &events_of(&events, "message.streaming.complete", &chat)[0];
    assert_eq!(done["payload"]["finalText"], "hello agent world");
    assert!(!events_of(&events, "chat.typing", &chat).is_empty());

    let r = s.post("/ping", json!({"channel_name": "e2e-echo"})).await;
    assert_eq!(r.body["code"], "0", "{}", r.text);
    stop(&s, "e2e-echo").await;
    let pid = data["pid"].as_i64().unwrap_or(0) as i32;
    assert!(wait_until(SOON, || async { !common::pid_alive(pid) }).await);
}

#[tokio::test]
async fn faq_asks_a_choice_and_answers_the_resolution() {
    let s = TestServer::builder().bundled().start();
    let data = start(&s, "e2e-faq", "faq").await;
    let chat = data["chat_id"].as_str().unwrap().to_string();

    post_user(&s, &chat, "What are your opening hours?").await;
    assert!(
        wait_answer(
            &s,
            &chat,
            "We are open Monday to Friday, 9:00 to 17:00 UTC."
        )
        .await,
        "{}",
        s.output()
    );

    post_user(&s, &chat, "help").await;
    assert!(
        wait_until(SOON, || async {
            let r = s.get(&format!("/api/v1/chats/{chat}/requests")).await;
            r.body["data"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await,
        "no request asked\n{}",
        s.output()
    );
    let r = s.get(&format!("/api/v1/chats/{chat}/requests")).await;
    let request = r.body["data"][0].clone();
    assert_eq!(request["type"], "choice");
    let options: Vec<&str> = request["config"]["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert!(options.contains(&"pricing"), "{options:?}");

    let rid = request["id"].as_str().unwrap();
    let r = s
        .post(
            &format!("/api/v1/requests/{rid}/resolve"),
            json!({"selectedOptionIds": ["pricing"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        wait_answer(&s, &chat, "agentd is free and open source.").await,
        "{}",
        s.output()
    );
    // The choice was asked once.
    let all = s
        .get(&format!("/api/v1/chats/{chat}/requests?status=all"))
        .await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 1);
    stop(&s, "e2e-faq").await;
}

#[tokio::test]
async fn assistant_streams_from_an_openai_compatible_server_with_memory() {
    let standin = Standin::start();
    let s = TestServer::builder()
        .bundled()
        .env("OPENAI_API_KEY", "sk-test")
        .env("OPENAI_BASE_URL", &standin.url)
        .env("OPENAI_MODEL", "gpt-test")
        .start();
    let data = start(&s, "e2e-assistant", "assistant").await;
    let chat = data["chat_id"].as_str().unwrap().to_string();
    post_user(&s, &chat, "my name is Ada").await;
    assert!(
        wait_answer(&s, &chat, "You said: my name is Ada").await,
        "{}",
        s.output()
    );
    post_user(&s, &chat, "what is my name?").await;
    assert!(
        wait_answer(&s, &chat, "You said: what is my name?").await,
        "{}",
        s.output()
    );

    let reqs = standin.requests();
    let last = &reqs.last().unwrap().body;
    assert_eq!(last["model"], "gpt-test");
    assert_eq!(
        reqs.last().unwrap().headers["authorization"],
        "Bearer sk-test"
    );
    let contents: Vec<&str> = last["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert!(contents.contains(&"my name is Ada"), "memory: {contents:?}");
    assert!(
        contents.contains(&"You said: my name is Ada"),
        "memory: {contents:?}"
    );
    assert_eq!(*contents.last().unwrap(), "what is my name?");
    stop(&s, "e2e-assistant").await;
}

#[tokio::test]
async fn a_rejected_key_fails_the_batch_for_good_with_no_message_left_streaming() {
    let standin = Standin::start();
    let s = TestServer::builder()
        .bundled()
        .env("OPENAI_API_KEY", "sk-bad")
        .env("OPENAI_BASE_URL", &standin.url)
        .env("OPENAI_MODEL", "unauthorized")
        .start();
    let data = start(&s, "e2e-401", "assistant").await;
    let chat = data["chat_id"].as_str().unwrap().to_string();
    post_user(&s, &chat, "hello").await;
    assert!(
        wait_until(SOON, || async {
            messages(&s, &chat).await.iter().any(|m| {
                m["role"] == "system"
                    && m["content_final"].as_str().is_some_and(|t| {
                        t.starts_with("Dispatch failed after 1 attempts") && t.contains("401")
                    })
            })
        })
        .await,
        "{:?}\n{}",
        messages(&s, &chat).await,
        s.output()
    );
    assert!(agent_answers(&s, &chat)
        .await
        .iter()
        .all(|m| m["stream_state"] != "streaming"));
    stop(&s, "e2e-401").await;
}

#[tokio::test]
async fn python_echo_answers_through_the_same_protocol() {
    let s = TestServer::builder().bundled().start();
    let data = start(&s, "e2e-python", "python_echo").await;
    let chat = data["chat_id"].as_str().unwrap().to_string();
    post_user(&s, &chat, "hi from rust").await;
    assert!(
        wait_answer(&s, &chat, "(python) hi from rust").await,
        "{}",
        s.output()
    );
    let r = s.post("/ping", json!({"channel_name": "e2e-python"})).await;
    assert_eq!(r.body["code"], "0");
    stop(&s, "e2e-python").await;
}

#[tokio::test]
async fn two_channels_never_see_each_others_messages() {
    let s = TestServer::builder().bundled().start();
    let a = start(&s, "e2e-a", "echo").await;
    let b = start(&s, "e2e-b", "echo").await;
    let (ca, cb) = (
        a["chat_id"].as_str().unwrap().to_string(),
        b["chat_id"].as_str().unwrap().to_string(),
    );
    assert_ne!(ca, cb);
    for i in 0..3 {
        post_user(&s, &ca, &format!("alpha {i}")).await;
        post_user(&s, &cb, &format!("beta {i}")).await;
    }
    let all_answered = |chat: String, word: &'static str| {
        let s = &s;
        async move {
            wait_until(SOON, || async {
                let t: String = agent_answers(s, &chat)
                    .await
                    .iter()
                    .filter_map(|m| m["content_final"].as_str().map(str::to_string))
                    .collect::<Vec<_>>()
                    .join("\n");
                (0..3).all(|i| t.contains(&format!("{word} {i}")))
            })
            .await
        }
    };
    assert!(all_answered(ca.clone(), "alpha").await, "{}", s.output());
    assert!(all_answered(cb.clone(), "beta").await, "{}", s.output());
    for m in agent_answers(&s, &ca).await {
        assert!(
            !m["content_final"].as_str().unwrap_or("").contains("beta"),
            "{m}"
        );
    }
    for m in agent_answers(&s, &cb).await {
        assert!(
            !m["content_final"].as_str().unwrap_or("").contains("alpha"),
            "{m}"
        );
    }
    stop(&s, "e2e-a").await;
    stop(&s, "e2e-b").await;
}

fn slow_echo() -> Value {
    json!({
        "name": "slow_echo",
        "nodes": [{"type": "extension", "name": "echo", "addon": "echo",
                   "property": {"chunk_delay_ms": 150}}],
        "connections": []
    })
}

fn long_text() -> String {
    (0..40)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn a_worker_killed_mid_answer_is_restarted_and_answers_once() {
    let s = TestServer::builder()
        .bundled()
        .graph_file("slow_echo", slow_echo())
        .env("AGENTD_LEASE_MS", "2000")
        .start();
    let data = start(&s, "e2e-kill", "slow_echo").await;
    let chat = data["chat_id"].as_str().unwrap().to_string();
    let pid = data["pid"].as_i64().expect("pid") as i32;
    let text = long_text();
    post_user(&s, &chat, &text).await;
    assert!(
        wait_until(SOON, || async {
            agent_answers(&s, &chat).await.iter().any(|m| {
                m["stream_state"] == "streaming"
                    && m["content_partial"].as_str().is_some_and(|p| p.len() > 6)
            })
        })
        .await,
        "{}",
        s.output()
    );
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    assert!(
        wait_until(Duration::from_secs(60), || async {
            agent_answers(&s, &chat)
                .await
                .iter()
                .any(|m| m["stream_state"] == "complete")
        })
        .await,
        "{:?}\n{}",
        agent_answers(&s, &chat).await,
        s.output()
    );
    // Give a duplicate the time to show up, if there were one.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answers = agent_answers(&s, &chat).await;
    let complete: Vec<_> = answers
        .iter()
        .filter(|m| m["stream_state"] == "complete")
        .collect();
    assert_eq!(complete.len(), 1, "{answers:?}");
    assert_eq!(complete[0]["content_final"], text.as_str());
    assert!(
        answers.iter().all(|m| m["stream_state"] != "streaming"),
        "{answers:?}"
    );
    let list = s.get("/list").await;
    assert!(list.text.contains("e2e-kill"), "{}", list.text);
    stop(&s, "e2e-kill").await;
}

#[tokio::test]
async fn stop_mid_stream_cancels_the_message_quickly() {
    let s = TestServer::builder()
        .bundled()
        .graph_file("slow_echo", slow_echo())
        .start();
    let data = start(&s, "e2e-term", "slow_echo").await;
    let chat = data["chat_id"].as_str().unwrap().to_string();
    post_user(&s, &chat, &long_text()).await;
    assert!(
        wait_until(SOON, || async {
            agent_answers(&s, &chat)
                .await
                .iter()
                .any(|m| m["stream_state"] == "streaming" && !m["content_partial"].is_null())
        })
        .await,
        "{}",
        s.output()
    );
    let t = std::time::Instant::now();
    let r = stop(&s, "e2e-term").await;
    // The worker exits 0 on SIGTERM, inside the 2 s grace: never killed.
    let data = &r["data"];
    assert_ne!(data["how"], "killed", "{r}");
    if let Some(code) = data.get("exit_code").filter(|c| !c.is_null()) {
        assert_eq!(code, 0, "{r}");
    }
    if let Some(ms) = data["took_ms"].as_u64() {
        assert!(ms < 2000, "{r}");
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "{:?} {r}",
        t.elapsed()
    );
    let answers = agent_answers(&s, &chat).await;
    assert!(
        answers.iter().all(|m| m["stream_state"] == "cancelled"),
        "{answers:?}"
    );
}

#[tokio::test]
async fn an_unscoped_worker_serves_several_chats_as_a_pool_worker() {
    let s = TestServer::builder().bundled().start();
    let dir = tempfile::tempdir().unwrap();
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_root().join("property.json")).unwrap(),
    )
    .unwrap();
    let echo = doc["ten"]["predefined_graphs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "echo")
        .unwrap()
        .clone();
    let prop = dir.path().join("property.json");
    std::fs::write(
        &prop,
        json!({"ten": {"predefined_graphs": [echo]}}).to_string(),
    )
    .unwrap();
    let mut child = std::process::Command::new(common::agentd_bin())
        .args(["worker", "--property"])
        .arg(&prop)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AGENTD_API_URL", s.url("/api/v1"))
        .env("AGENTD_WORKER_ID", "pool-1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(if std::env::var_os("TEST_LOG").is_some() {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        })
        .spawn()
        .unwrap();

    let mut chats = Vec::new();
    for i in 0..3 {
        let r = s
            .post(
                "/api/v1/chats",
                json!({"agentIds": ["echo"], "modelId": "default", "firstMessage": format!("pool {i}")}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        chats.push(r.body["id"].as_str().unwrap().to_string());
    }
    for (i, chat) in chats.iter().enumerate() {
        assert!(
            wait_answer(&s, chat, &format!("pool {i}")).await,
            "chat {i}\n{}",
            s.output()
        );
        let a = agent_answers(&s, chat).await;
        assert_eq!(a[0]["sender_id"], "echo");
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let t = std::time::Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the worker ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(st.success(), "{st:?}");
}

#[tokio::test]
async fn the_worker_uses_the_api_key_it_is_given() {
    let s = TestServer::builder()
        .bundled()
        .env("AGENTD_API_KEY", "s3cret")
        .start();
    let authed =
        |path: &str, body: Value| s.client.post(s.url(path)).bearer_auth("s3cret").json(&body);
    let r = s
        .send(authed(
            "/start",
            json!({"channel_name": "e2e-auth", "graph_name": "echo"}),
        ))
        .await;
    assert_eq!(r.body["code"], "0", "{}\n{}", r.text, s.output());
    let chat = r.body["data"]["chat_id"].as_str().unwrap().to_string();
    let r = s
        .send(authed(
            &format!("/api/v1/chats/{chat}/messages"),
            json!({"role": "user", "senderId": "user:primary", "content": "secret handshake"}),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(
        wait_answer(&s, &chat, "secret handshake").await,
        "{}",
        s.output()
    );
    let r = s
        .send(authed("/stop", json!({"channel_name": "e2e-auth"})))
        .await;
    assert_eq!(r.body["code"], "0", "{}", r.text);
}

#[tokio::test]
async fn a_provider_hiccup_is_retried_and_answered_once() {
    let standin = Standin::start();
    let s = TestServer::builder()
        .bundled()
        .env("OPENAI_API_KEY", "sk-test")
        .env("OPENAI_BASE_URL", &standin.url)
        .env("OPENAI_MODEL", "flaky")
        .start();
    let data = start(&s, "e2e-flaky", "assistant").await;
    let chat = data["chat_id"].as_str().unwrap().to_string();
    post_user(&s, &chat, "are you there?").await;
    assert!(
        wait_answer(&s, &chat, "You said: are you there?").await,
        "{}",
        s.output()
    );
    // The first try got a 500 and failed retryable; the retry answered.
    assert_eq!(standin.requests().len(), 2);
    let all = messages(&s, &chat).await;
    assert!(all.iter().all(|m| m["role"] != "system"), "{all:?}");
    assert_eq!(
        all.iter().filter(|m| m["role"] == "agent").count(),
        1,
        "{all:?}"
    );
    stop(&s, "e2e-flaky").await;
}

#[tokio::test]
async fn the_built_in_worker_keeps_a_watchdog_fed() {
    let s = TestServer::builder()
        .bundled()
        .graph_file(
            "watched_echo",
            json!({
                "name": "watched_echo",
                "runtime": {"watchdog_ms": 600},
                "nodes": [{"type": "extension", "name": "echo", "addon": "echo", "property": {}}],
                "connections": []
            }),
        )
        .start();
    let data = start(&s, "e2e-watchdog", "watched_echo").await;
    let pid = data["pid"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let l = s.get("/list").await;
    let me = l.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["channel_name"] == "e2e-watchdog")
        .cloned()
        .unwrap();
    assert_eq!(
        me["pid"],
        pid,
        "the watchdog killed the worker: {me}\n{}",
        s.output()
    );
    assert_eq!(me["restarts"], 0, "{me}");
    let chat = data["chat_id"].as_str().unwrap().to_string();
    post_user(&s, &chat, "still here").await;
    assert!(wait_answer(&s, &chat, "still here").await, "{}", s.output());
    stop(&s, "e2e-watchdog").await;
}
