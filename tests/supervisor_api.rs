//! Supervisor: the TEN envelope, every error code with its HTTP status, bad input, auth, list and
//! graphs, and where worker output goes.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{graph, started, wait_until, TestApp};

fn code(r: &support::Reply) -> (u16, String) {
    (r.status, r.body["code"].as_str().unwrap_or("?").to_string())
}

#[tokio::test]
async fn every_error_code_with_its_status() {
    let s = TestApp::builder()
        .env("WORKERS_MAX", "1")
        .env("MAX_BODY_BYTES", "2048")
        .graph_file("coop", graph(&["coop.sh"], json!({})))
        .start();
    let want = |r: &support::Reply, status: u16, c: &str| {
        assert_eq!(code(r), (status, c.to_string()), "{}", r.text);
        assert!(
            r.body["msg"].is_string() && r.body.get("data").is_some(),
            "{}",
            r.text
        );
    };

    // 10000: bad JSON, wrong types, empty body, huge body, bad channel names, empty graph.
    want(
        &s.post_raw("/start", "application/json", "{nope").await,
        400,
        "10000",
    );
    want(
        &s.post_raw("/start", "application/json", "").await,
        400,
        "10000",
    );
    want(
        &s.post_raw("/start", "text/plain", "[1,2]").await,
        400,
        "10000",
    );
    want(
        &s.post("/start", json!({"channel_name": 5, "graph_name": "coop"}))
            .await,
        400,
        "10000",
    );
    want(
        &s.start("x", "coop", json!({"user_uid": "12"})).await,
        400,
        "10000",
    );
    want(
        &s.start("x", "coop", json!({"user_uid": -1})).await,
        400,
        "10000",
    );
    want(
        &s.start("x", "coop", json!({"properties": [1]})).await,
        400,
        "10000",
    );
    want(
        &s.start("x", "coop", json!({"properties": {"main": 3}}))
            .await,
        400,
        "10000",
    );
    let huge = json!({"channel_name": "x", "graph_name": "coop", "pad": "y".repeat(5000)});
    want(&s.post("/start", huge).await, 413, "10000");
    want(
        &s.start(&"l".repeat(200), "coop", json!({})).await,
        400,
        "10000",
    );
    want(&s.start("bad\nname", "coop", json!({})).await, 400, "10000");
    want(&s.start("x", "", json!({})).await, 400, "10000");
    want(
        &s.post_raw("/ping", "application/json", "{").await,
        400,
        "10000",
    );
    want(&s.ping("bad\u{1}name").await, 400, "10000");
    // 10004: blank channel.
    want(&s.start("  ", "coop", json!({})).await, 400, "10004");
    want(
        &s.post("/start", json!({"graph_name": "coop"})).await,
        400,
        "10004",
    );
    want(&s.ping("").await, 400, "10004");
    want(&s.stop(" ").await, 400, "10004");
    // 10100: unknown graph.
    want(&s.start("x", "nope", json!({})).await, 404, "10100");
    // 10002: unknown channel.
    want(&s.ping("ghost").await, 404, "10002");
    want(&s.stop("ghost").await, 404, "10002");
    // Success, then 10003 and 10001.
    let ok = s.start("one", "coop", json!({})).await;
    assert_eq!(code(&ok), (200, "0".into()), "{}", ok.text);
    assert_eq!(ok.body["msg"], "success");
    want(&s.start("one", "coop", json!({})).await, 409, "10003");
    want(&s.start("two", "coop", json!({})).await, 429, "10001");
    let r = s.ping("one").await;
    assert_eq!(code(&r), (200, "0".into()));
    assert_eq!(r.body["data"]["channel_name"], "one");
    // A timeout beyond what the clock can hold is "practically never", not a crash.
    s.stop("one").await;
    let r = s.start("big", "coop", json!({"timeout": i64::MAX})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(s.ping("big").await.status, 200);
    assert_eq!(s.stop("big").await.status, 200);
    let ok = s.start("one", "coop", json!({})).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    // Unknown route.
    let r = s.get("/nope").await;
    assert_eq!(r.status, 404);
    assert!(r.body["code"].is_string());
    assert!(
        s.output().lines().all(|l| !l.contains("panicked")),
        "{}",
        s.output()
    );
}

#[tokio::test]
async fn list_graphs_and_health() {
    let s = TestApp::builder()
        .bundled()
        .graph_file("coop", graph(&["coop.sh"], json!({})))
        .start();
    let h = s.health().await;
    assert_eq!((h.status, h.body["code"].clone()), (200, json!("0")));
    assert_eq!(s.get("/").await.status, 200);

    let g = s.graphs().await;
    assert_eq!(g.status, 200);
    let graphs = g.body["data"].as_array().unwrap();
    let echo = graphs.iter().find(|x| x["name"] == "echo").unwrap();
    assert_eq!(echo["uuid"], "echo");
    assert_eq!(echo["auto_start"], false);
    assert!(echo["source"].as_str().unwrap().ends_with("property.json"));
    let faq = graphs.iter().find(|x| x["name"] == "faq").unwrap();
    assert!(faq["source"].as_str().unwrap().ends_with("faq.json"));

    let r = s.start("L1", "coop", json!({"timeout": 30})).await;
    let pid = started(&r).pid;
    let l = s.list().await;
    assert_eq!(l.len(), 1);
    let e = &l[0];
    for k in [
        "channel_name",
        "channelName",
        "graph_name",
        "pid",
        "state",
        "created_at",
        "createTs",
        "last_ping_at",
        "timeout",
        "restarts",
    ] {
        assert!(e.get(k).is_some_and(|v| !v.is_null()), "{k} missing in {e}");
    }
    assert_eq!(e["channelName"], "L1");
    assert_eq!(e["pid"], pid);
    assert_eq!(e["state"], "running");
    assert_eq!(e["timeout"], 30);
    assert_eq!(e["restarts"], 0);
    assert!(e["createTs"].as_u64().unwrap() > 1_600_000_000);
}

#[tokio::test]
async fn auth_on_and_off() {
    let off = TestApp::builder()
        .graph_file("coop", graph(&["coop.sh"], json!({})))
        .start();
    assert_eq!(off.get("/list").await.status, 200);

    let s = TestApp::builder()
        .env("AGENTD_API_KEY", "s3cret")
        .graph_file("coop", graph(&["coop.sh"], json!({})))
        .start();
    assert_eq!(s.health().await.status, 200);
    for r in [
        s.get("/list").await,
        s.graphs().await,
        s.start("a", "coop", json!({})).await,
        s.ping("a").await,
        s.stop("a").await,
        s.send(s.client.get(s.url("/list")).bearer_auth("wrong"))
            .await,
        s.send(s.client.get(s.url("/list")).header("x-api-key", "s3cre"))
            .await,
    ] {
        assert_eq!(code(&r), (401, "401".into()), "{}", r.text);
    }
    let r = s
        .send(s.client.get(s.url("/list")).bearer_auth("s3cret"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .send(
            s.client
                .post(s.url("/start"))
                .header("x-api-key", "s3cret")
                .json(&json!({"channel_name": "a", "graph_name": "coop"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn unsafe_channel_names_stay_inside_log_path() {
    let s = TestApp::builder()
        .graph_file("coop", graph(&["coop.sh"], json!({})))
        .start();
    let logs = s.root().join("logs");
    let names = [
        "../../escape",
        "/etc/passwd",
        "..",
        ".hidden",
        "a/b",
        "a_b",
        "ünï cødé ✓",
        "a?b",
        "a*b",
    ];
    for n in names {
        let r = s.start(n, "coop", json!({})).await;
        assert_eq!(r.status, 200, "{n}: {}", r.text);
    }
    assert!(s.wait_log("a_b", "started", Duration::from_secs(5)).await);
    let files: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .filter_map(Result::ok)
        .collect();
    assert_eq!(
        files.len(),
        names.len(),
        "one file per channel, none shared: {files:?}"
    );
    for n in names {
        let p = s.log_path(n);
        assert_eq!(p.parent().unwrap(), logs);
        assert!(
            s.wait_log(n, "started", Duration::from_secs(5)).await,
            "{n}"
        );
        assert!(s.log(n).contains(&format!("AGENTD_CHANNEL={n}")), "{n}");
    }
    // Nothing was written outside the temp dir's logs and data.
    let mut top: Vec<String> = std::fs::read_dir(s.root())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    top.sort();
    assert_eq!(top, ["data", "graphs", "logs"]);
}

#[tokio::test]
async fn log_rotation_and_stdout_mode() {
    let s = TestApp::builder()
        .env("LOG_MAX_BYTES", "2048")
        .env("LOG_MAX_FILES", "2")
        .graph_file("chatty", graph(&["chatty.sh", "400"], json!({})))
        .start();
    s.start_ok("talk", "chatty", json!({})).await;
    assert!(s.wait_log("talk", "line 399", Duration::from_secs(5)).await);
    let p = s.log_path("talk");
    assert!(std::fs::metadata(&p).unwrap().len() <= 2048);
    let rotated = |n: u32| std::path::PathBuf::from(format!("{}.{n}", p.display()));
    assert!(rotated(1).exists() && rotated(2).exists());
    assert!(!rotated(3).exists());

    let s = TestApp::builder()
        .env("LOG_STDOUT", "true")
        .graph_file("chatty", graph(&["chatty.sh", "3"], json!({})))
        .start();
    s.start_ok("loud", "chatty", json!({})).await;
    assert!(
        s.wait_output("[loud] line 2 of the chatty worker", Duration::from_secs(5))
            .await,
        "{}",
        s.output()
    );
    assert!(
        !s.root().join("logs").exists()
            || std::fs::read_dir(s.root().join("logs"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[tokio::test]
async fn stop_during_start_answers_both_calls() {
    let s = TestApp::builder()
        .graph_file(
            "mute",
            graph(&["notify.py", "--no-ready"], json!({"ready": "notify"})),
        )
        .start();
    let stopper = async {
        assert!(
            wait_until(Duration::from_secs(5), || async {
                s.list()
                    .await
                    .iter()
                    .any(|e| e["state"] == "starting" && !e["pid"].is_null())
            })
            .await
        );
        s.stop("m").await
    };
    let (start, stop) = tokio::join!(s.start("m", "mute", json!({})), stopper);
    assert_eq!(code(&start), (409, "10101".into()), "{}", start.text);
    assert_eq!(stop.status, 200, "{}", stop.text);
    assert!(s.list().await.is_empty());
    assert!(s.run_files().is_empty());
}
