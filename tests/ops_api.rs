//! agentd's own routes: the live worker feed (`/ops/workers/stream`), a worker's log
//! (`/ops/workers/{channel}/logs`), the dispatch queue (`/ops/dispatch`), their key and their
//! errors, and the console's files (`/console`).

mod support;

use std::time::Duration;

use serde_json::json;
use support::{graph, path_segment, ten_code, Ev, TestApp, SOON};

fn is(ev: &Ev, name: &str, channel: &str) -> bool {
    ev.event == name && ev.data["channel_name"] == channel
}

#[tokio::test]
async fn the_worker_feed_sends_a_snapshot_then_every_change() {
    let s = TestApp::builder()
        .graph_file("coop", graph(&["coop.sh"], json!({"settle_ms": 100})))
        .graph_file(
            "crashy",
            graph(
                &["crash.sh", "0.6", "3"],
                json!({"settle_ms": 100, "max_restarts": 1}),
            ),
        )
        .start();
    s.start_ok("before", "coop", json!({"timeout": -1})).await;

    let mut feed = s.worker_feed("").await;
    assert_eq!(feed.headers["content-type"], "text/event-stream");
    let first = feed
        .next_matching(SOON, |_| true)
        .await
        .expect("no snapshot");
    assert_eq!(first.event, "snapshot");
    let workers = first.data["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 1, "{}", first.raw);
    assert_eq!(workers[0]["channel_name"], "before");
    assert_eq!(workers[0]["state"], "running");
    // The entries are those of /list.
    assert_eq!(workers[0], s.list().await[0]);

    // Started, then changed until it runs (pid set), with the /start answer's pid.
    let pid = s.start_ok("live", "coop", json!({"timeout": 30})).await.pid;
    let seen = feed
        .until(SOON, |e| {
            is(e, "worker.changed", "live") && e.data["state"] == "running"
        })
        .await
        .expect("no running change");
    assert!(is(&seen[0], "worker.started", "live"), "{:?}", seen[0]);
    assert_eq!(seen[0].data["state"], "starting");
    assert_eq!(seen.last().map(|e| e.data["pid"].clone()), Some(json!(pid)));

    // A ping is a change of last_ping_at.
    let before = seen.last().map(|e| e.data["last_ping_at"].clone());
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(s.ping("live").await.status, 200);
    let e = feed
        .next_matching(SOON, |e| is(e, "worker.changed", "live"))
        .await
        .expect("no change for the ping");
    assert_ne!(Some(e.data["last_ping_at"].clone()), before);

    // Stopping, then gone.
    s.stop_ok("live").await;
    let seen = feed
        .until(SOON, |e| is(e, "worker.gone", "live"))
        .await
        .expect("no gone");
    assert!(
        seen.iter()
            .any(|e| is(e, "worker.changed", "live") && e.data["state"] == "stopping"),
        "{seen:?}"
    );

    // A crashing worker is restarted once, then given up.
    s.start_ok("crashy", "crashy", json!({})).await;
    let e = feed
        .next_matching(SOON, |e| is(e, "worker.restarted", "crashy"))
        .await
        .expect("no restart");
    assert_eq!(e.data["state"], "restarting");
    assert_eq!(e.data["restarts"], 1);
    assert_eq!(e.data["pid"], json!(null));
    feed.next_matching(SOON, |e| is(e, "worker.gone", "crashy"))
        .await
        .expect("not given up");

    // A second watcher starts from what is there now.
    let mut other = s.worker_feed("").await;
    let snap = other.next_matching(SOON, |_| true).await.expect("snapshot");
    let channels: Vec<_> = snap.data["workers"]
        .as_array()
        .map(|a| a.iter().map(|w| w["channel_name"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(channels, vec![json!("before")]);
}

#[tokio::test]
async fn a_workers_log_reads_back_and_follows_until_it_is_gone() {
    let s = TestApp::builder()
        .graph_file("ticker", graph(&["ticker.sh"], json!({"settle_ms": 100})))
        .start();
    // Any channel name works in the path, percent-encoded.
    let ch = "room/42 ?#%é";
    s.start_ok(ch, "ticker", json!({"timeout": -1})).await;
    assert!(
        support::wait_until(SOON, || async {
            s.worker_log_lines(ch, 200).await.len() > 5
        })
        .await
    );
    let lines = s.worker_log_lines(ch, 200).await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("--- agentd: worker ") && l.ends_with(" ready")),
        "agentd's notes are part of it: {lines:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("tick ")), "{lines:?}");
    let two = s.worker_log_lines(ch, 2).await;
    assert_eq!(two.len(), 2);
    let r = s.worker_log(ch, "").await;
    assert_eq!(r.body["data"]["channel_name"], ch);

    // Follow: the tail, then new lines in order, with no gap and no repeat.
    let mut follow = s.follow_log(ch, "&lines=3").await;
    let tail = follow.next_matching(SOON, |_| true).await.expect("tail");
    assert_eq!(tail.event, "tail");
    let mut got: Vec<String> = tail.data["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter_map(|l| l.as_str().map(String::from))
        .collect();
    assert_eq!(got.len(), 3, "{}", tail.raw);
    while got.len() < 15 {
        let e = follow
            .next_matching(SOON, |e| e.event == "lines")
            .await
            .expect("no new lines");
        got.extend(
            e.data["lines"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l.as_str().map(String::from)),
        );
    }
    let ticks: Vec<u64> = got
        .iter()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .collect();
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "ticks out of order or missing: {ticks:?}"
    );

    // Stopping ends the stream with `end`, after the worker's last words.
    s.stop_ok(ch).await;
    let rest = follow
        .until(SOON, |e| e.event == "end")
        .await
        .expect("no end");
    assert_eq!(
        rest.last().map(|e| e.data["channel_name"].clone()),
        Some(json!(ch))
    );
    assert!(
        rest.iter().any(|e| e.raw.contains("got SIGTERM")),
        "{rest:?}"
    );

    // Errors, in the supervisor's envelope.
    assert_eq!(ten_code(&s.worker_log(ch, "").await), (404, "10002".into()));
    assert_eq!(
        ten_code(&s.worker_log("nobody", "?follow").await),
        (404, "10002".into())
    );
    assert_eq!(
        ten_code(&s.worker_log(" ", "").await),
        (400, "10004".into())
    );
    assert_eq!(
        ten_code(&s.worker_log(&"x".repeat(129), "").await),
        (400, "10000".into())
    );
    s.start_ok("t", "ticker", json!({"timeout": -1})).await;
    for q in [
        "?lines=0",
        "?lines=201",
        "?lines=abc",
        "?lines=-1",
        "?follow=maybe",
    ] {
        let r = s.worker_log("t", q).await;
        assert_eq!(ten_code(&r), (400, "10000".into()), "{q}: {}", r.text);
        assert!(r.body["data"]["detail"].is_string(), "{}", r.text);
    }
    for q in ["?lines=200", "?follow=false", "?follow=0"] {
        assert_eq!(s.worker_log("t", q).await.status, 200, "{q}");
    }
    let r = s.get("/ops/nothing-here").await;
    assert_eq!(ten_code(&r), (404, "404".into()), "{}", r.text);
}

#[tokio::test]
async fn the_dispatch_queue_counts_its_open_states() {
    let s = TestApp::builder()
        .bundled()
        .fast_dispatch()
        .env("DISPATCH_MODE", "immediate")
        .start();
    let empty = s.queue().await;
    assert_eq!(empty["mode"], "immediate");
    for (group, state) in [
        ("inputs", "pending"),
        ("batches", "pending"),
        ("batches", "leased"),
    ] {
        let b = &empty[group][state];
        assert_eq!(b["count"], 0, "{empty}");
        assert_eq!(b["oldest_age_ms"], json!(null), "{empty}");
        assert_eq!(b["oldest_at"], json!(null), "{empty}");
    }

    // No worker runs: the messages wait as batches.
    let chat = s.new_chat("echo").await;
    s.post_user(&chat, "one").await;
    s.post_user(&chat, "two").await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let q = s.queue().await;
    assert_eq!(q["batches"]["pending"]["count"], 2, "{q}");
    assert_eq!(q["batches"]["pending"]["delayed"], 0, "{q}");
    assert!(
        q["batches"]["pending"]["oldest_age_ms"]
            .as_i64()
            .unwrap_or(-1)
            >= 30,
        "{q}"
    );
    assert!(q["batches"]["pending"]["oldest_at"].is_string(), "{q}");

    // One is claimed, then failed with a long retry delay.
    let batch = s.claim_one("w1").await;
    let q = s.queue().await;
    assert_eq!(q["batches"]["pending"]["count"], 1, "{q}");
    assert_eq!(q["batches"]["leased"]["count"], 1, "{q}");
    let r = s
        .fail_with(
            &batch,
            json!({"workerId": "w1", "reason": "later", "retryable": true, "retryDelayMs": 60000}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let q = s.queue().await;
    assert_eq!(q["batches"]["pending"]["count"], 2, "{q}");
    assert_eq!(q["batches"]["pending"]["delayed"], 1, "{q}");
    assert_eq!(q["batches"]["leased"]["count"], 0, "{q}");

    // In a batching window, inputs wait before they are a batch.
    let b = TestApp::builder()
        .bundled()
        .fast_dispatch()
        .env("DISPATCH_MODE", "batched_sequential")
        .env("DISPATCH_BATCH_DEBOUNCE_MS", "60000")
        .env("DISPATCH_MAX_BATCH_WAIT_MS", "60000")
        .start();
    let chat = b.new_chat("echo").await;
    b.post_user(&chat, "held").await;
    let q = b.queue().await;
    assert_eq!(q["inputs"]["pending"]["count"], 1, "{q}");
    assert_eq!(q["batches"]["pending"]["count"], 0, "{q}");
}

#[tokio::test]
async fn ops_routes_need_the_key_from_a_header_or_the_query() {
    const KEY: &str = "ops-key";
    let s = TestApp::builder()
        .env("AGENTD_API_KEY", KEY)
        .graph_file("coop", graph(&["coop.sh"], json!({"settle_ms": 100})))
        .start();
    let with_key = |path: &str| {
        s.request(reqwest::Method::GET, path)
            .header("authorization", format!("Bearer {KEY}"))
    };
    let r = s
        .send(
            s.request(reqwest::Method::POST, "/start")
                .header("authorization", format!("Bearer {KEY}"))
                .json(&json!({"channel_name": "k", "graph_name": "coop", "timeout": -1})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let routes = [
        "/ops/workers/stream",
        "/ops/workers/k/logs",
        "/ops/workers/k/logs?follow",
        "/ops/dispatch",
    ];
    for path in routes {
        let sep = if path.contains('?') { '&' } else { '?' };
        for refused in [
            s.get(path).await,
            s.get(&format!("{path}{sep}token=wrong")).await,
            s.send(
                s.request(reqwest::Method::GET, path)
                    .header("authorization", "Bearer wrong"),
            )
            .await,
        ] {
            assert_eq!(
                ten_code(&refused),
                (401, "401".into()),
                "{path}: {}",
                refused.text
            );
            assert_eq!(refused.body["msg"], "unauthorized");
        }
        let accepted = [
            with_key(path),
            s.request(reqwest::Method::GET, path)
                .header("x-api-key", KEY),
            s.request(
                reqwest::Method::GET,
                &format!("{path}{sep}token={}", path_segment(KEY)),
            ),
        ];
        for req in accepted {
            let res = req.send().await.expect("request");
            assert_eq!(res.status(), 200, "{path}");
        }
    }
    // The console's page holds no data: it needs no key.
    assert_eq!(s.get("/console/").await.status, 200);
    assert_eq!(s.get("/console/app.js").await.status, 200);
}

#[tokio::test]
async fn the_console_is_served_from_the_binary_with_its_headers() {
    let s = TestApp::builder().start();
    for path in ["/console", "/console/", "/console/index.html"] {
        let r = s.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
        assert!(r.text.contains("<title>agentd console</title>"), "{path}");
        assert!(r.text.contains(r#"src="/console/app.js""#));
    }
    let page = s.get("/console/").await;
    assert_eq!(page.header("cache-control"), "no-cache");
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    let csp = page.header("content-security-policy");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );

    // Every module the page loads, with its type; each revalidates to a 304 by its ETag.
    for (file, ty) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("api.js", "text/javascript; charset=utf-8"),
        ("dom.js", "text/javascript; charset=utf-8"),
        ("workers.js", "text/javascript; charset=utf-8"),
        ("logs.js", "text/javascript; charset=utf-8"),
        ("chats.js", "text/javascript; charset=utf-8"),
        ("requests.js", "text/javascript; charset=utf-8"),
        ("dispatch.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
    ] {
        let path = format!("/console/{file}");
        let r = s.get(&path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), ty, "{path}");
        assert!(!r.text.is_empty(), "{path}");
        let etag = r.header("etag");
        assert!(etag.starts_with('"') && etag.len() > 10, "{path}: {etag}");
        let again = s
            .send(
                s.request(reqwest::Method::GET, &path)
                    .header("if-none-match", &etag),
            )
            .await;
        assert_eq!(again.status, 304, "{path}");
        assert!(again.text.is_empty());
        assert_eq!(again.header("etag"), etag);
        let stale = s
            .send(
                s.request(reqwest::Method::GET, &path)
                    .header("if-none-match", "\"old\""),
            )
            .await;
        assert_eq!(stale.status, 200, "{path}");
    }
    // Every module the page imports is served (none left out of the binary).
    let app = s.get("/console/app.js").await.text;
    for line in app.lines().filter(|l| l.starts_with("import ")) {
        if let Some(m) = line.split('\'').nth(1) {
            let path = format!("/console/{}", m.trim_start_matches("./"));
            assert_eq!(s.get(&path).await.status, 200, "{path}");
        }
    }

    let head = s
        .send(s.request(reqwest::Method::HEAD, "/console/style.css"))
        .await;
    assert_eq!(head.status, 200);
    assert!(head.text.is_empty());

    for missing in [
        "/console/nope.js",
        "/console/..%2FCargo.toml",
        "/console/a/b",
    ] {
        let r = s.get(missing).await;
        assert_eq!(ten_code(&r), (404, "404".into()), "{missing}: {}", r.text);
    }
    // A known path with another method: 405 with what it allows, not an unknown path's 404.
    let r = s.post("/console/", json!({})).await;
    assert_eq!(
        (r.status, r.header("allow")),
        (405, "GET, HEAD".into()),
        "{}",
        r.text
    );
}
