//! `/start` against a grammar of plausible and hostile bodies, on one real server with the
//! bundled graphs: every answer is a 4xx, or a 200 for a worker that is up (listed as running,
//! then stopped). Never a 5xx (the client's mistake found after a spawn), never a worker left.

#[path = "fixtures/openai_standin.rs"]
mod openai_standin;
mod support;

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};
use support::TestApp;

/// Bounded so the whole test stays well under a minute (a started worker costs a spawn and a
/// stop).
const CASES: u32 = 192;

fn long(n: usize) -> String {
    "x".repeat(n)
}

/// A string a field might be given.
fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => "[a-z0-9-]{1,16}".prop_map(Value::from),
        1 => Just(json!("")),
        1 => Just(json!("a\u{0}b")),
        1 => Just(json!("line\nbreak")),
        1 => Just(json!(long(300))),
        1 => Just(json!(long(4000))),
        1 => Just(json!("${env:OPENAI_API_KEY}")),
        1 => Just(json!("${env:HOME|x}")),
        1 => Just(json!("${sys:x}")),
        1 => Just(json!("say ${env:HOME}")),
        1 => Just(json!("résumé №1 ✓")),
        1 => Just(json!(7)),
        1 => Just(json!(null)),
        1 => Just(json!(["a"])),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(5)),
        Just(json!(60)),
        Just(json!(-2)),
        Just(json!(4_294_967_295u64)),
        Just(json!(4_294_967_296u64)),
        Just(json!(1e12)),
        Just(json!(1.5)),
        Just(json!("60")),
        Just(json!(null)),
    ]
}

fn nested(n: usize) -> Value {
    (0..n).fold(json!("leaf"), |v, _| json!({ "k": v }))
}

/// A value an override might set.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => text(),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(json!("yes")),
        1 => Just(json!("false")),
        1 => (0u64..200).prop_map(Value::from),
        1 => number(),
        1 => (0usize..90).prop_map(nested),
        1 => Just(json!({})),
        1 => Just(json!([{"keywords": ["hi"], "answer": "hello"}])),
        1 => Just(json!([{"pattern": "(", "answer": "x"}])),
        1 => Just(json!([{"option": "o"}])),
        1 => Just(json!([{"keywords": "k", "request": {"type": "choice", "title": "T"}}])),
        1 => Just(json!([{"url": "http://evil"}])),
    ]
}

/// A merge patch for one node.
fn patch() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "prefix",
        "stream",
        "chunk_delay_ms",
        "fallback",
        "rules",
        "model",
        "temperature",
        "max_tokens",
        "system_prompt",
        "base_url",
        "api_key",
        "webhook_url",
        "command",
        "mood",
        "params",
    ]);
    prop::collection::vec((keys, value()), 0..4)
        .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

fn properties() -> impl Strategy<Value = Value> {
    let node = prop::sample::select(vec!["echo", "rules", "llm", "nope"]);
    prop_oneof![
        6 => prop::collection::vec((node, patch()), 1..3).prop_map(|kv| {
            Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>())
        }),
        1 => Just(json!({"echo": 3})),
        1 => Just(json!([1])),
        1 => Just(json!("x")),
        1 => (100usize..126).prop_map(|n| json!({ "echo": nested(n) })),
    ]
}

/// Mostly `plausible`, now and then `hostile`: so that many bodies start a worker, and every
/// field is hostile in some of them.
fn mostly<T: std::fmt::Debug + Clone + 'static>(
    plausible: impl Strategy<Value = T> + 'static,
    hostile: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![8 => plausible, 1 => hostile].boxed()
}

