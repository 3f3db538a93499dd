//! The trust boundaries, through the real server and real workers: a request carries data, never
//! configuration (start-field limits, placeholders only from authors, which keys a request may
//! override, the built-in addons' schemas, one nesting limit), secrets stay out of everything
//! agentd writes, and reads need the key.

#[path = "fixtures/openai_standin.rs"]
mod openai_standin;
mod support;

use openai_standin::Standin;
use serde_json::{json, Value};
use support::{cmdline, environ, Reply, TestApp};

/// A secret in the server's environment that no graph refers to: a request must not reach it.
const MARKER: &str = "marker-secret-x-91c2d7";
/// The provider key the `assistant` graph's author refers to (`${env:OPENAI_API_KEY}`).
const API_KEY: &str = "sk-marker-key-7f3a55";

/// Asserts a 400 `params invalid` that names `key`.
fn refused(r: &Reply, key: &str) {
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["code"], "10000", "{}", r.text);
    assert_eq!(r.body["data"]["key"], key, "{}", r.text);
}

/// Asserts that no worker is listed or alive.
async fn nothing_spawned(s: &TestApp) {
    assert!(s.list().await.is_empty(), "{:?}", s.list().await);
    assert!(s.spawned().is_empty(), "processes: {:?}", s.spawned());
}

/// `n` nested objects around 1 (`{"a": {"a": ... 1}}`).
fn nested(n: usize) -> Value {
    (0..n).fold(json!(1), |v, _| json!({ "a": v }))
}

#[tokio::test]
async fn a_clients_mistake_at_start_is_a_4xx_and_spawns_nothing() {
    let s = TestApp::builder().bundled().start();
    // A NUL byte, and values far longer than any field may be (they went into the child's
    // environment or argv, and answered 500).
    refused(
        &s.start("c", "echo", json!({"request_id": "a\u{0}b"})).await,
        "request_id",
    );
    for kib in [200, 900] {
        let r = s
            .start("c", "echo", json!({"request_id": "r".repeat(kib * 1024)}))
            .await;
        refused(&r, "request_id");
        assert!(r.text.len() < 2000, "the value is not echoed back");
    }
    refused(
        &s.start("c", "echo", json!({"token": "t".repeat(2049)}))
            .await,
        "token",
    );
    refused(
        &s.start("c", "echo", json!({"token": "has space"})).await,
        "token",
    );
    refused(
        &s.start("c", &"g".repeat(129), json!({})).await,
        "graph_name",
    );
    refused(
        &s.start("c", "echo", json!({"user_uid": "12"})).await,
        "user_uid",
    );
    refused(
        &s.start("c", "echo", json!({"bot_uid": 4_294_967_296u64}))
            .await,
        "bot_uid",
    );
    refused(
        &s.start("c", "echo", json!({"timeout": 1.5})).await,
        "timeout",
    );
    let r = s.start("c", "echo", json!({"timeout": -2})).await;
    assert_eq!((r.status, r.body["code"].as_str()), (400, Some("10000")));

    // properties nested 126 deep: the body parses, the per-worker document would be deeper than
    // the worker reads.
    let deep = json!({ "echo": nested(125) });
    let r = s.start("c", "echo", json!({ "properties": deep })).await;
    refused(&r, "properties.echo");
    assert!(r.text.contains("at most 64"), "{}", r.text);
    // 100,000 levels: the body itself is refused.
    let body = format!(
        r#"{{"channel_name":"c","graph_name":"echo","properties":{}1{}}}"#,
        r#"{"a":"#.repeat(100_000),
        "}".repeat(100_000)
    );
    let r = s.post_raw("/start", "application/json", body).await;
    assert_eq!((r.status, r.body["code"].as_str()), (400, Some("10000")));

    // A wrong type for a built-in addon's property, after the merge.
    let r = s
        .start(
            "c",
            "echo",
            json!({"properties": {"echo": {"stream": "yes"}}}),
        )
        .await;
    refused(&r, "properties.echo.stream");
    assert_eq!(r.body["data"]["node"], "echo");
    assert_eq!(r.body["data"]["property"], "stream");
    assert_eq!(r.body["data"]["expected"], "true or false");
    // Deeper in a rules list: a pattern that does not compile.
    let r = s
        .start(
            "c",
            "faq",
            json!({"properties": {"rules": {"rules": [{"pattern": "(", "answer": "x"}]}}}),
        )
        .await;
    refused(&r, "properties.rules.rules[0]");
    nothing_spawned(&s).await;

    // What fits starts, string forms of booleans and numbers included.
    let ok = s
        .start_ok(
            "c",
            "echo",
            json!({"request_id": "résumé №1", "token": "007eJxTYBBe", "user_uid": 7,
                   "properties": {"echo": {"stream": "false", "chunk_delay_ms": "0", "extra": nested(40)}}}),
        )
        .await;
    assert!(ok.pid > 0);
    s.stop_ok("c").await;
}

