//! The real `agentd worker` process against an in-process stand-in of the dispatch API: the
//! protocol calls it makes, in order and in shape, for every addon and failure path.

mod common;
#[path = "fixtures/fake_api.rs"]
mod fake_api;
#[path = "fixtures/openai_standin.rs"]
mod openai_standin;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_api::FakeApi;
use openai_standin::Standin;
use serde_json::{json, Value};

/// Generous: the machine may be loaded.
const SOON: Duration = Duration::from_secs(20);

struct Worker {
    child: Child,
    output: Arc<Mutex<String>>,
    notify: UnixDatagram,
    _dir: tempfile::TempDir,
}

impl Worker {
    fn spawn(api: &FakeApi, nodes: Value, env: &[(&str, &str)]) -> Worker {
        Worker::spawn_program(api, nodes, env, &[common::agentd_bin(), "worker"])
    }

    /// Runs `argv` plus `--property FILE` with the worker environment.
    fn spawn_program(api: &FakeApi, nodes: Value, env: &[(&str, &str)], argv: &[&str]) -> Worker {
        let dir = tempfile::tempdir().unwrap();
        let prop = dir.path().join("property.json");
        let doc = json!({"_ten": {"predefined_graphs": [
            {"name": "g", "auto_start": true, "nodes": nodes, "connections": []}
        ]}});
        std::fs::write(&prop, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        let sock_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&sock_path).unwrap();
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .arg("--property")
            .arg(&prop)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("AGENTD_API_URL", &api.url)
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut has_chat = false;
        for (k, v) in env {
            has_chat |= *k == "AGENTD_CHAT_ID" || *k == "UNSCOPED";
            if *k != "UNSCOPED" {
                cmd.env(k, v);
            }
        }
        if !has_chat {
            cmd.env("AGENTD_CHAT_ID", "c1");
        }
        if !env.iter().any(|(k, _)| *k == "AGENTD_WORKER_ID") {
            cmd.env("AGENTD_WORKER_ID", "w-1");
        }
        if !env.iter().any(|(k, _)| *k == "AGENTD_AGENT_ID") {
            cmd.env("AGENTD_AGENT_ID", "echo");
        }
        let mut child = cmd.spawn().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        for s in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(s).lines().map_while(Result::ok) {
                    if std::env::var_os("TEST_LOG").is_some() {
                        eprintln!("[worker] {line}");
                    }
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        Worker {
            child,
            output,
            notify,
            _dir: dir,
        }
    }

    /// The next notify datagram, if one comes within `within`.
    fn next_state(&self, within: Duration) -> Option<String> {
        self.notify.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 256];
        let n = self.notify.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    fn ready(&self) {
        let s = self.next_state(SOON);
        assert_eq!(s.as_deref(), Some("READY=1"), "output:\n{}", self.output());
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let t = Instant::now();
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, t.elapsed());
            }
            assert!(t.elapsed() < SOON, "worker ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < within {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if t.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn echo(property: Value) -> Value {
    json!([{"type": "extension", "name": "echo", "addon": "echo", "property": property}])
}

fn done(api: &FakeApi, b: &str) -> bool {
    api.batch_state(b) == "completed"
}

#[test]
fn echo_streams_its_answer_then_completes_and_stops_on_sigterm() {
    let api = FakeApi::start();
    let mut w = Worker::spawn(&api, echo(json!({})), &[]);
    w.ready();
    let b = api.push_user("c1", "hello big world", Some("other"));
    assert!(wait_for(SOON, || done(&api, &b)), "{}", w.output());

    let answers = api.agent_messages("c1");
    assert_eq!(answers.len(), 1, "{answers:?}");
    let a = &answers[0];
    assert_eq!(a["content_final"], "hello big world");
    assert_eq!(a["stream_state"], "complete");
    // Scoped to its chat: answers as its own agent id, not the hint.
    assert_eq!(a["sender_id"], "echo");
    assert_eq!(a["trace"]["batchId"], b.as_str());

    let claim = &api.calls_to("/dispatch/claim")[0];
    assert_eq!(claim.body["workerId"], "w-1");
    assert_eq!(claim.body["chatId"], "c1");
    assert!(claim.body.get("agentId").is_none());
    let create = &api.posts("/chats/c1/messages")[0];
    assert_eq!(create.body["streaming"], true);
    assert!(create.body.get("content").is_none(), "{:?}", create.body);
    assert_eq!(create.body["modelId"], "echo");
    let chunks: Vec<String> = api
        .calls_to("/chunks")
        .iter()
        .map(|c| c.body["deltaText"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(chunks, ["hello ", "big ", "world"]);
    let typing = api.calls_to("/chats/c1/typing");
    assert!(!typing.is_empty());
    assert_eq!(typing[0].body["agentId"], "echo");
    let complete = api.calls_to(&format!("/dispatch/{b}/complete"));
    assert_eq!(complete.len(), 1);
    assert_eq!(complete[0].body["workerId"], "w-1");

    let (st, took) = w.terminate();
    assert!(st.success(), "{st:?}\n{}", w.output());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(
        w.next_state(Duration::from_secs(1)).as_deref(),
        Some("STOPPING=1")
    );
}

#[test]
fn whole_answers_when_the_node_says_stream_false() {
    let api = FakeApi::start();
    let w = Worker::spawn(&api, echo(json!({"prefix": "> ", "stream": false})), &[]);
    w.ready();
    let b = api.push_user("c1", "hi", None);
    assert!(wait_for(SOON, || done(&api, &b)), "{}", w.output());
    let creates = api.posts("/chats/c1/messages");
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0].body["content"], "> hi");
    assert!(creates[0].body.get("streaming").is_none());
    assert!(api.calls_to("/chunks").is_empty());
    assert_eq!(api.agent_messages("c1")[0]["content_final"], "> hi");
}

#[test]
fn faq_asks_a_choice_and_answers_the_selection() {
    let api = FakeApi::start();
    let faq: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_root().join("graphs/faq.json")).unwrap(),
    )
    .unwrap();
    let w = Worker::spawn(&api, faq["nodes"].clone(), &[("AGENTD_AGENT_ID", "faq")]);
    w.ready();

    let b = api.push_user("c1", "When are you open?", None);
    assert!(wait_for(SOON, || done(&api, &b)), "{}", w.output());
    assert!(api.agent_messages("c1")[0]["content_final"]
        .as_str()
        .unwrap()
        .contains("Monday to Friday"));

    let b = api.push_user("c1", "help", None);
    assert!(wait_for(SOON, || done(&api, &b)), "{}", w.output());
    let reqs = api.calls_to("/chats/c1/requests");
    let req = reqs
        .iter()
        .find(|c| c.method == "POST")
        .expect("a request was asked");
    assert_eq!(req.body["type"], "choice");
    assert!(req.idempotency_key.as_deref().unwrap().contains(&b));
    let rid = api.state.lock().unwrap().requests[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let b = api.resolve(
        "c1",
        &rid,
        json!({"selectedOptionIds": ["pricing"]}),
        "[Request resolved: \"What do you need help with?\"] Selected: pricing",
    );
    assert!(wait_for(SOON, || done(&api, &b)), "{}", w.output());
    let last = api.agent_messages("c1").last().cloned().unwrap();
    assert_eq!(last["content_final"], "agentd is free and open source.");
    assert_eq!(last["sender_id"], "faq");
}

