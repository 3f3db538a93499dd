//! Supervisor containment: a worker's `setsid()` descendant is gone after `/stop`, after SIGTERM
//! of agentd, and after `kill -9` of agentd plus a restart on the same `DATA_DIR` (cgroup mode);
//! stopping works in both modes; `/health` and `/list` say which mode holds each worker; memory
//! and CPU per worker; a worker over `runtime.memory_max` is killed and restarted per its policy.
//!
//! The cgroup tests need a machine where agentd can make cgroups (cgroup2 mounted and writable,
//! e.g. as root); elsewhere they say so and return.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{
    graph, group_and_session, group_members, numbers_after, pid_alive, pid_exists, wait_until,
    Builder, Remains, TestApp,
};

/// Boots `b` with cgroups on; `None` (after saying why) where agentd gets none on this machine.
async fn with_cgroups(b: Builder) -> Option<TestApp> {
    let s = b.env("WORKER_CGROUPS", "auto").start();
    let h = health(&s).await;
    if h["containment"] == "cgroup" {
        return Some(s);
    }
    eprintln!(
        "skipped: agentd makes no cgroups on this machine: {}",
        h["containment_reason"]
    );
    None
}

/// The `data` of `GET /health`.
async fn health(s: &TestApp) -> Value {
    s.health().await.body["data"].clone()
}

/// A server with the `escape` graph: a worker whose child calls `setsid()` and ignores SIGTERM.
fn escaping() -> Builder {
    TestApp::builder()
        .env("WORKER_STOP_GRACE_MS", "300")
        .graph_file("escape", graph(&["setsid.sh"], json!({})))
}

/// `kill -9` of agentd: its worker `pid` dies with it (PR_SET_PDEATHSIG), the worker's setsid
/// descendant `esc` does not; what the next start sweeps.
async fn kill9_leaving(s: TestApp, pid: i32, esc: i32) -> Remains {
    let remains = s.kill9();
    assert!(wait_until(Duration::from_secs(5), || async { !pid_alive(pid) }).await);
    assert!(
        pid_alive(esc),
        "the descendant should outlive a killed agentd"
    );
    remains
}

/// agentd started again (with cgroups) after [`kill9_leaving`].
fn restart_after(remains: Remains) -> TestApp {
    escaping()
        .env("WORKER_CGROUPS", "auto")
        .after(remains)
        .start()
}

/// Starts `escape` on `channel`: the worker's pid, its escaped descendant's pid, its cgroup.
async fn start_escape(s: &TestApp, channel: &str) -> (i32, i32, PathBuf) {
    let escaped = || numbers_after(&s.log(channel), "escaped");
    let before = escaped().len();
    let pid = s.start_ok(channel, "escape", json!({})).await.pid;
    let printed = wait_until(Duration::from_secs(5), || async {
        escaped().len() > before
    })
    .await;
    assert!(printed, "{}", s.log(channel));
    let esc = escaped()[before];
    // It really left: its own process group and session, not the worker's.
    let (group, session) = group_and_session(esc).expect("the descendant runs");
    let (_, worker_session) = group_and_session(pid).expect("the worker runs");
    assert_ne!(group, pid);
    assert_ne!(session, worker_session);
    let e = s.worker(channel).await.expect("listed");
    assert_eq!(e["containment"], "cgroup", "{e}");
    let cgroup = PathBuf::from(e["cgroup"].as_str().expect("a cgroup path"));
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
    assert!(
        procs.lines().any(|l| l == esc.to_string()),
        "{esc} not in {procs}"
    );
    (pid, esc, cgroup)
}

/// Kills the given pids when dropped, so a failed test leaves no `sleep 1000` behind.
struct Leftovers(Vec<i32>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for p in &self.0 {
            if pid_alive(*p) {
                unsafe {
                    libc::kill(*p, libc::SIGKILL);
                }
            }
        }
    }
}

