//! Prewarmed workers (`runtime.prewarm`): a `/start` takes a worker that was already started and
//! waiting, a replacement follows, and the taken worker is a channel's worker like any other
//! (answers its chat, stops, logs). A waiting worker that dies is replaced, a changed graph
//! replaces its waiting workers, and shutdown leaves none. Through the real server and workers.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{pid_alive, wait_for, wait_until, TestApp};

const WITHIN: Duration = Duration::from_secs(30);

/// The built-in echo worker, `n` of them kept waiting.
fn warm_graph(n: u32, prefix: &str) -> Value {
    json!({
        "auto_start": false,
        "nodes": [{"type": "extension", "name": "echo", "addon": "echo",
                   "property": {"prefix": prefix}}],
        "connections": [],
        "runtime": {"prewarm": n}
    })
}

fn server(n: u32) -> TestApp {
    TestApp::builder()
        .fast_dispatch()
        .graph_file("warm", warm_graph(n, ""))
        .start()
}

/// Pids of the waiting workers of `graph`: said to be waiting in the pool's log, still recorded
/// under the pool (not yet a channel's) in the record of live groups, and alive.
fn waiting(s: &TestApp, graph: &str) -> Vec<i32> {
    let log = s.prewarm_log(graph);
    let said: Vec<i32> = log
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("prewarmed worker ")?.1;
            rest.strip_suffix(" waiting")?.parse().ok()
        })
        .collect();
    recorded(s, graph)
        .into_iter()
        .filter(|p| said.contains(p))
        .collect()
}

