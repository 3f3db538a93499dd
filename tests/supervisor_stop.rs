//! Supervisor: stopping (cooperative, SIGTERM-ignoring, with grandchildren), inactivity deadlines,
//! atomic reservation under concurrent starts, and shutdown.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{graph, group_members, numbers_after, pid_alive, pid_exists, wait_until, TestApp};

#[tokio::test]
async fn stop_cooperative_ignoring_and_grandchildren() {
    let s = TestApp::builder()
        .env("WORKER_STOP_GRACE_MS", "800")
        .graph_file("coop", graph(&["coop.sh"], json!({})))
        .graph_file("stubborn", graph(&["ignore_term.sh"], json!({})))
        .graph_file("family", graph(&["grandchildren.sh"], json!({})))
        .start();

    // Cooperative: exits 0 on SIGTERM, well before the grace.
    let pid = s.start_ok("c", "coop", json!({})).await.pid;
    let r = s.stop("c").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["how"], "exited", "{}", r.text);
    assert_eq!(r.body["data"]["exit_code"], 0);
    assert!(
        r.body["data"]["took_ms"].as_u64().unwrap() < 800,
        "{}",
        r.text
    );
    assert!(!pid_exists(pid));
    assert!(s.log("c").contains("got SIGTERM"));
    // Gone for good: ping and stop answer 10002.
    let r = s.ping("c").await;
    assert_eq!((r.status, r.body["code"].as_str()), (404, Some("10002")));
    let r = s.stop("c").await;
    assert_eq!((r.status, r.body["code"].as_str()), (404, Some("10002")));

    // Ignores SIGTERM: killed after the grace.
    let pid = s.start_ok("i", "stubborn", json!({})).await.pid;
    let t = Instant::now();
    let r = s.stop("i").await;
    assert_eq!(r.body["data"]["how"], "killed", "{}", r.text);
    assert_eq!(r.body["data"]["signal"], 9);
    assert!(t.elapsed() >= Duration::from_millis(800));
    assert!(!pid_exists(pid));
    assert!(group_members(pid).is_empty());

    // Grandchildren (ignoring SIGTERM, one two levels down): all gone, none left as zombies.
    let pid = s.start_ok("f", "family", json!({})).await.pid;
    assert!(s.wait_log("f", "started pid", Duration::from_secs(5)).await);
    let gc = numbers_after(&s.log("f"), "grandchild");
    assert!(gc.len() >= 3, "{}", s.log("f"));
    assert!(gc.iter().all(|p| pid_alive(*p)));
    let members = group_members(pid);
    assert!(members.len() >= 4, "{members:?}");
    let r = s.stop("f").await;
    assert_eq!(r.status, 200, "{}", r.text);
    for p in gc.iter().chain(members.iter()).chain([pid].iter()) {
        assert!(!pid_exists(*p), "pid {p} still exists (zombie or alive)");
    }
    assert!(group_members(pid).is_empty());
    assert!(s.list().await.is_empty());
}

