//! Supervisor: crashes and restarts, the watchdog, generations, signals to agentd and `kill -9`.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{graph, numbers_after, pid_alive, wait_until, TestApp};

#[tokio::test]
async fn crash_restart_with_backoff_then_give_up() {
    let s = TestApp::builder()
        .graph_file(
            "flaky",
            graph(
                &["crash.sh", "0.6", "3"],
                json!({"settle_ms": 200, "max_restarts": 2}),
            ),
        )
        .graph_file(
            "once",
            graph(
                &["crash.sh", "0.6", "4"],
                json!({"settle_ms": 200, "restart": "never"}),
            ),
        )
        .graph_file(
            "clean",
            graph(&["crash.sh", "0.6", "0"], json!({"settle_ms": 200})),
        )
        .start();
    let t = Instant::now();
    let first = s.start_ok("flaky", "flaky", json!({})).await.pid;
    // It is seen restarting, with a restart count.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            s.list()
                .await
                .iter()
                .any(|e| e["state"] == "restarting" && e["restarts"] == 1)
        })
        .await
    );
    // Three runs in all (the first and two restarts), then it is gone for good.
    assert!(
        wait_until(Duration::from_secs(15), || async {
            s.list().await.is_empty()
        })
        .await,
        "{:?}",
        s.list().await
    );
    let elapsed = t.elapsed();
    let log = s.log("flaky");
    assert_eq!(log.matches("spawned pid").count(), 3, "{log}");
    assert!(
        log.contains("restart 1 in 500 ms") && log.contains("restart 2 in 1000 ms"),
        "{log}"
    );
    assert!(log.contains("giving up after 2 restarts"), "{log}");
    // 3 runs of 0.6 s plus 0.5 s and 1 s of backoff.
    assert!(elapsed >= Duration::from_millis(3000), "{elapsed:?}");
    assert!(!pid_alive(first));
    assert!(s.output().contains("exit code 3"), "{}", s.output());
    let r = s.ping("flaky").await;
    assert_eq!((r.status, r.body["code"].as_str()), (404, Some("10002")));
    let r = s.stop("flaky").await;
    assert_eq!((r.status, r.body["code"].as_str()), (404, Some("10002")));
    assert!(s.run_files().is_empty());

    // restart: never, and a clean exit, are not restarted.
    s.start_ok("once", "once", json!({})).await;
    s.start_ok("clean", "clean", json!({})).await;
    assert!(
        wait_until(Duration::from_secs(5), || async {
            s.list().await.is_empty()
        })
        .await
    );
    assert_eq!(s.log("once").matches("spawned pid").count(), 1);
    assert_eq!(s.log("clean").matches("spawned pid").count(), 1);
}

#[tokio::test]
async fn watchdog_kills_a_silent_worker() {
    let s = TestApp::builder()
        .graph_file(
            "wd",
            graph(
                &["notify.py", "--ready-after", "0", "--beats", "6"],
                json!({"ready": "notify", "watchdog_ms": 400, "restart": "never"}),
            ),
        )
        .graph_file(
            "beating",
            graph(
                &["notify.py", "--ready-after", "0"],
                json!({"ready": "notify", "watchdog_ms": 1200}),
            ),
        )
        .start();
    let pid = s.start_ok("wd", "wd", json!({})).await.pid;
    let steady = s.start_ok("beat", "beating", json!({})).await.pid;
    let since = Instant::now();
    assert!(wait_until(Duration::from_secs(6), || async { !pid_alive(pid) }).await);
    assert!(wait_until(Duration::from_secs(3), || async { s.gone("wd").await }).await);
    assert!(s.log("wd").contains("killed by the watchdog"));
    assert!(s.output().contains("watchdog"), "{}", s.output());
    // A worker that keeps beating is left alone, well past its interval.
    tokio::time::sleep(Duration::from_millis(3000).saturating_sub(since.elapsed())).await;
    assert!(pid_alive(steady));
    assert_eq!(s.list().await[0]["restarts"], 0);
}