/// An override a client could mean, for the node of `graph` (the bundled graphs' node names).
fn plausible_properties(graph: &str) -> BoxedStrategy<Value> {
    let text = || "[a-zA-Z0-9 ,.!?>-]{0,24}".prop_map(Value::from);
    let (node, entries): (&str, Vec<BoxedStrategy<(String, Value)>>) = match graph {
        "echo" => (
            "echo",
            vec![
                text().prop_map(|v| ("prefix".into(), v)).boxed(),
                any::<bool>().prop_map(|b| ("stream".into(), b.into())).boxed(),
                (0u64..20).prop_map(|n| ("chunk_delay_ms".into(), n.into())).boxed(),
                text().prop_map(|v| ("mood".into(), v)).boxed(),
            ],
        ),
        "faq" => (
            "rules",
            vec![
                text().prop_map(|v| ("fallback".into(), v)).boxed(),
                any::<bool>().prop_map(|b| ("stream".into(), b.into())).boxed(),
                Just((
                    "rules".to_string(),
                    json!([{"keywords": ["hi"], "answer": "hello"}, {"pattern": "(?i)bye", "answer": "ciao"}]),
                ))
                .boxed(),
            ],
        ),
        _ => (
            "llm",
            vec![
                text().prop_map(|v| ("system_prompt".into(), v)).boxed(),
                (0.0f64..2.0).prop_map(|t| ("temperature".into(), json!(t))).boxed(),
                (1u64..500).prop_map(|n| ("max_tokens".into(), n.into())).boxed(),
                (0u64..20).prop_map(|n| ("memory".into(), n.into())).boxed(),
            ],
        ),
    };
    prop::collection::vec(prop::strategy::Union::new(entries), 0..4)
        .prop_map(move |kv| json!({ node: Value::Object(kv.into_iter().collect()) }))
        .boxed()
}

/// A whole body: every field present or not, plausible or not.
fn body() -> impl Strategy<Value = Value> {
    let graph = mostly(
        prop::sample::select(vec!["echo", "faq", "assistant"]).prop_map(Value::from),
        text(),
    );
    graph
        .prop_flat_map(|g| {
            let name = g.as_str().unwrap_or("echo").to_string();
            let props = prop_oneof![
                3 => Just(None),
                4 => plausible_properties(&name).prop_map(Some),
                1 => properties().prop_map(Some),
            ];
            let number =
                |plausible: BoxedStrategy<Value>| prop::option::of(mostly(plausible, number()));
            (
                Just(g),
                mostly("ch-[a-z0-9]{1,8}".prop_map(Value::from), text()),
                prop::option::of(mostly("[a-z0-9-]{1,32}".prop_map(Value::from), text())),
                prop::option::of(mostly("[A-Za-z0-9]{8,64}".prop_map(Value::from), text())),
                number((0u32..100_000).prop_map(Value::from).boxed()),
                number((0u32..100_000).prop_map(Value::from).boxed()),
                number(
                    prop_oneof![
                        Just(json!(0)),
                        Just(json!(-1)),
                        (1i64..3600).prop_map(Value::from)
                    ]
                    .boxed(),
                ),
                props,
            )
        })
        .prop_map(|(g, c, rid, token, uid, bot, timeout, props)| {
            let mut o = Map::new();
            o.insert("channel_name".into(), c);
            o.insert("graph_name".into(), g);
            let opt = [
                ("request_id", rid),
                ("token", token),
                ("user_uid", uid),
                ("bot_uid", bot),
                ("timeout", timeout),
                ("properties", props),
            ];
            for (k, v) in opt {
                if let Some(v) = v {
                    o.insert(k.into(), v);
                }
            }
            Value::Object(o)
        })
}

#[test]
fn any_start_body_is_a_4xx_or_a_ready_worker() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let standin = openai_standin::Standin::start();
    let s = TestApp::builder()
        .bundled()
        .openai(&standin.url, "sk-prop", "gpt-test")
        .start();
    let t = Instant::now();
    let started = std::cell::Cell::new(0);
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&body(), |b| {
            rt.block_on(async {
                let r = s.post("/start", b.clone()).await;
                if r.status == 200 {
                    started.set(started.get() + 1);
                    let channel = r.body["data"]["channel_name"].as_str().unwrap_or_default();
                    let entry = s.worker(channel).await;
                    prop_assert!(
                        entry.as_ref().is_some_and(|e| e["state"] == "running"),
                        "{b}: started, but listed as {entry:?}"
                    );
                    let stop = s.stop(channel).await;
                    prop_assert_eq!(stop.status, 200, "{}", stop.text);
                } else {
                    prop_assert!(
                        (400..500).contains(&r.status),
                        "{} answered {} {}",
                        b,
                        r.status,
                        r.text
                    );
                }
                prop_assert!(
                    s.list().await.is_empty(),
                    "a worker was left behind by {}",
                    b
                );
                Ok::<(), TestCaseError>(())
            })
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", s.output()));
    println!(
        "{CASES} bodies in {:?}; {} started",
        t.elapsed(),
        started.get()
    );
    assert!(s.spawned().is_empty(), "{:?}", s.spawned());
    assert!(t.elapsed() < Duration::from_secs(60));
}