#[tokio::test]
async fn inactivity_deadline_ping_and_never() {
    let s = TestApp::builder()
        .env("WORKER_QUIT_TIMEOUT_SECONDS", "1")
        .graph_file("coop", graph(&["coop.sh"], json!({})))
        .start();
    let idle = s.start_ok("idle", "coop", json!({"timeout": 2})).await.pid;
    let forever = s
        .start_ok("forever", "coop", json!({"timeout": -1}))
        .await
        .pid;
    let default = s
        .start_ok("default", "coop", json!({"timeout": 0}))
        .await
        .pid;
    // The deadline of "default" is 1 s after its /start answered.
    let t = Instant::now();
    assert_eq!(s.list().await.len(), 3);
    let entry =
        |l: &Vec<serde_json::Value>, c: &str| l.iter().find(|e| e["channel_name"] == c).cloned();
    let l = s.list().await;
    assert_eq!(entry(&l, "forever").unwrap()["timeout"], -1);
    assert_eq!(entry(&l, "default").unwrap()["timeout"], 1);
    assert_eq!(entry(&l, "idle").unwrap()["timeout"], 2);

    // Reaped at its own deadline (asserted within 1 s of it on a loaded machine), not on a sweep.
    assert!(wait_until(Duration::from_secs(3), || async { !pid_exists(default) }).await);
    let reaped_at = t.elapsed();
    assert!(reaped_at < Duration::from_millis(2000), "{reaped_at:?}");
    assert!(reaped_at >= Duration::from_millis(950), "{reaped_at:?}");

    // Pings push the deadline back.
    let pinged = s.start_ok("pinged", "coop", json!({})).await.pid;
    for _ in 0..5 {
        assert_eq!(s.ping("pinged").await.status, 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(pid_alive(pinged));

    assert!(wait_until(Duration::from_secs(3), || async { !pid_exists(idle) }).await);
    assert!(pid_alive(forever), "timeout -1 must survive the default");
    assert!(entry(&s.list().await, "forever").is_some());
    assert!(s.log("default").contains("inactivity timeout"));

    // Bad timeouts are a 400.
    for bad in [json!(-2), json!(1.5), json!("10")] {
        let r = s.start("bad", "coop", json!({"timeout": bad})).await;
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (400, Some("10000")),
            "{}",
            r.text
        );
    }
}

#[tokio::test]
async fn twenty_concurrent_starts_of_one_channel_spawn_one_worker() {
    let s = TestApp::builder()
        .graph_file("coop", graph(&["coop.sh"], json!({})))
        .start();
    let results =
        futures_util::future::join_all((0..20).map(|_| s.start("same", "coop", json!({})))).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    let conflict = results
        .iter()
        .filter(|r| r.status == 409 && r.body["code"] == "10003")
        .count();
    assert_eq!(
        (ok, conflict),
        (1, 19),
        "{:?}",
        results.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    assert!(
        s.wait_log("same", "started pid", Duration::from_secs(5))
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.log("same").matches("started pid").count(), 1);
}

#[tokio::test]
async fn workers_max_and_graph_cap_under_concurrent_starts() {
    let s = TestApp::builder()
        .env("WORKERS_MAX", "4")
        .graph_file("coop", graph(&["coop.sh"], json!({})))
        .graph_file("capped", graph(&["coop.sh"], json!({"max_workers": 2})))
        .start();
    let results = futures_util::future::join_all((0..10).map(|i| {
        let ch = format!("w{i}");
        let s = &s;
        async move { s.start(&ch, "coop", json!({})).await }
    }))
    .await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    let limited = results
        .iter()
        .filter(|r| r.status == 429 && r.body["code"] == "10001")
        .count();
    assert_eq!((ok, limited), (4, 6));
    assert_eq!(s.list().await.len(), 4);
    for r in results.iter().filter(|r| r.status == 200) {
        s.stop(r.body["data"]["channel_name"].as_str().unwrap())
            .await;
    }

    let results = futures_util::future::join_all((0..5).map(|i| {
        let ch = format!("c{i}");
        let s = &s;
        async move { s.start(&ch, "capped", json!({})).await }
    }))
    .await;
    assert_eq!(results.iter().filter(|r| r.status == 200).count(), 2);
    assert_eq!(results.iter().filter(|r| r.status == 429).count(), 3);
}

#[tokio::test]
async fn shutdown_stops_every_worker_in_parallel_and_refuses_starts() {
    let mut s = TestApp::builder()
        .env("WORKER_STOP_GRACE_MS", "1500")
        .graph_file("stubborn", graph(&["ignore_term.sh"], json!({})))
        .start();
    let mut pids = Vec::new();
    for i in 0..4 {
        pids.push(
            s.start_ok(&format!("s{i}"), "stubborn", json!({}))
                .await
                .pid,
        );
    }
    let t = Instant::now();
    unsafe {
        libc::kill(s.pid(), libc::SIGTERM);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = s.start("late", "stubborn", json!({})).await;
    assert_eq!(r.status, 503, "{}", r.text);
    let status = s.wait_exit(Duration::from_secs(10)).expect("agentd exits");
    assert!(status.success(), "{status:?}");
    // Four stops of 1.5 s each, in parallel: well under the 6 s a serial shutdown takes.
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert!(took < Duration::from_millis(4000), "{took:?}");
    for p in pids {
        assert!(!pid_alive(p));
    }
}