fn recorded(s: &TestApp, graph: &str) -> Vec<i32> {
    let path = s.root().join("data").join("workers.json");
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let doc: Value = serde_json::from_str(&text).unwrap_or_default();
    doc["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["channel"] == format!("prewarm:{graph}"))
        .filter_map(|w| w["pgid"].as_i64().map(|p| p as i32))
        .filter(|p| pid_alive(*p))
        .collect()
}

/// Waits for a waiting worker of `graph` that is none of `not`.
async fn next_waiting(s: &TestApp, graph: &str, not: &[i32]) -> i32 {
    let found = wait_for(WITHIN, || async {
        waiting(s, graph).into_iter().find(|p| !not.contains(p))
    })
    .await;
    match found {
        Some(p) => p,
        None => panic!(
            "no new prewarmed worker of {graph} (waiting: {:?}); output:\n{}",
            waiting(s, graph),
            s.output()
        ),
    }
}

#[tokio::test]
async fn start_takes_the_prewarmed_worker_and_a_replacement_follows() {
    let s = server(1);
    let first = next_waiting(&s, "warm", &[]).await;

    let w = s.start_ok("room", "warm", json!({"timeout": -1})).await;
    assert_eq!(w.pid, first, "the prewarmed worker was not the one started");
    // It is the channel's worker now: it answers the channel's chat.
    assert!(s
        .ask(&w.chat(), "hello there", "hello there")
        .await
        .is_some());
    assert!(s
        .log("room")
        .contains(&format!("prewarmed worker {first} taken")));
    let listed = s.worker("room").await.expect("listed");
    assert_eq!(listed["pid"], first);

    // A replacement waits, not counted as a channel.
    let second = next_waiting(&s, "warm", &[first]).await;
    assert_eq!(s.list().await.len(), 1);

    // The taken worker stops like any other, its group with it.
    assert_eq!(s.stop("room").await.status, 200);
    assert!(wait_until(WITHIN, || async { !pid_alive(first) }).await);
    assert!(pid_alive(second));

    // A second channel takes the replacement.
    let w2 = s.start_ok("room2", "warm", json!({"timeout": -1})).await;
    assert_eq!(w2.pid, second);
    assert!(s.ask(&w2.chat(), "again", "again").await.is_some());
}

#[tokio::test]
async fn a_killed_prewarmed_worker_is_replaced() {
    let s = server(1);
    let first = next_waiting(&s, "warm", &[]).await;
    // SAFETY: a plain syscall on a worker of this test's server.
    unsafe { libc::kill(first, libc::SIGKILL) };
    let second = next_waiting(&s, "warm", &[first]).await;
    assert!(!pid_alive(first));
    let w = s.start_ok("after-kill", "warm", json!({})).await;
    assert_eq!(w.pid, second);
}

#[tokio::test]
async fn a_changed_graph_replaces_its_prewarmed_workers_and_shutdown_stops_them() {
    let mut s = server(2);
    let mut old = vec![next_waiting(&s, "warm", &[]).await];
    old.push(next_waiting(&s, "warm", &old).await);

    // Hot reload: the new prefix must be what a started worker answers with.
    let file = s.root().join("graphs").join("warm.json");
    std::fs::write(&file, warm_graph(2, "new: ").to_string()).unwrap();
    assert!(
        wait_until(WITHIN, || async { old.iter().all(|p| !pid_alive(*p)) }).await,
        "the old prewarmed workers still run"
    );
    let fresh = next_waiting(&s, "warm", &old).await;
    let w = s.start_ok("reloaded", "warm", json!({"timeout": -1})).await;
    assert!(!old.contains(&w.pid));
    assert!(s.ask(&w.chat(), "hi", "new: hi").await.is_some());

    // Shutdown: the waiting ones go too.
    let left = next_waiting(&s, "warm", &[w.pid]).await;
    let _ = fresh;
    assert!(s.terminate(WITHIN).is_some());
    assert!(!pid_alive(left));
    assert!(!pid_alive(w.pid));
    assert!(s.spawned().is_empty(), "left behind: {:?}", s.spawned());
}

/// A prewarmed start answers only once what it says is true: the worker runs, its group is in
/// the record of live groups (recorded when it was prewarmed; the channel is filled in after),
/// and the channel's chat exists (written while the worker was handed over). A later start of
/// the channel gets the same chat.
#[tokio::test]
async fn a_prewarmed_start_answers_with_its_chat_written_and_its_group_recorded() {
    let s = server(1);
    let first = next_waiting(&s, "warm", &[]).await;
    let w = s.start_ok("told", "warm", json!({"timeout": -1})).await;
    assert_eq!(w.pid, first);
    let chat = s.get(&format!("/api/v1/chats/{}", w.chat())).await;
    assert_eq!(
        chat.status, 200,
        "the answered chat does not exist: {}",
        chat.text
    );
    let path = s.root().join("data").join("workers.json");
    let record = || -> Value {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        doc["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["pgid"] == w.pid)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert!(
        record().is_object(),
        "the started worker's group is not recorded"
    );
    assert!(
        wait_until(WITHIN, || async { record()["channel"] == "told" }).await,
        "the record never got the worker's channel: {}",
        record()
    );

    s.stop_ok("told").await;
    next_waiting(&s, "warm", &[first]).await;
    let again = s.start_ok("told", "warm", json!({"timeout": -1})).await;
    assert_eq!(
        again.chat(),
        w.chat(),
        "a second start of the channel got another chat"
    );
    assert!(s
        .ask(&again.chat(), "once more", "once more")
        .await
        .is_some());
}

#[tokio::test]
async fn a_channel_named_like_the_pool_keeps_a_log_of_its_own() {
    let s = server(1);
    let first = next_waiting(&s, "warm", &[]).await;
    // Channel names may hold a colon: this one spells the pool's stand-in name.
    let w = s.start_ok("prewarm:warm", "warm", json!({})).await;
    assert_eq!(w.pid, first);
    assert!(s.ask(&w.chat(), "mine", "mine").await.is_some());
    let second = next_waiting(&s, "warm", &[first]).await;
    assert!(
        !s.log("prewarm:warm")
            .contains(&format!("prewarmed worker {second} waiting")),
        "the pool wrote into the channel's log:\n{}",
        s.log("prewarm:warm")
    );
    assert!(s
        .prewarm_log("warm")
        .contains(&format!("prewarmed worker {second} waiting")));
}

/// A start right after the waiting worker died (before or after agentd noticed) does not get
/// the dead one: it starts a worker that answers, and a replacement waits afterwards.
#[tokio::test]
async fn a_start_just_after_the_waiting_worker_died_gets_a_live_worker() {
    let s = server(1);
    let first = next_waiting(&s, "warm", &[]).await;
    // SAFETY: a plain syscall on a worker of this test's server.
    unsafe { libc::kill(first, libc::SIGKILL) };
    assert!(wait_until(WITHIN, || async { !pid_alive(first) }).await);
    let w = s
        .start_ok("after-death", "warm", json!({"timeout": -1}))
        .await;
    assert_ne!(w.pid, first);
    assert!(s.ask(&w.chat(), "alive?", "alive?").await.is_some());
    let next = next_waiting(&s, "warm", &[first, w.pid]).await;
    assert!(pid_alive(next));
    assert!(s
        .prewarm_log("warm")
        .contains(&format!("prewarmed worker {first} exited while waiting")));
}

/// A property document too large to be written on the request's thread (over 64 KiB) is written
/// elsewhere, and the prewarmed worker still reads all of it.
#[tokio::test]
async fn a_large_property_document_reaches_the_prewarmed_worker() {
    let s = server(1);
    let first = next_waiting(&s, "warm", &[]).await;
    let notes = "n".repeat(100 * 1024);
    let w = s
        .start_ok(
            "large",
            "warm",
            json!({"timeout": -1, "properties": {"echo": {"prefix": "large: ", "notes": notes}}}),
        )
        .await;
    assert_eq!(w.pid, first);
    assert!(s.ask(&w.chat(), "hi", "large: hi").await.is_some());
}
