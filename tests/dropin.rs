//! Drop-in for real clients (issue 11): TEN's playground and demo frontends replayed as they
//! send, in both `SUPERVISOR_STATUS` modes; the chat API under `/api`; the agent messages stream
//! over GET for `EventSource`; 405 with `Allow` in each family's envelope; what the server says
//! about missing graph sources, in its logs, in `--help`, and while it drains.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{agentd_bin, graph, Reply, TestApp, SOON};

/// A graph named like the demo's, with the nodes its overrides name.
fn voice_assistant() -> Value {
    let mut g = graph(&["coop.sh"], json!({}));
    g["nodes"] = json!([
        {"type": "extension", "name": "llm", "addon": "custom",
         "property": {"prompt": "", "greeting": "hello"}},
        {"type": "extension", "name": "tts", "addon": "custom",
         "property": {"params": {"voice_name": "Ruth"}}}
    ]);
    g
}

fn server(mode: &str) -> TestApp {
    TestApp::builder()
        .graph_file("voice_assistant", voice_assistant())
        .env("SUPERVISOR_STATUS", mode)
        .env("WORKERS_MAX", "2")
        .start()
}

/// The playground's `apiStartService` body (its numbers are JavaScript numbers).
fn playground_start(channel: &str) -> Value {
    json!({
        "request_id": "0f3c6c1e-2a3b-4d5e-8f90-123456789abc",
        "channel_name": channel,
        "user_uid": 176573,
        "graph_name": "voice_assistant",
        "language": "en-US",
        "voice_type": "female"
    })
}

/// The demo's body as its `/api/agents/start` route forwards it: the client's `greeting` and
/// `prompt` folded into nested `properties` per node.
fn demo_start(channel: &str) -> Value {
    json!({
        "request_id": "5b2e9d04-77aa-4c3e-9e1b-abcdefabcdef",
        "channel_name": channel,
        "user_uid": 2147483647,
        "graph_name": "voice_assistant",
        "language": "en-US",
        "voice_type": "male",
        "greeting": "Hey, I'm TEN Agent",
        "prompt": "Keep answers short.",
        "properties": {
            "llm": {"greeting": "Hey, I'm TEN Agent", "prompt": "Keep answers short."},
            "tts": {"params": {"voice_name": "Matthew"}}
        }
    })
}

/// TEN's frontends call through axios, which resolves only a 2xx answer (then their code reads
/// `code`) and throws on anything else: `Ok(code)` or `Err(status)`.
fn axios(r: &Reply) -> Result<String, u16> {
    if (200..300).contains(&r.status) {
        Ok(r.body["code"].as_str().unwrap_or_default().to_string())
    } else {
        Err(r.status)
    }
}

