//! The OpenAPI document (`/openapi.json`) and its page (`/docs`) through the real server: public,
//! OpenAPI 3.1, every route the server serves is in it (and every operation in it is served),
//! and real answers of each family validate against the schemas it gives them.

mod support;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use support::{user_message, TestApp};

/// Every route the server serves, as `METHOD /pattern` (`{name}` for a path parameter). Adding a
/// route means adding it here and to `src/http/openapi/paths.rs`.
const ROUTES: &[&str] = &[
    "GET /",
    "GET /health",
    "POST /start",
    "POST /stop",
    "POST /ping",
    "GET /list",
    "GET /graphs",
    "POST /token/generate",
    "GET /ops/workers/stream",
    "GET /ops/workers/{channel}/logs",
    "GET /ops/dispatch",
    "GET /metrics",
    "GET /openapi.json",
    "GET /docs",
    "GET /console",
    "GET /console/{file}",
    "GET /api/v1/health",
    "GET /api/v1/config",
    "GET /api/v1/events/stream",
    "POST /api/v1/chats",
    "GET /api/v1/chats",
    "GET /api/v1/chats/pending-summary",
    "GET /api/v1/chats/unread-summary",
    "GET /api/v1/chats/{id}",
    "PATCH /api/v1/chats/{id}",
    "POST /api/v1/chats/{id}/archive",
    "POST /api/v1/chats/{id}/unarchive",
    "POST /api/v1/chats/{id}/mark-read",
    "POST /api/v1/chats/{id}/mark-unread",
    "POST /api/v1/chats/{id}/messages",
    "GET /api/v1/chats/{id}/messages",
    "POST /api/v1/chats/{id}/messages/cancel-streaming",
    "POST /api/v1/chats/{id}/typing",
    "POST /api/v1/chats/{id}/user-typing",
    "POST /api/v1/chats/{id}/requests",
    "GET /api/v1/chats/{id}/requests",
    "POST /api/v1/messages/{id}/chunks",
    "POST /api/v1/messages/{id}/complete",
    "POST /api/v1/messages/{id}/cancel",
    "PATCH /api/v1/requests/{id}",
    "POST /api/v1/requests/{id}/resolve",
    "POST /api/v1/requests/{id}/cancel",
    "POST /api/v1/dispatch/claim",
    "POST /api/v1/dispatch/claim-many",
    "POST /api/v1/dispatch/{id}/heartbeat",
    "POST /api/v1/dispatch/{id}/complete",
    "POST /api/v1/dispatch/{id}/fail",
    "POST /agents/{id}/chat",
    "POST /agents/{id}/chat/stream",
    "GET /agents/{id}/history",
    "GET /agents/{id}/conversations",
    "POST /agents/{id}/conversations",
    "PUT /agents/{id}/conversations/{conv}",
    "DELETE /agents/{id}/conversations/{conv}",
    "GET /agents/{id}/inbox",
    "POST /agents/{id}/mark-read",
    "POST /teams/{id}/chat",
    "POST /api/agents/{id}/chat",
    "POST /api/agents/{id}/chat/stream",
    "GET /api/agents/{id}/history",
    "GET /api/agents/{id}/conversations",
    "POST /api/agents/{id}/conversations",
    "PUT /api/agents/{id}/conversations/{conv}",
    "DELETE /api/agents/{id}/conversations/{conv}",
    "GET /api/agents/{id}/inbox",
    "POST /api/agents/{id}/mark-read",
    "POST /api/teams/{id}/chat",
    "POST /v1/agents/{agent_id}/messages",
    "POST /v1/agents/{agent_id}/messages/stream",
    "GET /v1/agents/{agent_id}/messages/stream",
    "POST /conversations",
    "GET /conversations",
    "GET /conversations/{id}",
    "POST /conversations/{id}/bots",
    "GET /conversations/{id}/bots",
    "POST /messages/{id}",
    "GET /messages/{id}",
    "POST /messages/{id}/read",
    "GET /messages/{id}/deliverylogs",
    "GET /stream/{id}",
    "GET /events",
];

