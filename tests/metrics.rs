//! `GET /metrics` through the real server: the key, valid exposition text (every family with
//! HELP and TYPE, no series twice, `# EOF` last), and counters that move when a real echo worker
//! is started, talked to and stopped.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::json;
use support::{graph, wait_for, wait_until, TestApp, SOON};

/// One scrape, parsed: each series (name and labels as written) with its value.
#[derive(Debug)]
struct Scrape {
    series: BTreeMap<String, f64>,
    types: HashMap<String, String>,
    text: String,
}

impl Scrape {
    /// Parses OpenMetrics text, checking what a scraper would refuse.
    fn parse(text: &str) -> Scrape {
        let mut types = HashMap::new();
        let mut helps = HashSet::new();
        let mut series = BTreeMap::new();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF at the end:\n{text}");
        for line in &lines[..lines.len() - 1] {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(helps.insert(name.to_string()), "HELP twice for {name}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "TYPE twice for {name}"
                );
                continue;
            }
            if line.starts_with("# UNIT ") {
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment: {line}");
            let (key, value) = line.rsplit_once(' ').expect("a sample line has a value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number in {line:?}"));
            let name = key.split('{').next().unwrap_or_default();
            let family = family_of(name, &types)
                .unwrap_or_else(|| panic!("{name} has no TYPE before it:\n{text}"));
            assert!(helps.contains(&family), "{family} has no HELP");
            assert!(
                series.insert(key.to_string(), value).is_none(),
                "series twice: {key}"
            );
        }
        for name in types.keys() {
            assert!(helps.contains(name), "{name} has TYPE but no HELP");
        }
        Scrape {
            series,
            types,
            text: text.to_string(),
        }
    }

    /// The value of a series written exactly as `key` (0 when absent: a counter not yet counted).
    fn get(&self, key: &str) -> f64 {
        self.series.get(key).copied().unwrap_or(0.0)
    }

    /// The series of family `name` whose labels contain every `label="value"` of `labels`.
    fn matching(&self, name: &str, labels: &[&str]) -> Vec<(&String, f64)> {
        self.series
            .iter()
            .filter(|(k, _)| {
                k.split('{').next() == Some(name) && labels.iter().all(|l| k.contains(l))
            })
            .map(|(k, v)| (k, *v))
            .collect()
    }
}

/// The family a sample belongs to: its own name, or that name less a sample suffix.
fn family_of(name: &str, types: &HashMap<String, String>) -> Option<String> {
    if types.contains_key(name) {
        return Some(name.to_string());
    }
    ["_total", "_bucket", "_sum", "_count", "_created"]
        .iter()
        .filter_map(|s| name.strip_suffix(s))
        .find(|f| types.contains_key(*f))
        .map(str::to_string)
}

async fn scrape(s: &TestApp) -> Scrape {
    let r = s.get("/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("content-type")
            .starts_with("application/openmetrics-text"),
        "{}",
        r.header("content-type")
    );
    Scrape::parse(&r.text)
}