#[tokio::test]
async fn tens_frontends_read_their_codes_in_both_modes() {
    for mode in ["honest", "ten"] {
        let s = server(mode);
        let ten = mode == "ten";
        // Either the code reaches the frontend (ten), or axios throws with the honest status.
        let expect = |code: &str, status: u16| {
            if ten {
                Ok(code.to_string())
            } else {
                Err(status)
            }
        };

        // The playground pings on page load for a channel with no worker.
        let r = s
            .post(
                "/ping",
                json!({"request_id": "p1", "channel_name": "agora_pg"}),
            )
            .await;
        assert_eq!(axios(&r), expect("10002", 404), "{mode}: {}", r.text);
        assert_eq!(r.body["code"], "10002", "{mode}");
        assert_eq!(
            r.body["data"]["status"], 404,
            "{mode}: the honest status stays in data"
        );

        let r = s.post("/start", playground_start("agora_pg")).await;
        assert_eq!(
            axios(&r),
            Ok("0".into()),
            "{mode}: {}\n{}",
            r.text,
            s.output()
        );
        let r = s
            .post(
                "/ping",
                json!({"request_id": "p2", "channel_name": "agora_pg"}),
            )
            .await;
        assert_eq!(axios(&r), Ok("0".into()), "{mode}: {}", r.text);

        // A busy channel: the playground's button must not stay loading.
        let r = s.post("/start", playground_start("agora_pg")).await;
        assert_eq!(axios(&r), expect("10003", 409), "{mode}: {}", r.text);

        let r = s.post("/start", demo_start("agora_demo")).await;
        assert_eq!(
            axios(&r),
            Ok("0".into()),
            "{mode}: {}\n{}",
            r.text,
            s.output()
        );

        // The worker limit (WORKERS_MAX=2).
        let r = s.post("/start", demo_start("agora_third")).await;
        assert_eq!(axios(&r), expect("10001", 429), "{mode}: {}", r.text);

        // An unknown graph names the graphs there are.
        let mut body = demo_start("agora_x");
        body["graph_name"] = json!("va_openai_v2v");
        let r = s.post("/start", body).await;
        assert_eq!(axios(&r), expect("10100", 404), "{mode}: {}", r.text);
        assert_eq!(
            r.body["data"]["graphs"],
            json!(["voice_assistant"]),
            "{mode}"
        );
        assert!(
            r.body["data"]["detail"]
                .as_str()
                .unwrap()
                .contains("voice_assistant"),
            "{}",
            r.text
        );

        // Both frontends fetch a token before joining; no Agora App ID is set here.
        let r = s
            .post(
                "/token/generate",
                json!({"request_id": "t1", "uid": 176573, "channel_name": "agora_pg"}),
            )
            .await;
        assert_eq!(axios(&r), expect("10005", 503), "{mode}: {}", r.text);

        for channel in ["agora_pg", "agora_demo"] {
            let r = s
                .post(
                    "/stop",
                    json!({"request_id": "s1", "channel_name": channel}),
                )
                .await;
            assert_eq!(axios(&r), Ok("0".into()), "{mode}: {}", r.text);
        }
        let r = s
            .post(
                "/stop",
                json!({"request_id": "s2", "channel_name": "agora_pg"}),
            )
            .await;
        assert_eq!(axios(&r), expect("10002", 404), "{mode}: {}", r.text);

        // A wrong method is not a route's answer: 405 in both modes.
        let r = s.get("/start").await;
        assert_eq!(r.status, 405, "{mode}: {}", r.text);
        assert_eq!(r.header("allow"), "POST");
        assert_eq!(r.body["code"], "405");
    }
}

#[tokio::test]
async fn the_chat_api_answers_under_api_and_the_v1_stream_over_get() {
    let s = TestApp::builder()
        .bundled()
        .env("AGENTD_API_KEY", "k1")
        .client_key("k1")
        .start();
    let r = s
        .post("/api/agents/echo/chat", json!({"message": "hello there"}))
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.text, s.output());
    assert_eq!(r.body["response"], "hello there");
    let r = s.get("/api/agents/echo/history").await;
    assert_eq!(r.status, 200, "{}", r.text);

    // EventSource sends no headers: the key comes as ?token=.
    let url =
        s.url("/v1/agents/echo/messages/stream?text=from%20an%20EventSource&userId=u9&token=k1");
    let res = reqwest::get(&url).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let text = res.text().await.unwrap();
    let done: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["type"] == "done")
        .collect();
    assert_eq!(done.len(), 1, "{text}");
    assert_eq!(done[0]["data"]["response"], "from an EventSource");
    assert_eq!(done[0]["data"]["userId"], "u9");

    let r = s
        .send(
            s.client
                .get(s.url("/v1/agents/echo/messages/stream?text=x")),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = s.get("/v1/agents/echo/messages/stream?userId=u9").await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "INVALID_MESSAGE", "{}", r.text);
}