/// The operations of the document, as `METHOD /pattern`.
fn operations(doc: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                out.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    out
}

/// A small JSON Schema checker for what the document uses: `$ref` to components, `type` (one or
/// several), `properties`, `required`, `items`, `oneOf`/`anyOf`, `enum`, `minimum`. Returns
/// every violation, each with where it is.
fn violations(doc: &Value, schema: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or_default();
        let target = &doc["components"]["schemas"][name];
        assert!(!target.is_null(), "dangling $ref {r}");
        return violations(doc, target, v, at, out);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = schema.get(key).and_then(Value::as_array) {
            let fits = alts.iter().any(|s| {
                let mut e = Vec::new();
                violations(doc, s, v, at, &mut e);
                e.is_empty()
            });
            if !fits {
                out.push(format!("{at}: fits no alternative of {key}"));
            }
        }
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let fits = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => true,
        });
        if !fits {
            out.push(format!("{at}: {v} is not {types:?}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            out.push(format!("{at}: {v} is not one of {allowed:?}"));
        }
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if n < min {
            out.push(format!("{at}: {n} < minimum {min}"));
        }
    }
    if let Some(obj) = v.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap_or_default();
            if !obj.contains_key(r) {
                out.push(format!("{at}: no required {r}"));
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, s) in props {
                if let Some(x) = obj.get(k) {
                    violations(doc, s, x, &format!("{at}.{k}"), out);
                }
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            violations(doc, items, x, &format!("{at}[{i}]"), out);
        }
    }
}

/// Checks a real answer against the schema the document gives `METHOD path` for its status.
fn conforms(doc: &Value, op: &str, status: u16, body: &Value) {
    let (method, path) = op.split_once(' ').expect("METHOD /path");
    let o = &doc["paths"][path][method.to_lowercase()];
    assert!(!o.is_null(), "{op} is not in the document");
    let r = &o["responses"][status.to_string()];
    assert!(!r.is_null(), "{op}: status {status} is not documented");
    let schema = &r["content"]["application/json"]["schema"];
    assert!(!schema.is_null(), "{op} {status}: no JSON schema");
    let mut errors = Vec::new();
    violations(doc, schema, body, "$", &mut errors);
    assert!(errors.is_empty(), "{op} {status}: {errors:#?}\n{body:#}");
}

/// A request path for a route pattern: each parameter filled with a value no resource has.
fn concrete(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "nothing-here".to_string()
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_document_is_public_openapi_3_1_and_lists_every_route() {
    let s = TestApp::builder().client_key("doc-key").start();

    // Public: no key.
    let r = s.client.get(s.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = r.json().await.expect("the document is JSON");
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    // The same routes, both ways.
    let documented = operations(&doc);
    let served: BTreeSet<String> = ROUTES.iter().map(|r| r.to_string()).collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(missing.is_empty(), "served, not documented: {missing:?}");
    assert!(extra.is_empty(), "documented, not in ROUTES: {extra:?}");

    // Every documented operation is really served: no "no route" answer for any of them (a
    // 404 for the made-up id is fine, a 404 for the path is not).
    for op in &documented {
        let (method, pattern) = op.split_once(' ').unwrap();
        if pattern.contains("stream") || pattern == "/events" {
            continue; // event streams stay open; their routes are exercised by their own tests
        }
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        // The console answers a file it does not have like an unknown path.
        let path = match pattern {
            "/console/{file}" => "/console/app.js".to_string(),
            p => concrete(p),
        };
        let r = s
            .send(
                s.request(method, &path)
                    .header("content-type", "application/json")
                    .body("{}"),
            )
            .await;
        let no_route = r.text.contains("no route for") || r.text.contains("No route for");
        assert!(!no_route, "{op} is not served: {} {}", r.status, r.text);
    }

    // Every operation that needs the key says so; the public ones do not.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (_, op) in item.as_object().unwrap() {
            let public = [
                "/",
                "/health",
                "/api/v1/health",
                "/openapi.json",
                "/docs",
                "/console",
                "/console/{file}",
            ]
            .contains(&path.as_str());
            assert_eq!(op.get("security").is_none(), public, "{path}: security");
        }
    }
}