#[test]
fn a_lost_lease_cancels_the_message_and_drops_the_batch() {
    let api = FakeApi::start();
    api.state.lock().unwrap().heartbeat_conflict = true;
    let text = (0..40).map(|i| format!("w{i} ")).collect::<String>();
    let w = Worker::spawn(
        &api,
        echo(json!({"chunk_delay_ms": 100})),
        &[("AGENTD_LEASE_MS", "1000")],
    );
    w.ready();
    let b = api.push_user("c1", &text, None);
    assert!(
        wait_for(SOON, || api
            .agent_messages("c1")
            .first()
            .is_some_and(|m| m["stream_state"] == "cancelled")),
        "{}",
        w.output()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(api.calls_to(&format!("/dispatch/{b}/complete")).is_empty());
    assert!(api.calls_to(&format!("/dispatch/{b}/fail")).is_empty());
    // Heartbeats went out well inside the lease.
    let hb = api.calls_to(&format!("/dispatch/{b}/heartbeat"));
    assert_eq!(hb[0].body["workerId"], "w-1");
    assert_eq!(hb[0].body["extendMs"], 1000);
}

#[test]
fn sigterm_mid_stream_cancels_the_message_and_fails_retryable() {
    let api = FakeApi::start();
    let text = (0..60).map(|i| format!("w{i} ")).collect::<String>();
    let mut w = Worker::spawn(&api, echo(json!({"chunk_delay_ms": 100})), &[]);
    w.ready();
    let b = api.push_user("c1", &text, None);
    assert!(
        wait_for(SOON, || api.calls_to("/chunks").len() >= 2),
        "{}",
        w.output()
    );
    let (st, took) = w.terminate();
    assert!(st.success(), "{st:?}\n{}", w.output());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let m = &api.agent_messages("c1")[0];
    assert_eq!(m["stream_state"], "cancelled");
    let fail = api.calls_to(&format!("/dispatch/{b}/fail"));
    assert_eq!(fail.len(), 1, "{}", w.output());
    assert_eq!(fail[0].body["retryable"], true);
    assert_eq!(fail[0].body["retryDelayMs"], 0);
}

fn llm(standin: &Standin, model: &str, extra: Value) -> Value {
    let mut p = json!({"base_url": standin.url, "api_key": "sk-test", "model": model});
    if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    json!([{"type": "extension", "name": "llm", "addon": "openai_chat", "property": p}])
}

#[test]
fn openai_chat_streams_with_memory_and_model_id() {
    let api = FakeApi::start();
    let s = Standin::start();
    api.seed_message(
        json!({"id": "m-old-1", "chat_id": "c1", "role": "user", "sender_id": "user:primary",
        "content_final": "my name is Ada", "stream_state": "complete", "trace": null}),
    );
    api.seed_message(
        json!({"id": "m-old-2", "chat_id": "c1", "role": "agent", "sender_id": "assistant",
        "content_final": "Hello Ada", "stream_state": "complete", "trace": null}),
    );
    let w = Worker::spawn(
        &api,
        llm(
            &s,
            "gpt-test",
            json!({"system_prompt": "Be brief.", "memory": 5, "temperature": 0.1}),
        ),
        &[("AGENTD_AGENT_ID", "assistant")],
    );
    w.ready();
    let b = api.push_user("c1", "what is my name?", None);
    assert!(wait_for(SOON, || done(&api, &b)), "{}", w.output());
    let a = api.agent_messages("c1").last().cloned().unwrap();
    assert_eq!(a["content_final"], "You said: what is my name?");
    // Streamed, in pieces that add up (deltas that come together are sent together).
    let chunks: Vec<String> = api
        .posts("/chunks")
        .iter()
        .map(|c| c.body["deltaText"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(chunks.concat(), "You said: what is my name?");
    assert!(!chunks.is_empty() && chunks.len() <= 5, "{chunks:?}");
    assert_eq!(
        api.posts("/chats/c1/messages")[0].body["modelId"],
        "gpt-test"
    );
    let sent = &s.requests()[0].body;
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"], "{sent}");
    assert_eq!(sent["messages"][1]["content"], "my name is Ada");
    assert_eq!(sent["stream"], true);
}

#[test]
fn provider_errors_fail_the_batch_honestly() {
    let s = Standin::start();
    for (model, retryable, delay) in [
        ("unauthorized", false, None),
        ("rate_limited", true, Some(7000)),
        ("server_error", true, None),
        ("cut", true, None),
    ] {
        let api = FakeApi::start();
        let w = Worker::spawn(&api, llm(&s, model, json!({})), &[]);
        w.ready();
        let b = api.push_user("c1", "a b c d e f", None);
        assert!(
            wait_for(SOON, || api.batch_state(&b) == "failed"),
            "{model}: {}",
            w.output()
        );
        let fail = &api.calls_to(&format!("/dispatch/{b}/fail"))[0];
        assert_eq!(fail.body["retryable"], retryable, "{model}");
        assert_eq!(
            fail.body.get("retryDelayMs").and_then(Value::as_u64),
            delay,
            "{model}"
        );
        assert!(!fail.body["reason"].as_str().unwrap().is_empty());
        // Never a message left streaming.
        for m in api.agent_messages("c1") {
            assert_ne!(m["stream_state"], "streaming", "{model}: {m}");
        }
        if model == "cut" {
            let m = &api.agent_messages("c1")[0];
            assert_eq!(m["stream_state"], "cancelled");
        }
    }
}

#[test]
fn an_unscoped_pool_worker_serves_several_chats() {
    let api = FakeApi::start();
    let w = Worker::spawn(&api, echo(json!({"stream": false})), &[("UNSCOPED", "1")]);
    w.ready();
    let b1 = api.push_user("chat-a", "one", Some("alpha"));
    let b2 = api.push_user("chat-b", "two", Some("beta"));
    let b3 = api.push_user("chat-c", "three", None);
    assert!(
        wait_for(SOON, || done(&api, &b1)
            && done(&api, &b2)
            && done(&api, &b3)),
        "{}",
        w.output()
    );
    assert_eq!(api.agent_messages("chat-a")[0]["sender_id"], "alpha");
    assert_eq!(api.agent_messages("chat-b")[0]["sender_id"], "beta");
    assert_eq!(api.agent_messages("chat-c")[0]["sender_id"], "echo");
    assert_eq!(api.agent_messages("chat-c")[0]["content_final"], "three");
    for c in api.calls_to("/dispatch/claim") {
        assert!(
            c.body.get("chatId").is_none() && c.body.get("agentId").is_none(),
            "{:?}",
            c.body
        );
    }
}

#[test]
fn earlier_attempts_are_never_answered_twice() {
    let api = FakeApi::start();
    // Batch 1 was answered by a worker that died before completing it.
    let b1 = api.push_user("c1", "first", None);
    api.seed_message(
        json!({"id": "m-prev", "chat_id": "c1", "role": "agent", "sender_id": "echo",
        "content_final": "first", "stream_state": "complete", "trace": {"batchId": b1}}),
    );
    // Batch 2 was half streamed.
    let b2 = api.push_user("c1", "second", None);
    api.seed_message(json!({"id": "m-half", "chat_id": "c1", "role": "agent", "sender_id": "echo",
        "content_final": null, "content_partial": "sec", "stream_state": "streaming", "trace": {"batchId": b2}}));
    // Batch 3: the answer to the create call is lost, but the message was stored.
    api.state.lock().unwrap().lose_create_answers = 0;
    let w = Worker::spawn(&api, echo(json!({"stream": false})), &[]);
    w.ready();
    assert!(
        wait_for(SOON, || done(&api, &b1) && done(&api, &b2)),
        "{}",
        w.output()
    );
    let answers = api.agent_messages("c1");
    let complete: Vec<_> = answers
        .iter()
        .filter(|m| m["stream_state"] == "complete")
        .collect();
    assert_eq!(complete.len(), 2, "{answers:?}");
    let half = answers.iter().find(|m| m["id"] == "m-half").unwrap();
    assert_eq!(half["stream_state"], "cancelled");

    api.state.lock().unwrap().lose_create_answers = 1;
    let b3 = api.push_user("c1", "third", None);
    assert!(wait_for(SOON, || done(&api, &b3)), "{}", w.output());
    let thirds = api
        .agent_messages("c1")
        .into_iter()
        .filter(|m| m["content_final"] == "third")
        .count();
    assert_eq!(thirds, 1);
}

#[test]
fn a_chunk_whose_answer_is_lost_is_not_sent_twice() {
    let api = FakeApi::start();
    let w = Worker::spawn(&api, echo(json!({})), &[]);
    w.ready();
    api.state.lock().unwrap().lose_chunk_answers = 1;
    let b = api.push_user("c1", "one two three", None);
    assert!(wait_for(SOON, || done(&api, &b)), "{}", w.output());
    let chunks: Vec<String> = api
        .posts("/chunks")
        .iter()
        .map(|c| c.body["deltaText"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(chunks, ["one ", "two ", "three"]);
    assert_eq!(
        api.agent_messages("c1")[0]["content_final"],
        "one two three"
    );
}

#[test]
fn a_missing_variable_stops_the_worker_naming_it() {
    let api = FakeApi::start();
    let mut w = Worker::spawn(
        &api,
        json!([{"type": "extension", "name": "llm", "addon": "openai_chat",
            "property": {"model": "m", "api_key": "${env:AGENTD_TEST_NOT_SET}"}}]),
        &[],
    );
    let st = w.wait_exit(SOON).expect("the worker must exit");
    assert!(!st.success());
    assert!(
        wait_for(Duration::from_secs(2), || w
            .output()
            .contains("AGENTD_TEST_NOT_SET")),
        "{}",
        w.output()
    );
}

#[test]
fn an_unknown_addon_stops_the_worker_naming_it() {
    let api = FakeApi::start();
    let mut w = Worker::spawn(
        &api,
        json!([{"type": "extension", "name": "rtc", "addon": "agora_rtc", "property": {}}]),
        &[],
    );
    let st = w.wait_exit(SOON).expect("the worker must exit");
    assert!(!st.success());
    assert!(
        wait_for(Duration::from_secs(2), || w.output().contains("agora_rtc")),
        "{}",
        w.output()
    );
}

#[test]
fn the_watchdog_is_fed() {
    let api = FakeApi::start();
    let w = Worker::spawn(&api, echo(json!({})), &[("WATCHDOG_USEC", "200000")]);
    let mut states = Vec::new();
    while states
        .iter()
        .filter(|s: &&String| *s == "WATCHDOG=1")
        .count()
        < 3
    {
        match w.next_state(SOON) {
            Some(s) => states.push(s),
            None => panic!("no watchdog: {states:?}\n{}", w.output()),
        }
    }
    assert!(states.contains(&"READY=1".to_string()), "{states:?}");
}

#[test]
fn the_python_worker_speaks_the_same_protocol() {
    let api = FakeApi::start();
    let script = common::repo_root().join("graphs/python_echo.py");
    let mut w = Worker::spawn_program(
        &api,
        echo(json!({"prefix": "(python) "})),
        &[],
        &["python3", script.to_str().unwrap()],
    );
    w.ready();
    let b = api.push_user("c1", "hello there", None);
    assert!(wait_for(SOON, || done(&api, &b)), "{}", w.output());
    let a = &api.agent_messages("c1")[0];
    assert_eq!(a["content_final"], "(python) hello there");
    assert_eq!(a["sender_id"], "echo");
    let create = &api.posts("/chats/c1/messages")[0];
    assert!(create.body.get("content").is_none());
    assert_eq!(api.calls_to("/dispatch/claim")[0].body["chatId"], "c1");
    let (st, took) = w.terminate();
    assert!(st.success(), "{st:?}\n{}", w.output());
    assert!(took < Duration::from_secs(2), "took {took:?}");
}
