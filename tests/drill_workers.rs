//! Fault drills for workers and disks: a crash storm, a worker frozen under a watchdog, and
//! directories or log files that cannot be written.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{pid_alive, started, user_message, wait_until, TestApp};

/// A graph whose worker is `sh -c SCRIPT` (agentd's `--property FILE` lands in `$0`/`$1`).
fn shell(script: &str, runtime: Value) -> Value {
    let mut rt = json!({"command": ["sh", "-c", script]});
    rt.as_object_mut()
        .unwrap()
        .extend(runtime.as_object().unwrap().clone());
    json!({
        "auto_start": false,
        "nodes": [{"type": "extension", "name": "main", "addon": "custom", "property": {}}],
        "connections": [],
        "runtime": rt
    })
}

const STORM: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_storm_stays_bounded_and_agentd_stays_responsive() {
    let s = TestApp::builder()
        .graph_file(
            "dead_on_arrival",
            shell(
                "echo boom from $$ >&2; exit 7",
                json!({"ready": "settle", "settle_ms": 300}),
            ),
        )
        .graph_file(
            "storm",
            shell(
                "echo storm $$ >&2; sleep 0.4; exit 7",
                json!({"ready": "settle", "settle_ms": 50, "max_restarts": 3}),
            ),
        )
        .graph_file(
            "steady",
            shell(
                "exec sleep 600",
                json!({"ready": "settle", "settle_ms": 20}),
            ),
        )
        .start();

    // Crashing before it is ready: /start says so, with the exit status and the output.
    let r = s.start("doa", "dead_on_arrival", json!({})).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (502, Some("10101")),
        "{}",
        r.text
    );
    assert!(
        r.body["data"]["exit_status"]
            .as_str()
            .unwrap()
            .contains('7'),
        "{}",
        r.text
    );
    assert!(r.text.contains("boom from"), "{}", r.text);
    assert!(s.gone("doa").await);

    // Ready, then crashing at once after every restart, on many channels together.
    s.start_ok("steady", "steady", json!({})).await;
    let starts = (0..STORM).map(|i| {
        let s = &s;
        async move { s.start(&format!("storm{i}"), "storm", json!({})).await }
    });
    for r in futures_util::future::join_all(starts).await {
        started(&r);
    }
    // While the storm runs, health and the other channel answer quickly.
    let mut slowest = Duration::ZERO;
    let t = Instant::now();
    let mut rounds = 0;
    while !s.list().await.iter().all(|e| e["channel_name"] == "steady") {
        assert!(t.elapsed() < Duration::from_secs(20), "storm never ended");
        for path in ["/health", "/api/v1/health"] {
            let t0 = Instant::now();
            assert_eq!(s.get(path).await.status, 200);
            slowest = slowest.max(t0.elapsed());
        }
        let t0 = Instant::now();
        assert_eq!(s.ping("steady").await.status, 200);
        slowest = slowest.max(t0.elapsed());
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "drill: storm over in {:?}; {rounds} rounds, slowest answer {slowest:?}",
        t.elapsed()
    );
    assert!(rounds >= 10, "{rounds}");
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    // Bounded: the first run and max_restarts restarts, then given up; the cause is in the logs.
    for i in 0..STORM {
        let log = s.log(&format!("storm{i}"));
        assert_eq!(log.matches("storm ").count(), 4, "{log}");
        assert!(log.contains("giving up after 3 restarts"), "{log}");
        assert!(
            log.contains("exited on its own") && log.contains('7'),
            "{log}"
        );
    }
    assert!(s.output().contains("giving up"), "{}", s.output());
    assert_eq!(s.list().await.len(), 1);
    assert!(s.run_files().len() <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_is_killed_by_the_watchdog_and_its_batch_redelivered() {
    let s = TestApp::builder()
        .bundled()
        .env("DISPATCH_MODE", "immediate")
        .env("DISPATCH_RETRY_BASE_MS", "100")
        .graph_file(
            "slow_echo",
            json!({
                "auto_start": false,
                "nodes": [{"type": "extension", "name": "echo", "addon": "echo",
                           "property": {"stream": true, "chunk_delay_ms": 150}}],
                "connections": [],
                "runtime": {"watchdog_ms": 800}
            }),
        )
        .start();
    let w = s
        .start_ok("frozen", "slow_echo", json!({"timeout": -1}))
        .await;
    let (first, chat) = (w.pid, w.chat());
    let text = "one two three four five six seven eight nine ten eleven twelve";
    let r = s.post_message(&chat, user_message(text)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Freeze it mid-answer: the batch is in its hands.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            s.agent_answers(&chat)
                .await
                .iter()
                .any(|m| m["stream_state"] == "streaming")
        })
        .await
    );
    unsafe {
        libc::kill(first, libc::SIGSTOP);
    }
    let frozen_at = Instant::now();
    assert!(wait_until(Duration::from_secs(5), || async { !pid_alive(first) }).await);
    let killed_after = frozen_at.elapsed();
    assert!(
        s.wait_log("frozen", "killed by the watchdog", Duration::from_secs(2))
            .await
    );
    // Restarted under a new pid, and the batch is answered by the new worker.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            s.list()
                .await
                .first()
                .is_some_and(|e| e["state"] == "running" && e["pid"].as_i64() != Some(first as i64))
        })
        .await
    );
    let answered = wait_until(Duration::from_secs(15), || async {
        s.agent_answers(&chat)
            .await
            .iter()
            .any(|m| m["stream_state"] == "complete" && m["content_final"] == text)
    })
    .await;
    let answers = s.agent_answers(&chat).await;
    assert!(answered, "{answers:#?}\n{}", s.log("frozen"));
    let complete = answers
        .iter()
        .filter(|m| m["stream_state"] == "complete")
        .count();
    assert_eq!(complete, 1, "{answers:#?}");
    assert!(
        answers.iter().all(|m| m["stream_state"] != "streaming"),
        "{answers:#?}"
    );
    assert_eq!(s.list().await[0]["restarts"], 1);
    println!("drill: frozen worker killed after {killed_after:?}");
    assert!(killed_after < Duration::from_secs(3), "{killed_after:?}");
}