#[tokio::test]
async fn metrics_need_the_key_and_count_a_start_a_message_and_a_stop() {
    let s = TestApp::builder()
        .bundled()
        .graph_file(
            "crashy",
            graph(
                &["crash.sh", "0.3", "3"],
                json!({"settle_ms": 100, "max_restarts": 1}),
            ),
        )
        .fast_dispatch()
        .client_key("metrics-key")
        .env("WORKER_SAMPLE_INTERVAL_MS", "100")
        .start();

    // The key, as on every supervisor route (TEN's envelope).
    let r = s.client.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "401", "{body}");

    // Families without labels are there from the start; those with labels once they count.
    let before = scrape(&s).await;
    for family in [
        "agentd_orphans_reaped",
        "agentd_dispatch_claims_waiting",
        "agentd_dispatch_lease_expiries",
        "agentd_dispatch_retries",
        "agentd_dispatch_terminal_failures",
        "agentd_http_requests",
        "agentd_http_request_seconds",
        "agentd_sqlite_writer_queue",
        "agentd_sqlite_commit_seconds",
        "agentd_sse_clients",
        "agentd_dispatch_queue_items",
        "agentd_dispatch_queue_oldest_age_seconds",
    ] {
        assert!(
            before.types.contains_key(family),
            "no {family}:\n{}",
            before.text
        );
    }
    let starts = r#"agentd_worker_starts_total{graph="echo",outcome="ok"}"#;
    let stops = r#"agentd_worker_stops_total{graph="echo",reason="requested"}"#;
    let start_count = r#"agentd_worker_start_seconds_count{graph="echo"}"#;
    let commits = "agentd_sqlite_commit_seconds_count";
    let start_requests = r#"agentd_http_requests_total{family="supervisor",method="POST",route="/start",status="200"}"#;

    let _events = s.events("", None).await;
    let chat = s
        .start_ok("metered", "echo", json!({"timeout": -1}))
        .await
        .chat();
    assert!(
        s.ask(&chat, "count me", "count me").await.is_some(),
        "{}",
        s.output()
    );

    // While it runs: the worker by graph and state, its memory and CPU once sampled, the open
    // event stream, the dispatch queue's states.
    let during = wait_for(SOON, || async {
        let m = scrape(&s).await;
        let sampled = !m
            .matching("agentd_worker_memory_bytes", &[r#"channel="metered""#])
            .is_empty();
        sampled.then_some(m)
    })
    .await
    .expect("the worker's memory never showed");
    assert_eq!(
        during.get(r#"agentd_workers{graph="echo",state="running"}"#),
        1.0,
        "{}",
        during.text
    );
    let memory = during.matching("agentd_worker_memory_bytes", &[r#"graph="echo""#]);
    assert!(memory[0].1 > 0.0, "{memory:?}");
    assert!(
        !during
            .matching("agentd_worker_cpu_seconds_total", &[r#"channel="metered""#])
            .is_empty(),
        "{}",
        during.text
    );
    // Two event streams are open: the API's and, from here, the worker's log.
    let log = s.follow_log("metered", "").await;
    let open = scrape(&s).await.get("agentd_sse_clients");
    assert!(open >= 2.0, "{}", during.text);
    for state in ["pending", "delayed", "leased"] {
        assert_eq!(
            during
                .matching(
                    "agentd_dispatch_queue_items",
                    &[r#"kind="batches""#, &format!("state=\"{state}\"")]
                )
                .len(),
            1,
            "{}",
            during.text
        );
    }

    s.stop_ok("metered").await;
    // The log's stream ends with its worker: its client is counted out.
    assert!(
        wait_until(SOON, || async {
            scrape(&s).await.get("agentd_sse_clients") == open - 1.0
        })
        .await,
        "the ended stream is still counted"
    );
    drop(log);

    let after = scrape(&s).await;
    assert_eq!(
        after.get(starts),
        before.get(starts) + 1.0,
        "{}",
        after.text
    );
    assert_eq!(after.get(start_count), before.get(start_count) + 1.0);
    assert_eq!(after.get(stops), before.get(stops) + 1.0, "{}", after.text);
    assert_eq!(
        after.get(start_requests),
        before.get(start_requests) + 1.0,
        "{}",
        after.text
    );
    assert!(after.get(commits) > before.get(commits), "{}", after.text);
    // Routes are patterns: the chat's id never becomes a label value.
    assert!(
        !after
            .matching(
                "agentd_http_requests_total",
                &[r#"route="/api/v1/chats/{id}/messages""#, r#"method="POST""#]
            )
            .is_empty(),
        "{}",
        after.text
    );
    assert!(
        !after.text.contains(&chat),
        "a raw path leaked into a label"
    );
    for family in [
        "agentd_worker_starts",
        "agentd_worker_start_seconds",
        "agentd_worker_stops",
        "agentd_worker_stop_seconds",
    ] {
        assert!(
            after.types.contains_key(family),
            "no {family}:\n{}",
            after.text
        );
    }
    assert!(
        after.matching("agentd_worker_stop_seconds_count", &[r#"graph="echo""#])[0].1 >= 1.0,
        "{}",
        after.text
    );

    // A worker that fails is counted as a crash, and its restart as one.
    s.start_ok("crashy", "crashy", json!({})).await;
    let crashed = wait_for(SOON, || async {
        let m = scrape(&s).await;
        let crashes = m.get(r#"agentd_worker_crashes_total{graph="crashy"}"#);
        let restarts = m.get(r#"agentd_worker_restarts_total{graph="crashy"}"#);
        (crashes >= 2.0 && restarts >= 1.0).then_some(m)
    })
    .await;
    assert!(crashed.is_some(), "no crash counted:\n{}", s.output());
    assert!(wait_until(SOON, || async { s.gone("crashy").await }).await);

    // A path no route matches is counted under one series.
    assert_eq!(s.get("/no/such/thing").await.status, 404);
    let later = scrape(&s).await;
    assert!(
        !later
            .matching(
                "agentd_http_requests_total",
                &[r#"route="unmatched""#, r#"status="404""#]
            )
            .is_empty(),
        "{}",
        later.text
    );
    // The worker is gone, and so are its series.
    assert!(
        later.matching("agentd_workers", &[]).is_empty(),
        "{}",
        later.text
    );
    assert!(
        later.matching("agentd_worker_memory_bytes", &[]).is_empty(),
        "{}",
        later.text
    );
}

#[tokio::test]
async fn a_loopback_scraper_may_go_without_the_key_when_allowed() {
    let s = TestApp::builder()
        .client_key("metrics-key")
        .env("METRICS_PUBLIC_LOOPBACK", "true")
        .start();
    let r = s.client.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    Scrape::parse(&r.text().await.unwrap());
    // Only /metrics: the other routes still need the key.
    let r = s.client.get(s.url("/list")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_bad_metrics_setting_stops_agentd_at_start_up() {
    let Err(err) = TestApp::builder()
        .env("METRICS_PUBLIC_LOOPBACK", "maybe")
        .try_start()
    else {
        panic!("agentd started with a bad METRICS_PUBLIC_LOOPBACK");
    };
    assert!(err.contains("METRICS_PUBLIC_LOOPBACK"), "{err}");
}