#[tokio::test]
async fn a_setsid_descendant_is_gone_after_stop() {
    let Some(s) = with_cgroups(escaping()).await else {
        return;
    };
    let (pid, esc, cgroup) = start_escape(&s, "e").await;
    let _guard = Leftovers(vec![esc]);
    let r = s.stop("e").await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Gone, and reaped: not even a zombie is left when /stop answers.
    assert!(
        !pid_exists(esc),
        "the setsid descendant {esc} survived /stop"
    );
    assert!(!pid_exists(pid));
    assert!(!cgroup.exists(), "{} is still there", cgroup.display());
    assert!(s.log("e").contains("got SIGTERM"));
    assert!(s.list().await.is_empty());
}

#[tokio::test]
async fn a_setsid_descendant_is_gone_after_sigterm_of_agentd() {
    let Some(mut s) = with_cgroups(escaping()).await else {
        return;
    };
    let tree = PathBuf::from(health(&s).await["cgroup"].as_str().unwrap());
    let (pid, esc, cgroup) = start_escape(&s, "e").await;
    let _guard = Leftovers(vec![esc]);
    let status = s.terminate(Duration::from_secs(10)).expect("agentd exits");
    assert!(status.success(), "{status:?}");
    assert!(
        !pid_alive(esc),
        "the setsid descendant {esc} survived shutdown"
    );
    assert!(
        wait_until(Duration::from_secs(2), || async {
            !pid_exists(esc) && !pid_exists(pid)
        })
        .await
    );
    assert!(!cgroup.exists());
    assert!(!tree.exists(), "{} is still there", tree.display());
}

#[tokio::test]
async fn a_setsid_descendant_is_gone_after_kill_9_and_a_restart() {
    let Some(s) = with_cgroups(escaping()).await else {
        return;
    };
    let (pid, esc, cgroup) = start_escape(&s, "e").await;
    let _guard = Leftovers(vec![esc]);
    // Recorded soon after the start (which does not wait for the file in cgroup mode).
    let file = s.root().join("data").join("workers.json");
    let recorded = wait_until(Duration::from_secs(5), || async {
        let record = std::fs::read_to_string(&file).unwrap_or_default();
        record.contains(&*cgroup.to_string_lossy())
    })
    .await;
    assert!(recorded, "the cgroup is not recorded");

    let remains = kill9_leaving(s, pid, esc).await;

    // The next start kills it (before it listens) and removes the cgroup.
    let s = restart_after(remains);
    assert!(
        !pid_alive(esc),
        "the setsid descendant {esc} survived the restart"
    );
    assert!(wait_until(Duration::from_secs(2), || async { !pid_exists(esc) }).await);
    assert!(!cgroup.exists(), "{} is still there", cgroup.display());
    assert!(s.output().contains("left behind"), "{}", s.output());
    // The channel works again.
    let (_, esc, _) = start_escape(&s, "e").await;
    let _guard = Leftovers(vec![esc]);
    assert_eq!(s.stop("e").await.status, 200);
    assert!(!pid_exists(esc));
}