/// The bundled graphs, the `assistant` graph pointed at `standin` with [`API_KEY`], [`MARKER`]
/// in the environment, and `assistant_open`: the same agent, whose author lets a request choose
/// the provider's address.
fn secret_server(standin: &Standin) -> TestApp {
    TestApp::builder()
        .bundled()
        .fast_dispatch()
        .openai(&standin.url, API_KEY, "gpt-test")
        .env("SECRET_MARKER_X", MARKER)
        .graph_file(
            "assistant_open",
            json!({
                "nodes": [{"type": "extension", "name": "llm", "addon": "openai_chat", "property": {
                    "base_url": "${env:OPENAI_BASE_URL}", "api_key": "${env:OPENAI_API_KEY}",
                    "model": "gpt-test", "stream": true
                }}],
                "runtime": {"overridable": ["llm.base_url", "llm.system_prompt"]}
            }),
        )
        .start()
}

#[tokio::test]
async fn a_placeholder_in_a_request_never_yields_the_secret() {
    let provider = Standin::start();
    let chosen = Standin::start(); // a provider a client would like the key sent to
    let s = secret_server(&provider);
    let x = "${env:SECRET_MARKER_X}";

    for (extra, key) in [
        (
            json!({"properties": {"llm": {"system_prompt": x}}}),
            "properties.llm.system_prompt",
        ),
        (
            json!({"properties": {"llm": {"api_key": x}}}),
            "properties.llm.api_key",
        ),
        (
            json!({"properties": {"llm": {"params": [{"note": "${env:SECRET_MARKER_X|}"}]}}}),
            "properties.llm.params[0].note",
        ),
        (json!({"request_id": x}), "request_id"),
        (json!({"token": x}), "token"),
        // Keys that decide where the key goes, or that the author set from the environment.
        (
            json!({"properties": {"llm": {"base_url": chosen.url}}}),
            "properties.llm.base_url",
        ),
        (
            json!({"properties": {"llm": {"model": "gpt-other"}}}),
            "properties.llm.model",
        ),
    ] {
        let r = s.start("sec", "assistant", extra).await;
        refused(&r, key);
        assert!(!r.text.contains(MARKER) && !r.text.contains(API_KEY));
    }
    refused(&s.start(x, "assistant", json!({})).await, "channel_name");
    let r = s
        .start(
            "sec",
            "assistant",
            json!({"properties": {"llm": {"base_url": chosen.url}}}),
        )
        .await;
    assert!(
        r.body["data"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("\"overridable\": [\"llm.base_url\"]")),
        "{}",
        r.text
    );
    nothing_spawned(&s).await;

    // A start the graph allows; the chat carries the placeholder as plain text.
    let w = s
        .start_ok(
            "sec",
            "assistant",
            json!({"request_id": "r-legit", "properties": {"llm": {"system_prompt": "Be brief.", "temperature": 0.1}}}),
        )
        .await;
    let chat = w.chat();
    let question = format!("What is {x}?");
    let answer = format!("You said: {question}");
    assert!(
        s.ask(&chat, &question, &answer).await.is_some(),
        "{}",
        s.output()
    );

    // Nowhere: not in the chat, the worker's arguments, its log, its property file, /list, or
    // agentd's own output.
    let chat_text = serde_json::to_string(&s.history(&chat).await).unwrap();
    let argv = cmdline(w.pid).join(" ");
    let files: Vec<String> = s
        .run_files()
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect();
    assert_eq!(files.len(), 1);
    let list = serde_json::to_string(&s.list().await).unwrap();
    for (what, text) in [
        ("the chat", chat_text),
        ("the worker's argv", argv),
        ("the worker's log", s.log("sec")),
        ("the per-worker file", files.concat()),
        ("/list", list),
        ("agentd's output", s.output()),
    ] {
        for secret in [MARKER, API_KEY] {
            assert!(!text.contains(secret), "{secret} in {what}:\n{text}");
        }
    }
    // The worker inherits agentd's environment as it is (that is where its author's
    // placeholders are resolved from); no other variable carries either value.
    let env = environ(w.pid);
    assert!(
        env.iter().any(|v| v == "AGENTD_REQUEST_ID=r-legit"),
        "{env:?}"
    );
    for v in &env {
        if v.contains(MARKER) {
            assert_eq!(v, &format!("SECRET_MARKER_X={MARKER}"));
        }
        if v.contains(API_KEY) {
            assert_eq!(v, &format!("OPENAI_API_KEY={API_KEY}"));
        }
    }
    // The provider the author chose got the question with the key in its header only; the one
    // the client chose got nothing.
    let got = provider.requests();
    assert!(!got.is_empty());
    for req in &got {
        let body = req.body.to_string();
        assert!(!body.contains(MARKER) && !body.contains(API_KEY), "{body}");
        assert!(body.contains("Be brief."), "{body}");
        assert_eq!(req.headers["authorization"], format!("Bearer {API_KEY}"));
        for (name, value) in &req.headers {
            assert!(!value.contains(MARKER), "{name}: {value}");
        }
    }
    assert!(chosen.requests().is_empty());
    s.stop_ok("sec").await;

    // An author who opens the provider's address lets the client choose it.
    let w = s
        .start_ok(
            "open",
            "assistant_open",
            json!({"properties": {"llm": {"base_url": chosen.url}}}),
        )
        .await;
    assert!(s.ask(&w.chat(), "hello", "You said: hello").await.is_some());
    assert_eq!(chosen.requests().len(), 1);
}