#[tokio::test]
async fn a_wrong_method_is_a_405_with_allow_in_the_paths_family() {
    let s = TestApp::builder().bundled().start();
    let send = |m: reqwest::Method, p: &str| s.send(s.request(m, p));
    use reqwest::Method as M;

    let r = send(M::POST, "/health").await;
    assert_eq!(
        (r.status, r.header("allow")),
        (405, "GET".into()),
        "{}",
        r.text
    );
    assert_eq!(r.body["code"], "405", "TEN's envelope: {}", r.text);

    let r = send(M::DELETE, "/api/v1/chats").await;
    assert_eq!(r.status, 405, "{}", r.text);
    let allow = r.header("allow");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert_eq!(r.body["error"]["code"], "METHOD_NOT_ALLOWED", "{}", r.text);

    for path in ["/agents/echo/chat", "/api/agents/echo/chat"] {
        let r = send(M::GET, path).await;
        assert_eq!(
            (r.status, r.header("allow")),
            (405, "POST".into()),
            "{path}"
        );
        assert_eq!(
            r.body["error"]["code"], "METHOD_NOT_ALLOWED",
            "{path}: {}",
            r.text
        );
    }

    let r = send(M::GET, "/v1/agents/echo/messages").await;
    assert_eq!((r.status, r.header("allow")), (405, "POST".into()));
    assert_eq!(r.body["success"], false, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "METHOD_NOT_ALLOWED");
    assert!(
        !r.header("x-ratelimit-limit").is_empty(),
        "the agent's quota headers"
    );

    let r = send(M::DELETE, "/conversations").await;
    assert_eq!(r.status, 405, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "METHOD_NOT_ALLOWED", "{}", r.text);

    // agentd's own routes too: the console's files, the document, metrics and /ops.
    for (m, path, allow) in [
        (M::POST, "/console", "GET, HEAD"),
        (M::DELETE, "/console/app.js", "GET, HEAD"),
        (M::POST, "/openapi.json", "GET, HEAD"),
        (M::PUT, "/docs", "GET, HEAD"),
        (M::POST, "/metrics", "GET"),
        (M::POST, "/ops/dispatch", "GET"),
        (M::DELETE, "/ops/workers/stream", "GET"),
        (M::POST, "/ops/workers/some-channel/logs", "GET"),
    ] {
        let r = send(m.clone(), path).await;
        assert_eq!(
            (r.status, r.header("allow")),
            (405, allow.into()),
            "{m} {path}: {}",
            r.text
        );
        assert_eq!(r.body["code"], "405", "{m} {path}: {}", r.text);
    }

    // Unknown paths stay 404.
    assert_eq!(send(M::GET, "/nothing/here").await.status, 404);
    assert_eq!(send(M::GET, "/ops/nothing").await.status, 404);
    assert_eq!(send(M::GET, "/console/nothing.js").await.status, 404);
    assert_eq!(send(M::GET, "/api/v1/nothing").await.status, 404);
}

#[tokio::test]
async fn missing_graph_sources_are_named_and_no_graphs_at_all_is_an_error() {
    let s = TestApp::builder()
        .graph_file("voice_assistant", voice_assistant())
        .env("PROPERTY_JSON", "/nonexistent/agentd/property.json")
        .start();
    assert!(
        s.wait_output("/nonexistent/agentd/property.json", SOON)
            .await,
        "{}",
        s.output()
    );
    assert!(
        s.output().contains("PROPERTY_JSON does not exist"),
        "{}",
        s.output()
    );

    let out = match TestApp::builder()
        .env("PROPERTY_JSON", "/nonexistent/agentd/property.json")
        .env("GRAPHS_DIR", "/nonexistent/agentd/graphs")
        .try_start()
    {
        Ok(_) => panic!("agentd started with no graph source at all"),
        Err(out) => out,
    };
    assert!(out.contains("no graphs"), "{out}");
    assert!(out.contains("/nonexistent/agentd/graphs"), "{out}");
}