#[tokio::test]
async fn a_worker_whose_record_never_reached_the_file_is_gone_after_kill_9_and_a_restart() {
    // In cgroup mode `/start` answers without waiting for workers.json: the cgroup alone must
    // let the next start find and kill the worker.
    let Some(s) = with_cgroups(escaping()).await else {
        return;
    };
    // From now on the record cannot be written (its temporary file is a directory).
    let file = s.root().join("data").join("workers.json");
    let blocker = s.root().join("data").join("workers.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let (pid, esc, cgroup) = start_escape(&s, "e").await;
    let _guard = Leftovers(vec![esc]);
    let record: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(record["workers"], json!([]), "recorded after all: {record}");

    let remains = kill9_leaving(s, pid, esc).await;
    std::fs::remove_dir(&blocker).unwrap();

    let s = restart_after(remains);
    assert!(
        !pid_alive(esc),
        "the setsid descendant {esc} of an unrecorded worker survived the restart"
    );
    assert!(!cgroup.exists(), "{} is still there", cgroup.display());
    assert!(
        s.output().contains("killing a worker cgroup left behind"),
        "{}",
        s.output()
    );
}

/// Cooperative, SIGTERM-ignoring and grandchildren workers all stop cleanly, in `mode`.
async fn stops_cleanly(s: &TestApp, mode: &str) {
    let pid = s.start_ok("c", "coop", json!({})).await.pid;
    let e = s.worker("c").await.unwrap();
    assert_eq!(e["containment"], mode, "{e}");
    let r = s.stop("c").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"]["how"], "exited", "{}", r.text);
    assert_eq!(r.body["data"]["exit_code"], 0);
    assert!(!pid_exists(pid));

    let pid = s.start_ok("i", "stubborn", json!({})).await.pid;
    let t = Instant::now();
    let r = s.stop("i").await;
    assert_eq!(r.body["data"]["how"], "killed", "{}", r.text);
    assert_eq!(r.body["data"]["signal"], 9);
    assert!(t.elapsed() >= Duration::from_millis(500));
    assert!(!pid_exists(pid));
    assert!(group_members(pid).is_empty());

    let pid = s.start_ok("f", "family", json!({})).await.pid;
    assert!(s.wait_log("f", "started pid", Duration::from_secs(5)).await);
    let gc = numbers_after(&s.log("f"), "grandchild");
    assert!(gc.len() >= 3, "{}", s.log("f"));
    let members = group_members(pid);
    let r = s.stop("f").await;
    assert_eq!(r.status, 200, "{}", r.text);
    for p in gc.iter().chain(members.iter()).chain([pid].iter()) {
        assert!(!pid_exists(*p), "pid {p} still exists (zombie or alive)");
    }
    assert!(s.list().await.is_empty());
}

fn three_workers(mode: &str) -> Builder {
    TestApp::builder()
        .env("WORKER_CGROUPS", mode)
        .env("WORKER_STOP_GRACE_MS", "500")
        .graph_file("coop", graph(&["coop.sh"], json!({})))
        .graph_file("stubborn", graph(&["ignore_term.sh"], json!({})))
        .graph_file("family", graph(&["grandchildren.sh"], json!({})))
}

#[tokio::test]
async fn stop_in_process_group_mode() {
    let s = three_workers("off").start();
    let h = health(&s).await;
    assert_eq!(h["containment"], "process-group", "{h}");
    assert_eq!(h["containment_reason"], "WORKER_CGROUPS=off", "{h}");
    assert!(h["cgroup"].is_null());
    assert!(
        s.output().contains("containment: process-group"),
        "{}",
        s.output()
    );
    stops_cleanly(&s, "process-group").await;
}

#[tokio::test]
async fn stop_in_cgroup_mode() {
    let Some(s) = with_cgroups(three_workers("auto")).await else {
        return;
    };
    assert!(s.output().contains("containment: cgroup"), "{}", s.output());
    stops_cleanly(&s, "cgroup").await;
}

#[tokio::test]
async fn health_and_list_say_how_workers_are_held() {
    let b = TestApp::builder().graph_file(
        "limited",
        graph(&["coop.sh"], json!({"memory_max": "1G", "pids_max": 64})),
    );
    let Some(s) = with_cgroups(b).await else {
        return;
    };
    let h = health(&s).await;
    let tree = PathBuf::from(h["cgroup"].as_str().expect("the subtree"));
    assert!(tree.is_dir(), "{h}");
    assert!(h["containment_reason"].is_null());

    let pid = s.start_ok("l", "limited", json!({})).await.pid;
    let e = s.worker("l").await.unwrap();
    let cgroup = PathBuf::from(e["cgroup"].as_str().unwrap());
    assert_eq!(cgroup.parent(), Some(tree.as_path()));
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");
    assert_eq!(e["memory_max"], 1u64 << 30);
    // Each limit is enforced by the kernel where it has the controller; else memory by agentd's
    // sampler, and pids_max not at all (said at start-up and in the worker's log).
    if h["limits"]["memory_max"] == "kernel" {
        assert_eq!(e["memory_max_enforced_by"], "kernel");
        let max = std::fs::read_to_string(cgroup.join("memory.max")).unwrap();
        assert_eq!(max.trim(), (1u64 << 30).to_string());
    } else {
        assert_eq!(e["memory_max_enforced_by"], "agentd");
    }
    if h["limits"]["pids_max"] == "kernel" {
        let max = std::fs::read_to_string(cgroup.join("pids.max")).unwrap();
        assert_eq!(max.trim(), "64");
    } else {
        assert_eq!(h["limits"]["pids_max"], "not enforced");
        assert!(
            s.output().contains("runtime.pids_max is not enforced"),
            "{}",
            s.output()
        );
        assert!(s
            .log("l")
            .contains("runtime.pids_max 64 is not enforced here"));
    }
    assert_eq!(s.stop("l").await.status, 200);
    assert!(!cgroup.exists());
}

/// A worker holding 32 MiB in a child shows at least that, and some CPU, in `/list`.
async fn shows_memory_and_cpu(s: &TestApp) {
    s.start_ok("m", "hold", json!({})).await;
    assert!(s.wait_log("m", "holding", Duration::from_secs(10)).await);
    let shown = wait_until(Duration::from_secs(5), || async {
        let e = s.worker("m").await.unwrap_or_default();
        e["memory_bytes"].as_u64().unwrap_or(0) >= 32 << 20
            && e["cpu_seconds"].as_f64().unwrap_or(0.0) > 0.0
    })
    .await;
    assert!(shown, "{:?}", s.worker("m").await);
    assert_eq!(s.stop("m").await.status, 200);
}

fn holding(mode: &str) -> Builder {
    TestApp::builder()
        .env("WORKER_CGROUPS", mode)
        .env("WORKER_SAMPLE_INTERVAL_MS", "200")
        .graph_file("hold", graph(&["hog.sh", "32"], json!({})))
}

#[tokio::test]
async fn list_shows_memory_and_cpu_in_process_group_mode() {
    shows_memory_and_cpu(&holding("off").start()).await;
}

#[tokio::test]
async fn list_shows_memory_and_cpu_in_cgroup_mode() {
    if let Some(s) = with_cgroups(holding("auto")).await {
        shows_memory_and_cpu(&s).await;
    }
}

#[tokio::test]
async fn a_worker_over_memory_max_is_killed_and_restarted() {
    let s = TestApp::builder()
        .env("WORKER_SAMPLE_INTERVAL_MS", "200")
        .graph_file(
            "hog",
            graph(
                &["hog.sh", "96", "0.5"],
                json!({"memory_max": "48M", "max_restarts": 1}),
            ),
        )
        .start();
    s.start_ok("h", "hog", json!({})).await;
    let e = s.worker("h").await.unwrap();
    assert_eq!(e["memory_max"], 48u64 << 20);
    // Killed (by the kernel or by agentd's sampler), then restarted per its policy...
    let restarted = wait_until(Duration::from_secs(15), || async {
        s.worker("h").await.is_some_and(|e| e["restarts"] == 1)
    })
    .await;
    assert!(restarted, "{}\n{}", s.log("h"), s.output());
    // ...killed again, and given up on after its one restart.
    assert!(
        s.wait_log("h", "giving up after 1 restarts", Duration::from_secs(15))
            .await,
        "{}",
        s.log("h")
    );
    let log = s.log("h");
    assert_eq!(log.matches("over runtime.memory_max").count(), 2, "{log}");
    assert!(
        s.output().contains("over runtime.memory_max"),
        "{}",
        s.output()
    );
    assert!(wait_until(Duration::from_secs(2), || s.gone("h")).await);
}

#[tokio::test]
async fn bad_containment_settings_and_limits_stop_agentd_with_their_name() {
    let out = TestApp::builder()
        .env("WORKER_CGROUPS", "sometimes")
        .try_start()
        .err()
        .expect("refused");
    assert!(
        out.contains("WORKER_CGROUPS") && out.contains("auto or off"),
        "{out}"
    );

    let out = TestApp::builder()
        .env("WORKER_SAMPLE_INTERVAL_MS", "5")
        .try_start()
        .err()
        .expect("refused");
    assert!(out.contains("WORKER_SAMPLE_INTERVAL_MS"), "{out}");

    for (limits, says) in [
        (json!({"memory_max": "lots"}), "memory_max"),
        (json!({"memory_max": 4096}), "at least 1M"),
        (json!({"pids_max": 0}), "pids_max"),
    ] {
        let out = TestApp::builder()
            .graph_file("greedy", graph(&["coop.sh"], limits))
            .try_start()
            .err()
            .expect("refused");
        assert!(
            out.contains("graph \"greedy\"") && out.contains(says),
            "{out}"
        );
    }
}
