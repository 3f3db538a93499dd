//! End to end: the real server starts the bundled graphs' real workers through `/start`, and the
//! answers come back through the chat API and its event stream.

#[path = "fixtures/openai_standin.rs"]
mod openai_standin;
mod support;

use std::time::Duration;

use openai_standin::Standin;
use serde_json::{json, Value};
use support::{pid_alive, repo_root, wait_until, Ev, TestApp, WorkerProcess, SOON};

#[tokio::test]
async fn echo_answers_streamed_on_the_event_stream_and_in_the_list() {
    let s = TestApp::builder().bundled().start();
    let mut events = s.events("", None).await;
    let data = s.start_ok("e2e-echo", "echo", json!({})).await;
    let chat = data.chat();
    assert!(
        s.ask(&chat, "hello agent world", "hello agent world")
            .await
            .is_some(),
        "{}",
        s.output()
    );

    let answer = s.agent_answers(&chat).await.pop().unwrap();
    assert_eq!(answer["sender_id"], "echo");
    let id = answer["id"].as_str().unwrap().to_string();
    let of =
        |e: &Ev, kind: &str| e.data["type"] == kind && e.data["payload"]["chatId"] == chat.as_str();
    assert!(events
        .next_matching(SOON, |e| of(e, "message.streaming.complete"))
        .await
        .is_some());
    let events_of = |kind: &str| -> Vec<Value> {
        events
            .seen()
            .iter()
            .filter(|e| of(e, kind))
            .map(|e| e.data.clone())
            .collect()
    };
    let created = events_of("message.created");
    assert!(
        created
            .iter()
            .any(|e| e["payload"]["messageId"] == id.as_str()
                && e["payload"]["streamState"] == "streaming"),
        "{created:?}"
    );
    let chunks: String = events_of("message.streaming.chunk")
        .iter()
        .filter(|e| e["payload"]["messageId"] == id.as_str())
        .map(|e| e["payload"]["deltaText"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(chunks, "hello agent world");
    let done = &events_of("message.streaming.complete")[0];
    assert_eq!(done["payload"]["finalText"], "hello agent world");
    assert!(!events_of("chat.typing").is_empty());

    let r = s.ping("e2e-echo").await;
    assert_eq!(r.body["code"], "0", "{}", r.text);
    s.stop_ok("e2e-echo").await;
    let pid = data.pid;
    assert!(wait_until(SOON, || async { !pid_alive(pid) }).await);
}

#[tokio::test]
async fn faq_asks_a_choice_and_answers_the_resolution() {
    let s = TestApp::builder().bundled().start();
    let data = s.start_ok("e2e-faq", "faq", json!({})).await;
    let chat = data.chat();

    assert!(
        s.ask(
            &chat,
            "What are your opening hours?",
            "We are open Monday to Friday, 9:00 to 17:00 UTC."
        )
        .await
        .is_some(),
        "{}",
        s.output()
    );

    s.post_user(&chat, "help").await;
    assert!(
        wait_until(SOON, || async {
            let r = s.requests(&chat, "").await;
            r.body["data"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await,
        "no request asked\n{}",
        s.output()
    );
    let r = s.requests(&chat, "").await;
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
        .resolve(rid, json!({"selectedOptionIds": ["pricing"]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        s.wait_answer(&chat, "agentd is free and open source.")
            .await
            .is_some(),
        "{}",
        s.output()
    );
    // The choice was asked once.
    let all = s.requests(&chat, "?status=all").await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 1);
    s.stop_ok("e2e-faq").await;
}

#[tokio::test]
async fn assistant_streams_from_an_openai_compatible_server_with_memory() {
    let standin = Standin::start();
    let s = TestApp::builder()
        .bundled()
        .openai(&standin.url, "sk-test", "gpt-test")
        .start();
    let data = s.start_ok("e2e-assistant", "assistant", json!({})).await;
    let chat = data.chat();
    assert!(
        s.ask(&chat, "my name is Ada", "You said: my name is Ada")
            .await
            .is_some(),
        "{}",
        s.output()
    );
    assert!(
        s.ask(&chat, "what is my name?", "You said: what is my name?")
            .await
            .is_some(),
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
    s.stop_ok("e2e-assistant").await;
}

#[tokio::test]
async fn a_rejected_key_fails_the_batch_for_good_with_no_message_left_streaming() {
    let standin = Standin::start();
    let s = TestApp::builder()
        .bundled()
        .openai(&standin.url, "sk-bad", "unauthorized")
        .start();
    let data = s.start_ok("e2e-401", "assistant", json!({})).await;
    let chat = data.chat();
    s.post_user(&chat, "hello").await;
    assert!(
        wait_until(SOON, || async {
            s.history(&chat).await.iter().any(|m| {
                m["role"] == "system"
                    && m["content_final"].as_str().is_some_and(|t| {
                        t.starts_with("Dispatch failed after 1 attempts") && t.contains("401")
                    })
            })
        })
        .await,
        "{:?}\n{}",
        s.history(&chat).await,
        s.output()
    );
    assert!(s
        .agent_answers(&chat)
        .await
        .iter()
        .all(|m| m["stream_state"] != "streaming"));
    s.stop_ok("e2e-401").await;
}

#[tokio::test]
async fn python_echo_answers_through_the_same_protocol() {
    let s = TestApp::builder().bundled().start();
    let data = s.start_ok("e2e-python", "python_echo", json!({})).await;
    let chat = data.chat();
    assert!(
        s.ask(&chat, "hi from rust", "(python) hi from rust")
            .await
            .is_some(),
        "{}",
        s.output()
    );
    let r = s.ping("e2e-python").await;
    assert_eq!(r.body["code"], "0");
    s.stop_ok("e2e-python").await;
}

#[tokio::test]
async fn two_channels_never_see_each_others_messages() {
    let s = TestApp::builder().bundled().start();
    let a = s.start_ok("e2e-a", "echo", json!({})).await;
    let b = s.start_ok("e2e-b", "echo", json!({})).await;
    let (ca, cb) = (a.chat(), b.chat());
    assert_ne!(ca, cb);
    for i in 0..3 {
        s.post_user(&ca, &format!("alpha {i}")).await;
        s.post_user(&cb, &format!("beta {i}")).await;
    }
    let all_answered = |chat: String, word: &'static str| {
        let s = &s;
        async move {
            wait_until(SOON, || async {
                let t: String = s
                    .agent_answers(&chat)
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
    for m in s.agent_answers(&ca).await {
        assert!(
            !m["content_final"].as_str().unwrap_or("").contains("beta"),
            "{m}"
        );
    }
    for m in s.agent_answers(&cb).await {
        assert!(
            !m["content_final"].as_str().unwrap_or("").contains("alpha"),
            "{m}"
        );
    }
    s.stop_ok("e2e-a").await;
    s.stop_ok("e2e-b").await;
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
    let s = TestApp::builder()
        .bundled()
        .graph_file("slow_echo", slow_echo())
        .env("AGENTD_LEASE_MS", "2000")
        .start();
    let data = s.start_ok("e2e-kill", "slow_echo", json!({})).await;
    let chat = data.chat();
    let pid = data.pid;
    let text = long_text();
    s.post_user(&chat, &text).await;
    assert!(
        wait_until(SOON, || async {
            s.agent_answers(&chat).await.iter().any(|m| {
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
            s.agent_answers(&chat)
                .await
                .iter()
                .any(|m| m["stream_state"] == "complete")
        })
        .await,
        "{:?}\n{}",
        s.agent_answers(&chat).await,
        s.output()
    );
    // Give a duplicate the time to show up, if there were one.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answers = s.agent_answers(&chat).await;
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
    s.stop_ok("e2e-kill").await;
}

#[tokio::test]
async fn stop_mid_stream_cancels_the_message_quickly() {
    let s = TestApp::builder()
        .bundled()
        .graph_file("slow_echo", slow_echo())
        .start();
    let data = s.start_ok("e2e-term", "slow_echo", json!({})).await;
    let chat = data.chat();
    s.post_user(&chat, &long_text()).await;
    assert!(
        wait_until(SOON, || async {
            s.agent_answers(&chat)
                .await
                .iter()
                .any(|m| m["stream_state"] == "streaming" && !m["content_partial"].is_null())
        })
        .await,
        "{}",
        s.output()
    );
    let t = std::time::Instant::now();
    let r = s.stop_ok("e2e-term").await;
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
    let answers = s.agent_answers(&chat).await;
    assert!(
        answers.iter().all(|m| m["stream_state"] == "cancelled"),
        "{answers:?}"
    );
}

#[tokio::test]
async fn an_unscoped_worker_serves_several_chats_as_a_pool_worker() {
    let s = TestApp::builder().bundled().start();
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("property.json")).unwrap())
            .unwrap();
    let echo = doc["ten"]["predefined_graphs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "echo")
        .unwrap()
        .clone();
    let mut worker = WorkerProcess::builder(json!({"ten": {"predefined_graphs": [echo]}}))
        .env("AGENTD_API_URL", s.url("/api/v1"))
        .env("AGENTD_WORKER_ID", "pool-1")
        .spawn();

    let mut chats = Vec::new();
    for i in 0..3 {
        let r = s
            .create_chat(json!({"agentIds": ["echo"], "modelId": "default", "firstMessage": format!("pool {i}")}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        chats.push(r.body["id"].as_str().unwrap().to_string());
    }
    for (i, chat) in chats.iter().enumerate() {
        assert!(
            s.wait_answer(chat, &format!("pool {i}")).await.is_some(),
            "chat {i}\n{}",
            s.output()
        );
        let a = s.agent_answers(chat).await;
        assert_eq!(a[0]["sender_id"], "echo");
    }
    let (st, _) = worker
        .terminate(Duration::from_secs(5))
        .expect("the worker ignored SIGTERM");
    assert!(st.success(), "{st:?}");
}

#[tokio::test]
async fn the_worker_uses_the_api_key_it_is_given() {
    let s = TestApp::builder()
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
        s.wait_answer(&chat, "secret handshake").await.is_some(),
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
    let s = TestApp::builder()
        .bundled()
        .openai(&standin.url, "sk-test", "flaky")
        .start();
    let data = s.start_ok("e2e-flaky", "assistant", json!({})).await;
    let chat = data.chat();
    assert!(
        s.ask(&chat, "are you there?", "You said: are you there?")
            .await
            .is_some(),
        "{}",
        s.output()
    );
    // The first try got a 500 and failed retryable; the retry answered.
    assert_eq!(standin.requests().len(), 2);
    let all = s.history(&chat).await;
    assert!(all.iter().all(|m| m["role"] != "system"), "{all:?}");
    assert_eq!(
        all.iter().filter(|m| m["role"] == "agent").count(),
        1,
        "{all:?}"
    );
    s.stop_ok("e2e-flaky").await;
}

#[tokio::test]
async fn the_built_in_worker_keeps_a_watchdog_fed() {
    let s = TestApp::builder()
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
    let data = s.start_ok("e2e-watchdog", "watched_echo", json!({})).await;
    let pid = data.pid;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let me = s.worker("e2e-watchdog").await.unwrap();
    assert_eq!(
        me["pid"],
        pid,
        "the watchdog killed the worker: {me}\n{}",
        s.output()
    );
    assert_eq!(me["restarts"], 0, "{me}");
    let chat = data.chat();
    assert!(
        s.ask(&chat, "still here", "still here").await.is_some(),
        "{}",
        s.output()
    );
    s.stop_ok("e2e-watchdog").await;
}