#[tokio::test]
async fn which_keys_a_request_may_override() {
    let echo = |property: Value, runtime: Value| {
        json!({
            "nodes": [{"type": "extension", "name": "echo", "addon": "echo", "property": property}],
            "runtime": runtime
        })
    };
    let s = TestApp::builder()
        .fast_dispatch()
        .graph_file(
            "plain",
            echo(json!({"prefix": "", "webhook_url": "http://a"}), json!({})),
        )
        .graph_file(
            "listed",
            echo(
                json!({"prefix": "", "stream": false, "webhook_url": "http://a"}),
                json!({"overridable": ["echo.prefix", "echo.webhook_url"]}),
            ),
        )
        .start();
    let patch = |p: Value| json!({ "properties": { "echo": p } });

    // No list: anything but protected keys.
    let w = s
        .start_ok("p", "plain", patch(json!({"prefix": "> ", "mood": "calm"})))
        .await;
    assert!(s.ask(&w.chat(), "hi", "> hi").await.is_some());
    s.stop_ok("p").await;
    for key in ["webhook_url", "apiKey", "command", "model_path"] {
        let r = s.start("p", "plain", patch(json!({ key: "x" }))).await;
        refused(&r, &format!("properties.echo.{key}"));
        let detail = r.body["data"]["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("runtime"), "{detail}");
    }

    // A list: what it names, protected keys included; nothing else.
    let w = s
        .start_ok(
            "l",
            "listed",
            patch(json!({"prefix": "< ", "webhook_url": "http://b"})),
        )
        .await;
    assert!(s.ask(&w.chat(), "yo", "< yo").await.is_some());
    s.stop_ok("l").await;
    let r = s.start("l", "listed", patch(json!({"stream": true}))).await;
    refused(&r, "properties.echo.stream");
    let detail = r.body["data"]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("\"echo.prefix\", \"echo.webhook_url\""),
        "{detail}"
    );
    nothing_spawned(&s).await;
}

/// `(status, message)` of a 401 in any family's envelope.
fn unauthorized(r: &Reply) -> (u16, String) {
    let m = r.body["data"]["detail"]
        .as_str()
        .or_else(|| r.body["error"]["message"].as_str())
        .unwrap_or_default();
    (r.status, m.to_string())
}

#[tokio::test]
async fn reads_need_the_key_with_one_wording_in_every_family() {
    let s = TestApp::builder()
        .bundled()
        .env("AGENTD_API_KEY", "k3y")
        .start();
    let want = (
        401,
        "Missing or invalid API key: send Authorization: Bearer <key> or x-api-key: <key>."
            .to_string(),
    );
    let conv = "c1";
    for path in [
        "/list".to_string(),
        "/graphs".into(),
        "/api/v1/chats".into(),
        "/api/v1/config".into(),
        "/api/v1/chats/pending-summary".into(),
        "/api/v1/events/stream".into(),
        "/agents/echo/history".into(),
        "/agents/echo/conversations".into(),
        "/agents/echo/inbox".into(),
        "/conversations".into(),
        format!("/messages/{conv}"),
        format!("/stream/{conv}"),
        "/events".into(),
    ] {
        assert_eq!(unauthorized(&s.get(&path).await), want, "GET {path}");
    }
    let r = s
        .post("/v1/agents/echo/messages", json!({"text": "x"}))
        .await;
    assert_eq!(unauthorized(&r), want);
    // With the key: answers. Health never needs it.
    for path in [
        "/list",
        "/api/v1/chats",
        "/agents/echo/history",
        "/conversations",
    ] {
        let r = s
            .send(s.client.get(s.url(path)).header("x-api-key", "k3y"))
            .await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text);
    }
    assert_eq!(s.health().await.status, 200);
    assert_eq!(s.api_health().await.status, 200);

    // READS_REQUIRE_KEY=false opens the chat API's plain reads only.
    let open = TestApp::builder()
        .bundled()
        .env("AGENTD_API_KEY", "k3y")
        .env("READS_REQUIRE_KEY", "false")
        .start();
    assert_eq!(open.get("/api/v1/chats").await.status, 200);
    for path in [
        "/api/v1/events/stream",
        "/list",
        "/agents/echo/history",
        "/conversations",
    ] {
        assert_eq!(unauthorized(&open.get(path).await), want, "GET {path}");
    }
}