#[tokio::test]
async fn the_log_says_what_happened_and_no_more() {
    let s = TestApp::builder()
        .graph_file("voice_assistant", voice_assistant())
        .start();
    s.start_ok("log_ch", "voice_assistant", json!({})).await;
    s.stop_ok("log_ch").await;
    let r = s.post("/ping", json!({"channel_name": "log_ch"})).await;
    assert_eq!(r.status, 404);
    assert!(
        s.wait_output("worker stopped", SOON).await,
        "{}",
        s.output()
    );
    assert!(
        s.wait_output("request refused", SOON).await,
        "{}",
        s.output()
    );
    let out = s.output();
    let stopped = out.lines().find(|l| l.contains("worker stopped")).unwrap();
    for part in ["log_ch", "POST /stop from 127.0.0.1", "took_ms", "how="] {
        assert!(stopped.contains(part), "{part} missing: {stopped}");
    }
    let refused = out.lines().find(|l| l.contains("request refused")).unwrap();
    assert!(
        refused.contains("/ping") && refused.contains("404"),
        "{refused}"
    );

    // A reap says so in one line, with how it ended.
    s.start_ok("reap_ch", "voice_assistant", json!({"timeout": 1}))
        .await;
    assert!(
        s.wait_output("by=\"inactivity timeout\"", SOON).await,
        "{}",
        s.output()
    );
    let out = s.output();
    let line = out
        .lines()
        .find(|l| l.contains("reap_ch") && l.contains("inactivity timeout"))
        .unwrap();
    assert!(
        line.contains("worker stopped") && line.contains("took_ms"),
        "{line}"
    );
    let out = s.output();
    assert_eq!(out.matches("listening").count(), 1, "{out}");
    assert!(
        !out.contains("starting 2 workers"),
        "actix's start-up noise: {out}"
    );
}

#[tokio::test]
async fn log_format_json_writes_one_object_per_line() {
    let s = TestApp::builder()
        .graph_file("voice_assistant", voice_assistant())
        .env("LOG_FORMAT", "json")
        .start();
    s.start_ok("json_ch", "voice_assistant", json!({})).await;
    assert!(
        s.wait_output("worker spawned", SOON).await,
        "{}",
        s.output()
    );
    let out = s.output();
    let logs: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let ready = logs
        .iter()
        .find(|v| v["fields"]["message"] == "worker spawned")
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(ready["level"], "INFO");
    assert_eq!(ready["fields"]["channel"], "json_ch");

    let bad = TestApp::builder().env("LOG_FORMAT", "yaml").try_start();
    assert!(bad.is_err_and(|out| out.contains("LOG_FORMAT")));
}

#[test]
fn help_lists_the_main_settings_and_where_env_is_read() {
    let out = std::process::Command::new(agentd_bin())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        ".env",
        "SERVER_PORT",
        "AGENTD_API_KEY",
        "PROPERTY_JSON",
        "SUPERVISOR_STATUS",
        "RUST_LOG",
        "LOG_FORMAT",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
}

#[tokio::test]
async fn draining_health_is_503_and_streams_end_with_a_shutdown_event() {
    let mut s = TestApp::builder()
        .graph_file("stubborn", graph(&["ignore_term.sh"], json!({})))
        .env("WORKER_STOP_GRACE_MS", "4000")
        .start();
    s.start_ok("stubborn_ch", "stubborn", json!({})).await;
    let mut events = s.events("", None).await;
    assert_eq!(s.health().await.status, 200);

    // SIGTERM: the worker ignores it, so stopping it takes the whole grace.
    // SAFETY: kill(2) on the server's own pid.
    unsafe { libc::kill(s.pid(), libc::SIGTERM) };
    let shutdown = events
        .next_matching(SOON, |e| e.event == "shutdown")
        .await
        .unwrap_or_else(|| panic!("no shutdown event: {:?}\n{}", events.seen(), s.output()));
    assert_eq!(shutdown.data["reason"], "agentd is shutting down");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let draining = loop {
        let r = s
            .send(
                s.client
                    .get(s.url("/health"))
                    .timeout(Duration::from_secs(2)),
            )
            .await;
        if r.status == 503 {
            break r.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/health never said draining: {}\n{}",
            r.text,
            s.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(draining["msg"], "draining");
    assert!(s.wait_exit(Duration::from_secs(30)).is_some());
}
