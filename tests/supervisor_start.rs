//! Supervisor: `/start` builds the per-worker file, waits for readiness, and reports workers that
//! die during start; the worker environment contract.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{fixture, graph, pid_alive, started, wait_until, TestApp};

#[tokio::test]
async fn deep_override_lands_merge_patched_with_start_fields() {
    let rich = json!({
        "ten": {"log": {"level": 3}, "predefined_graphs": [
            {"name": "voice", "auto_start": false, "graph": {"nodes": [
                {"type": "extension", "name": "agora_rtc", "addon": "agora_rtc", "property": {"channel": "x", "stream_id": 1, "token": "t"}},
                {"type": "extension", "name": "agora_rtm", "addon": "agora_rtm", "property": {"channel": "x"}},
                {"type": "extension", "name": "llm", "addon": "openai", "property": {
                    "model": "m1", "params": {"temperature": 0.5, "deep": {"a": 1, "b": 2}, "drop": true}, "keep": "yes"}},
                {"type": "extension", "name": "tts", "addon": "tts", "property": {"channel": "old", "voice": "v"}},
                {"type": "extension", "name": "bare", "addon": "bare"}
            ], "connections": []},
             "runtime": {"command": [fixture("coop.sh").to_string_lossy()]}},
            {"name": "other", "auto_start": true, "graph": {"nodes": [], "connections": []}}
        ]}
    });
    let s = TestApp::builder().property_json(rich).start();
    let r = s
        .start(
            "room-1",
            "voice",
            json!({
                "user_uid": 42, "token": "tok",
                "properties": {
                    "llm": {"params": {"deep": {"b": 3, "c": 4}, "drop": null}, "model": "m2"},
                    "bare": {"x": [1, 2]}
                }
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = &r.body["data"];
    assert_eq!(d["channel_name"], "room-1");
    assert_eq!(d["graph_name"], "voice");
    assert!(d["timeout"].as_i64().unwrap() > 0);
    assert!(d["chat_id"].is_string(), "{d}");

    let files = s.run_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let doc: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(doc["ten"]["log"]["level"], 3);
    let graphs = doc["ten"]["predefined_graphs"].as_array().unwrap();
    assert_eq!(graphs.len(), 1);
    assert_eq!(graphs[0]["auto_start"], true);
    let nodes = graphs[0]["graph"]["nodes"].as_array().unwrap();
    let node = |n: &str| nodes.iter().find(|x| x["name"] == n).unwrap()["property"].clone();
    assert_eq!(
        node("llm"),
        json!({"model": "m2", "params": {"temperature": 0.5, "deep": {"a": 1, "b": 3, "c": 4}}, "keep": "yes"})
    );
    assert_eq!(node("bare"), json!({"x": [1, 2]}));
    let rtc = node("agora_rtc");
    assert_eq!(rtc["channel"], "room-1");
    assert_eq!(rtc["remote_stream_id"], 42);
    assert_eq!(rtc["token"], "tok");
    // bot_uid was not sent: stream_id keeps its value.
    assert_eq!(rtc["stream_id"], 1);
    assert_eq!(node("agora_rtm")["channel"], "room-1");
    assert!(node("agora_rtm").get("user_id").is_none());
    assert_eq!(node("tts")["channel"], "room-1");

    // The file goes with the worker.
    let stop = s.stop("room-1").await;
    assert_eq!(stop.status, 200, "{}", stop.text);
    assert!(s.run_files().is_empty());

    // A node the graph does not have: 400 listing its nodes.
    let r = s
        .start("room-2", "voice", json!({"properties": {"nope": {"a": 1}}}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["code"], "10100");
    assert!(
        r.text.contains("nope") && r.text.contains("agora_rtc"),
        "{}",
        r.text
    );
    assert!(s.list().await.is_empty());
}

#[tokio::test]
async fn worker_environment_contract() {
    let s = TestApp::builder()
        .env("AGENTD_API_KEY", "k3y")
        .graph_file("g", graph(&["coop.sh"], json!({"watchdog_ms": 60000})))
        .start();
    let r = s
        .send(
            s.client
                .post(s.url("/start"))
                .bearer_auth("k3y")
                .json(&json!({"channel_name": "env-ch", "graph_name": "g", "request_id": "req-9"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        s.wait_log("env-ch", "WATCHDOG_USEC", Duration::from_secs(5))
            .await
    );
    let log = s.log("env-ch");
    for want in [
        "AGENTD_CHANNEL=env-ch".to_string(),
        "AGENTD_GRAPH=g".into(),
        "AGENTD_AGENT_ID=g".into(),
        "AGENTD_REQUEST_ID=req-9".into(),
        format!("AGENTD_SERVER_URL={}", s.base_url),
        format!("AGENTD_API_URL={}/api/v1", s.base_url),
        "AGENTD_API_KEY=k3y".into(),
        format!(
            "AGENTD_CHAT_ID={}",
            r.body["data"]["chat_id"].as_str().unwrap()
        ),
        format!(
            "AGENTD_WORKER_ID={}",
            r.body["data"]["worker_id"].as_str().unwrap()
        ),
        "NOTIFY_SOCKET=@agentd-".into(),
        "WATCHDOG_USEC=60000000".into(),
        "--property /".into(),
    ] {
        assert!(log.contains(&want), "missing {want:?} in:\n{log}");
    }
}

#[tokio::test]
async fn readiness_by_notify_and_by_settle() {
    let s = TestApp::builder()
        .env("WORKER_START_TIMEOUT_MS", "2500")
        .graph_file(
            "slow",
            graph(
                &["notify.py", "--ready-after", "0.8"],
                json!({"ready": "notify"}),
            ),
        )
        .graph_file(
            "mute",
            graph(&["notify.py", "--no-ready"], json!({"ready": "notify"})),
        )
        .graph_file("settle", graph(&["coop.sh"], json!({"settle_ms": 700})))
        .start();

    let t = Instant::now();
    let r = s.start("n1", "slow", json!({})).await;
    let pid = started(&r).pid;
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );
    // The worker's own output reaches its log asynchronously, after the notification.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            s.log("n1").contains("sent READY=1")
        })
        .await
    );
    assert!(pid_alive(pid));
    assert_eq!(s.list().await[0]["state"], "running");

    // Never ready: 10101 after the start timeout, nothing left behind.
    let t = Instant::now();
    let r = s.start("n2", "mute", json!({})).await;
    assert_eq!(r.status, 504, "{}", r.text);
    assert_eq!(r.body["code"], "10101");
    assert!(t.elapsed() >= Duration::from_millis(2500));
    assert!(r.text.contains("notify worker up"), "{}", r.text);
    assert_eq!(s.list().await.len(), 1);
    assert_eq!(s.run_files().len(), 1);

    let t = Instant::now();
    let r = s.start("s1", "settle", json!({})).await;
    assert!(pid_alive(started(&r).pid));
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn worker_dying_during_start_gives_10101_with_output() {
    let s = TestApp::builder()
        .graph_file(
            "dies",
            graph(&["crash.sh", "0.05", "7"], json!({"settle_ms": 1500})),
        )
        .graph_file(
            "missing",
            json!({"nodes": [], "runtime": {"command": ["/nonexistent/worker"]}}),
        )
        .start();
    let r = s.start("d1", "dies", json!({})).await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert_eq!(r.body["code"], "10101");
    assert_eq!(r.body["msg"], "start worker failed");
    assert_eq!(r.body["data"]["exit_status"], "exit code 7");
    let out = r.body["data"]["output"].as_array().unwrap();
    assert!(
        out.iter().any(|l| l == "about to fail with 7"),
        "{}",
        r.text
    );
    // Nothing left: no entry, no file, and the channel is free again.
    assert!(s.list().await.is_empty());
    assert!(s.run_files().is_empty());
    assert_eq!(s.ping("d1").await.status, 404);

    let r = s.start("d2", "missing", json!({})).await;
    assert_eq!(r.status, 500, "{}", r.text);
    assert_eq!(r.body["code"], "10101");
    assert!(r.text.contains("/nonexistent/worker"), "{}", r.text);
    assert!(s.list().await.is_empty());
}

#[tokio::test]
async fn env_placeholders_are_checked_not_resolved() {
    let g = |prop: Value| {
        let mut g = graph(&["coop.sh"], json!({}));
        g["nodes"][0]["property"] = prop;
        g
    };
    let s = TestApp::builder()
        .env("SET_VAR", "secret-value")
        .graph_file(
            "needs",
            g(json!({"key": "${env:UNSET_ONE}", "deep": [{"k": "${env:UNSET_TWO}"}]})),
        )
        .graph_file(
            "fine",
            g(json!({"key": "${env:SET_VAR}", "d": "${env:UNSET_ONE|dflt}"})),
        )
        .start();
    let r = s.start("p1", "needs", json!({})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["code"], "10100");
    assert_eq!(
        r.body["data"]["variables"],
        json!(["UNSET_ONE", "UNSET_TWO"])
    );
    assert!(s.list().await.is_empty());

    let r = s.start("p2", "fine", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let text = std::fs::read_to_string(&s.run_files()[0]).unwrap();
    assert!(
        text.contains("${env:SET_VAR}") && !text.contains("secret-value"),
        "{text}"
    );
}

#[tokio::test]
async fn builtin_worker_refuses_unknown_addons() {
    let s = TestApp::builder()
        .graph_file(
            "alien",
            json!({"nodes": [{"name": "ok", "addon": "echo"}, {"name": "weird", "addon": "martian"}]}),
        )
        .start();
    let r = s.start("a1", "alien", json!({})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["code"], "10100");
    assert!(r.text.contains("alien") && r.text.contains("weird") && r.text.contains("martian"));
}

#[tokio::test]
async fn hot_reload_of_a_graph_and_of_a_broken_file() {
    let s = TestApp::builder()
        .graph_file("hot", graph(&["coop.sh"], json!({})))
        .start();
    let path = s.root().join("graphs").join("hot.json");
    let mut g = graph(&["coop.sh"], json!({}));
    g["nodes"][0]["property"]["greeting"] = "reloaded".into();
    std::fs::write(&path, serde_json::to_vec(&g).unwrap()).unwrap();
    let mut seen = false;
    for i in 0..100 {
        let ch = format!("h{i}");
        let r = s.start(&ch, "hot", json!({})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let text = std::fs::read_to_string(&s.run_files()[0]).unwrap();
        s.stop(&ch).await;
        if text.contains("reloaded") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the edit was never picked up");

    // A broken edit keeps the last good catalog.
    std::fs::write(&path, b"{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let graphs = s.graphs().await;
    assert!(graphs.text.contains("\"hot\""), "{}", graphs.text);
    let r = s.start("after-broken", "hot", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let text = std::fs::read_to_string(&s.run_files()[0]).unwrap();
    assert!(text.contains("reloaded"));
    assert!(
        s.wait_output("hot.json", Duration::from_secs(3)).await,
        "{}",
        s.output()
    );
}

#[tokio::test]
async fn notify_from_outside_the_worker_group_is_ignored() {
    use std::os::linux::net::SocketAddrExt;
    let s = TestApp::builder()
        .env("WORKER_START_TIMEOUT_MS", "2000")
        .graph_file("quiet", graph(&["coop.sh"], json!({"ready": "notify"})))
        .start();
    let spoof = async {
        assert!(
            s.wait_log("q", "NOTIFY_SOCKET=@", Duration::from_secs(5))
                .await
        );
        let log = s.log("q");
        let name = log
            .lines()
            .find_map(|l| l.strip_prefix("NOTIFY_SOCKET=@"))
            .unwrap()
            .to_string();
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
        sock.send_to_addr(b"READY=1", &addr).unwrap();
    };
    let (r, ()) = tokio::join!(s.start("q", "quiet", json!({})), spoof);
    assert_eq!(r.status, 504, "{}", r.text);
    assert_eq!(r.body["code"], "10101");
}

/// A server with a `sleeper` graph: a worker that is up 1 ms after its spawn and stays.
fn sleeper_app() -> TestApp {
    TestApp::builder()
        .graph_file(
            "sleeper",
            json!({"nodes": [], "runtime": {"command": ["sh", "-c", "exec sleep 60"],
                "ready": "settle", "settle_ms": 1}}),
        )
        .start()
}

/// A cold start's answer names a chat that exists by then (it is written while the worker
/// starts), and every later start of the channel is given that same chat.
#[tokio::test]
async fn the_answered_chat_exists_and_stays_the_channels() {
    let s = sleeper_app();
    let first = s
        .start_ok("keeps-chat", "sleeper", json!({"timeout": -1}))
        .await;
    let chat = s.get(&format!("/api/v1/chats/{}", first.chat())).await;
    assert_eq!(
        chat.status, 200,
        "the answered chat does not exist: {}",
        chat.text
    );
    s.stop_ok("keeps-chat").await;
    let second = s
        .start_ok("keeps-chat", "sleeper", json!({"timeout": -1}))
        .await;
    assert_eq!(second.chat(), first.chat());
}

/// A start that fails before its worker runs (here: the per-worker file cannot be written) makes
/// no chat for the channel; the next start of the channel, once it can, makes exactly one.
#[tokio::test]
async fn a_start_that_fails_before_its_worker_runs_leaves_no_chat() {
    let s = sleeper_app();
    let run = s.root().join("data").join("run");
    std::fs::remove_dir_all(&run).unwrap();
    std::fs::write(&run, "not a directory").unwrap();
    let r = s.start("no-file", "sleeper", json!({"timeout": -1})).await;
    assert_ne!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("property file"), "{}", r.text);
    let chats = |r: support::Reply| r.body["data"].as_array().cloned().unwrap_or_default();
    // On a database server the chat's write is queued before the file is written, to overlap
    // the read's round trip; the chat it leaves is the one the channel gets next time.
    if !support::on_postgres() {
        let listed = chats(s.get("/api/v1/chats").await);
        assert!(listed.is_empty(), "a chat was left behind: {listed:?}");
    }
    std::fs::remove_file(&run).unwrap();
    std::fs::create_dir(&run).unwrap();
    let started = s
        .start_ok("no-file", "sleeper", json!({"timeout": -1}))
        .await;
    let listed = chats(s.get("/api/v1/chats").await);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], started.chat(), "{listed:?}");
}