#[test]
fn unwritable_data_dir_or_log_path_stops_the_start_with_a_clear_error() {
    // Paths under a regular file cannot be created, even by root.
    let blocker = tempfile::NamedTempFile::new().unwrap();
    for var in ["DATA_DIR", "LOG_PATH"] {
        let bad = blocker.path().join("sub");
        let out = TestApp::builder()
            .env(var, bad.to_str().unwrap())
            .try_start()
            .err()
            .unwrap_or_else(|| panic!("agentd started with {var} under a file"));
        assert!(
            !out.contains("exit: Some(ExitStatus(unix_wait_status(0)))"),
            "{out}"
        );
        assert!(out.contains("exit: Some("), "{out}");
        assert!(
            out.contains(var) && out.contains(bad.to_str().unwrap()),
            "{var}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_log_cannot_be_written_does_not_take_agentd_down() {
    // 1 KB lines without pause, and a running count of them beside the graph file.
    let ticker = shell(
        "l=$(printf '%01000d' 0); i=0; trap 'exit 0' TERM; \
         while :; do echo \"$i $l\"; i=$((i+1)); echo $i > \"$AGENTD_CHANNEL.count\"; sleep 0.002; done",
        json!({"ready": "settle", "settle_ms": 50}),
    );
    let s = TestApp::builder()
        .env("LOG_MAX_BYTES", "4096")
        .graph_file("ticker", ticker)
        .start();
    // (The file may be caught between truncation and write: read again.)
    let count = |ch: &str| -> u64 {
        let path = s.root().join("graphs").join(format!("{ch}.count"));
        (0..100)
            .find_map(|_| {
                let n = std::fs::read_to_string(&path).ok()?.trim().parse().ok();
                if n.is_none() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                n
            })
            .unwrap_or(0)
    };
    // A full disk: the channel's log file is /dev/full, where every write fails (even for root).
    let logs = s.root().join("logs");
    std::os::unix::fs::symlink("/dev/full", s.log_path("full")).unwrap();
    let full = s.start_ok("full", "ticker", json!({})).await.pid;
    // A log directory that vanishes mid-run (replaced by a file): rotation cannot reopen.
    let gone = s.start_ok("gone", "ticker", json!({})).await.pid;
    let moved = s.root().join("logs.moved");
    std::fs::rename(&logs, &moved).unwrap();
    std::fs::write(&logs, b"not a directory").unwrap();
    // A new worker can still start (its log cannot even be opened).
    let late = s.start_ok("late", "ticker", json!({})).await.pid;
    let before: Vec<u64> = ["full", "gone", "late"].iter().map(|c| count(c)).collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Every worker keeps writing well past a pipe's 64 KiB: agentd drains what it cannot log.
    for (i, ch) in ["full", "gone", "late"].iter().enumerate() {
        let wrote = count(ch).saturating_sub(before[i]);
        assert!(
            wrote >= 100,
            "{ch} wrote only {wrote} KB: blocked on its pipe?"
        );
    }
    for pid in [full, gone, late] {
        assert!(pid_alive(pid));
    }
    assert_eq!(s.health().await.status, 200);
    assert_eq!(s.list().await.len(), 3);
    for ch in ["full", "gone", "late"] {
        let r = s.stop(ch).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["data"]["how"], "exited", "{}", r.text);
    }
    // Said, but not once per line the worker wrote.
    let warnings = s.output().matches("cannot open worker log").count();
    println!("drill: {warnings} warnings about unwritable logs");
    assert!((1..=4).contains(&warnings), "{warnings} warnings");
    // Once the directory is back, logging resumes.
    std::fs::remove_file(&logs).unwrap();
    std::fs::rename(&moved, &logs).unwrap();
    s.start_ok("back", "ticker", json!({})).await;
    assert!(
        s.wait_log("back", "0000000000", Duration::from_secs(10))
            .await
    );
}