#[test]
fn the_checker_finds_what_does_not_fit() {
    let doc = json!({"components": {"schemas": {
        "E": {"type": "object", "required": ["code", "data"], "properties": {
            "code": {"type": "string"},
            "data": {"type": "object", "properties": {"status": {"type": "integer", "minimum": 100}}},
            "list": {"type": "array", "items": {"type": ["string", "null"]}},
        }},
    }}});
    let schema = json!({"$ref": "#/components/schemas/E"});
    let mut e = Vec::new();
    let fits = json!({"code": "0", "data": {"status": 200}, "list": ["a", null]});
    violations(&doc, &schema, &fits, "$", &mut e);
    assert!(e.is_empty(), "{e:?}");
    let bad = json!({"code": 0, "list": [1]});
    violations(&doc, &schema, &bad, "$", &mut e);
    assert_eq!(e.len(), 3, "{e:?}");
    e.clear();
    violations(
        &doc,
        &schema,
        &json!({"code": "0", "data": {"status": 7}}),
        "$",
        &mut e,
    );
    assert_eq!(e.len(), 1, "{e:?}");
}

#[tokio::test]
async fn real_answers_match_their_schemas() {
    let s = TestApp::builder()
        .bundled()
        .fast_dispatch()
        .client_key("doc-key")
        .start();
    let doc = s.get("/openapi.json").await.body;

    // Supervisor.
    let r = s.get("/health").await;
    conforms(&doc, "GET /health", r.status, &r.body);
    let r = s.graphs().await;
    conforms(&doc, "GET /graphs", r.status, &r.body);
    let r = s
        .start("doc", "echo", json!({"request_id": "r-1", "timeout": -1}))
        .await;
    conforms(&doc, "POST /start", r.status, &r.body);
    let chat = r.body["data"]["chat_id"].as_str().unwrap().to_string();
    let r = s.get("/list").await;
    conforms(&doc, "GET /list", r.status, &r.body);
    let r = s.ping("doc").await;
    conforms(&doc, "POST /ping", r.status, &r.body);
    let r = s.start("doc", "echo", json!({})).await;
    conforms(&doc, "POST /start", r.status, &r.body);
    let r = s.start("bad", "no-such-graph", json!({})).await;
    conforms(&doc, "POST /start", r.status, &r.body);
    let r = s.send(s.client.get(s.url("/list"))).await;
    conforms(&doc, "GET /list", r.status, &r.body);
    let r = s.get("/ops/dispatch").await;
    conforms(&doc, "GET /ops/dispatch", r.status, &r.body);
    let r = s.get("/ops/workers/doc/logs?lines=5").await;
    conforms(&doc, "GET /ops/workers/{channel}/logs", r.status, &r.body);

    // The chat and dispatch API.
    let r = s.get("/api/v1/health").await;
    conforms(&doc, "GET /api/v1/health", r.status, &r.body);
    let r = s.get("/api/v1/config").await;
    conforms(&doc, "GET /api/v1/config", r.status, &r.body);
    let r = s.post_message(&chat, user_message("hello schema")).await;
    conforms(&doc, "POST /api/v1/chats/{id}/messages", r.status, &r.body);
    assert!(s.wait_answer(&chat, "hello schema").await.is_some());
    let r = s.list_messages(&chat, "").await;
    conforms(&doc, "GET /api/v1/chats/{id}/messages", r.status, &r.body);
    let r = s.chat(&chat).await;
    conforms(&doc, "GET /api/v1/chats/{id}", r.status, &r.body);
    let r = s.chats("").await;
    conforms(&doc, "GET /api/v1/chats", r.status, &r.body);
    let r = s.unread_summary().await;
    conforms(&doc, "GET /api/v1/chats/unread-summary", r.status, &r.body);
    let r = s.pending_summary().await;
    conforms(&doc, "GET /api/v1/chats/pending-summary", r.status, &r.body);
    let r = s
        .post(
            &format!("/api/v1/chats/{chat}/requests"),
            json!({"type": "choice", "title": "Pick", "config": {"options": [{"id": "a", "label": "A"}]}}),
        )
        .await;
    conforms(&doc, "POST /api/v1/chats/{id}/requests", r.status, &r.body);
    let r = s.get(&format!("/api/v1/chats/{chat}/requests")).await;
    conforms(&doc, "GET /api/v1/chats/{id}/requests", r.status, &r.body);
    let r = s.chat("no-such-chat").await;
    conforms(&doc, "GET /api/v1/chats/{id}", r.status, &r.body);
    let r = s.post("/api/v1/chats", json!({})).await;
    conforms(&doc, "POST /api/v1/chats", r.status, &r.body);

    // The front doors.
    let r = s.get("/agents/echo/conversations").await;
    conforms(&doc, "GET /agents/{id}/conversations", r.status, &r.body);
    let r = s
        .post("/agents/echo/chat", json!({"message": "front door"}))
        .await;
    conforms(&doc, "POST /agents/{id}/chat", r.status, &r.body);
    let r = s.get("/agents/echo/history").await;
    conforms(&doc, "GET /agents/{id}/history", r.status, &r.body);
    let r = s.get("/agents/nobody/inbox").await;
    conforms(&doc, "GET /agents/{id}/inbox", r.status, &r.body);
    let r = s
        .post("/v1/agents/echo/messages", json!({"text": "hi v1"}))
        .await;
    conforms(
        &doc,
        "POST /v1/agents/{agent_id}/messages",
        r.status,
        &r.body,
    );
    let r = s.post("/v1/agents/echo/messages", json!({})).await;
    conforms(
        &doc,
        "POST /v1/agents/{agent_id}/messages",
        r.status,
        &r.body,
    );
    let r = s
        .post(
            "/conversations",
            json!({"title": "Room", "participants": ["u1"]}),
        )
        .await;
    conforms(&doc, "POST /conversations", r.status, &r.body);
    let conv = r.body["id"].as_str().unwrap().to_string();
    let r = s
        .post(
            &format!("/messages/{conv}"),
            json!({"from": "u1", "content": "hi"}),
        )
        .await;
    conforms(&doc, "POST /messages/{id}", r.status, &r.body);
    let r = s.get(&format!("/messages/{conv}")).await;
    conforms(&doc, "GET /messages/{id}", r.status, &r.body);
    let r = s.get(&format!("/conversations/{conv}")).await;
    conforms(&doc, "GET /conversations/{id}", r.status, &r.body);
    let r = s.get("/conversations").await;
    conforms(&doc, "GET /conversations", r.status, &r.body);
    let r = s.get("/events").await;
    conforms(&doc, "GET /events", r.status, &r.body);

    let r = s.stop("doc").await;
    conforms(&doc, "POST /stop", r.status, &r.body);
    let r = s.stop("doc").await;
    conforms(&doc, "POST /stop", r.status, &r.body);
}

#[tokio::test]
async fn the_docs_page_is_public_and_built_in() {
    let s = TestApp::builder().client_key("doc-key").start();
    for (path, kind) in [
        ("/docs", "text/html"),
        ("/console/docs.js", "text/javascript"),
        ("/console/docs.css", "text/css"),
    ] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        let text = r.text().await.unwrap();
        // Nothing comes from elsewhere.
        assert!(
            !text.contains("https://") && !text.contains("http://"),
            "{path}"
        );
    }
}