#[tokio::test]
async fn an_old_worker_never_touches_a_newer_one_of_the_same_channel() {
    let s = TestApp::builder()
        .env("WORKER_STOP_GRACE_MS", "300")
        .graph_file("coop", graph(&["coop.sh"], json!({})))
        .graph_file("stubborn", graph(&["ignore_term.sh"], json!({})))
        .start();
    for round in 0..3 {
        let old = s.start_ok("ch", "stubborn", json!({})).await.pid;
        let r = s.stop("ch").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let new = s.start_ok("ch", "coop", json!({})).await.pid;
        assert_ne!(old, new);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let l = s.list().await;
        assert_eq!(l.len(), 1, "round {round}: {l:?}");
        assert_eq!(l[0]["pid"], new);
        assert_eq!(s.ping("ch").await.status, 200);
        assert_eq!(s.stop("ch").await.status, 200);
    }
}

#[tokio::test]
async fn second_signal_kills_at_once() {
    let mut s = TestApp::builder()
        .env("WORKER_STOP_GRACE_MS", "20000")
        .graph_file("stubborn", graph(&["ignore_term.sh"], json!({})))
        .start();
    let pid = s.start_ok("x", "stubborn", json!({})).await.pid;
    unsafe {
        libc::kill(s.pid(), libc::SIGTERM);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let status = s
        .terminate(Duration::from_secs(5))
        .expect("exits after the second signal");
    assert!(t.elapsed() < Duration::from_secs(4));
    let _ = status;
    assert!(wait_until(Duration::from_secs(2), || async { !pid_alive(pid) }).await);
}

#[tokio::test]
async fn kill_9_of_agentd_leaves_no_worker_before_or_after_its_next_start() {
    let s = TestApp::builder()
        .graph_file("family", graph(&["grandchildren.sh"], json!({})))
        .graph_file("coop", graph(&["coop.sh"], json!({})))
        .start();
    let leader = s.start_ok("f", "family", json!({})).await.pid;
    let plain = s.start_ok("p", "coop", json!({})).await.pid;
    assert!(s.wait_log("f", "started pid", Duration::from_secs(5)).await);
    let gc = numbers_after(&s.log("f"), "grandchild");
    assert!(!gc.is_empty());
    // Recorded soon after the start (which does not wait for the file in cgroup mode).
    let file = s.root().join("data").join("workers.json");
    let recorded = wait_until(Duration::from_secs(5), || async {
        let record = std::fs::read_to_string(&file).unwrap_or_default();
        record.contains(&leader.to_string())
    })
    .await;
    assert!(recorded, "the leader {leader} is not recorded");

    let remains = s.kill9();
    // The workers die with agentd (PR_SET_PDEATHSIG).
    assert!(
        wait_until(Duration::from_secs(3), || async {
            !pid_alive(leader) && !pid_alive(plain)
        })
        .await
    );
    // Grandchildren that are not direct children are left for the next start to sweep.
    let s = TestApp::builder()
        .graph_file("family", graph(&["grandchildren.sh"], json!({})))
        .after(remains)
        .start();
    for p in &gc {
        assert!(!pid_alive(*p), "grandchild {p} survived the next start");
    }
    assert!(s.output().contains("left behind"), "{}", s.output());
    assert!(s.list().await.is_empty());
}

#[tokio::test]
async fn sweep_spares_a_reused_pid() {
    // A record whose pid now belongs to an unrelated process (different start time) is not killed.
    let dir = tempfile::tempdir().unwrap();
    let mut bystander = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = bystander.id() as i32;
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("data").join("workers.json"),
        json!({"agentd_pid": 1, "workers": [{"channel": "x", "worker_id": "w", "pgid": pid, "start_time": 1}]})
            .to_string(),
    )
    .unwrap();
    let s = TestApp::builder().in_dir(dir).start();
    assert_eq!(s.health().await.status, 200);
    assert!(pid_alive(pid));
    let _ = bystander.kill();
    let _ = bystander.wait();
}
