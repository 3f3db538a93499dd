//! Fault drills: `kill -9` of agentd with 100 workers running, and in the middle of a stream of
//! user messages.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use support::{group_members, pid_alive, started, user_message, wait_until, Remains, TestApp};

const WORKERS: usize = 100;

/// A cheap worker: a shell whose group also holds a background `sleep` (a grandchild once the
/// shell has exec'd), so the drill sees both PR_SET_PDEATHSIG and the start-up sweep at work.
fn sleeper() -> Value {
    json!({
        "auto_start": false,
        "nodes": [{"type": "extension", "name": "main", "addon": "custom", "property": {}}],
        "connections": [],
        "runtime": {"command": ["sh", "-c", "sleep 600 & exec sleep 600"], "ready": "settle", "settle_ms": 20}
    })
}

fn sleepers(after: Option<Remains>) -> TestApp {
    let mut b = TestApp::builder()
        .env("WORKERS_MAX", "120")
        .graph_file("sleeper", sleeper());
    if let Some(r) = after {
        b = b.after(r);
    }
    b.start()
}

/// Live members (zombies excluded) of the process group `pgid`.
fn live_members(pgid: i32) -> Vec<i32> {
    group_members(pgid)
        .into_iter()
        .filter(|p| pid_alive(*p))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_100_workers_leaves_none_and_the_next_start_is_clean() {
    let s = sleepers(None);
    let starts = (0..WORKERS).map(|i| {
        let s = &s;
        async move { s.start(&format!("w{i}"), "sleeper", json!({})).await }
    });
    let replies = futures_util::future::join_all(starts).await;
    let pgids: Vec<i32> = replies.iter().map(|r| started(r).pid).collect();
    assert_eq!(s.list().await.len(), WORKERS);
    // Each group has its leader and the background sleep.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            pgids.iter().all(|g| live_members(*g).len() == 2)
        })
        .await
    );
    let grandchildren: Vec<i32> = pgids
        .iter()
        .flat_map(|g| live_members(*g).into_iter().filter(move |p| p != g))
        .collect();
    assert_eq!(grandchildren.len(), WORKERS);

    let remains = s.kill9();
    // Every leader dies with agentd (PR_SET_PDEATHSIG).
    assert!(
        wait_until(Duration::from_secs(5), || async {
            pgids.iter().all(|p| !pid_alive(*p))
        })
        .await,
        "leaders alive: {:?}",
        pgids.iter().filter(|p| pid_alive(**p)).collect::<Vec<_>>()
    );

    // The next start sweeps what was left (the grandchildren) before it listens.
    let s = sleepers(Some(remains));
    let survivors: Vec<i32> = pgids.iter().flat_map(|g| live_members(*g)).collect();
    assert!(
        survivors.is_empty(),
        "survived the next start: {survivors:?}"
    );
    assert!(grandchildren.iter().all(|p| !pid_alive(*p)));
    assert!(s.output().contains("left behind"), "{}", s.output());
    assert!(s.list().await.is_empty());
    let run = s.run_files();
    assert!(run.is_empty(), "leftover per-worker files: {run:?}");
    // New starts work, on old channel names too, and stop cleanly.
    for i in 0..3 {
        let pid = s.start_ok(&format!("w{i}"), "sleeper", json!({})).await.pid;
        assert!(pid_alive(pid));
        assert_eq!(s.stop(&format!("w{i}")).await.status, 200);
        assert!(live_members(pid).is_empty());
    }
}

/// Echo workers answer through the built-in worker; every message is its own batch.
fn chat_server(after: Option<Remains>) -> TestApp {
    let mut b = TestApp::builder()
        .bundled()
        .env("DISPATCH_MODE", "immediate")
        .env("DISPATCH_LEASE_MS", "1500")
        .env("DISPATCH_RETRY_BASE_MS", "100")
        .env("WRITE_RATE_LIMIT_MAX", "100000");
    if let Some(r) = after {
        b = b.after(r);
    }
    b.start()
}

async fn start_echo(s: &TestApp, channel: &str) -> (String, i32) {
    // A slow answer (word by word), so batches are pending and one is half streamed at the kill.
    let props = json!({"echo": {"chunk_delay_ms": 30}});
    let w = s
        .start_ok(channel, "echo", json!({"timeout": -1, "properties": props}))
        .await;
    (w.chat(), w.pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_message_stream_loses_nothing_acknowledged() {
    let s = chat_server(None);
    let (chat, first_pid) = start_echo(&s, "stream").await;

    // A client posts user messages one after another, as fast as they are acknowledged.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let poster = {
        let (client, url, acked) = (s.client.clone(), s.url(""), acked.clone());
        let chat = chat.clone();
        tokio::spawn(async move {
            for n in 0.. {
                let text = format!("message {n} alpha beta gamma");
                let res = client
                    .post(format!("{url}/api/v1/chats/{chat}/messages"))
                    .json(&user_message(&text))
                    .send()
                    .await;
                let Ok(res) = res else { return n };
                if res.status().as_u16() != 201 {
                    return n;
                }
                let Ok(body) = res.json::<Value>().await else {
                    return n;
                };
                let id = body["id"].as_str().unwrap_or_default().to_string();
                acked.lock().unwrap().push((id, text));
            }
            unreachable!()
        })
    };
    // Let answers flow, then kill agentd while messages are still coming and an answer is
    // being streamed.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            acked.lock().unwrap().len() >= 25
                && s.list_messages(&chat, "?limit=5").await.body["data"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|m| m["stream_state"] == "streaming"))
        })
        .await
    );
    let remains = s.kill9();
    let sent = tokio::time::timeout(Duration::from_secs(10), poster)
        .await
        .expect("poster stops")
        .unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 25 && sent as usize >= acked.len());
    assert!(wait_until(Duration::from_secs(3), || async { !pid_alive(first_pid) }).await);

    let restarted = std::time::Instant::now();
    let s = chat_server(Some(remains));
    // Every acknowledged message is stored, in order.
    let stored = s.history(&chat).await;
    let users: Vec<&Value> = stored.iter().filter(|m| m["role"] == "user").collect();
    let user_ids: Vec<&str> = users.iter().map(|m| m["id"].as_str().unwrap()).collect();
    for (id, _) in &acked {
        assert!(user_ids.contains(&id.as_str()), "acknowledged {id} lost");
    }
    assert!(users.len() <= sent as usize + 1);
    let answered = |all: &[Value], t: &str| {
        all.iter()
            .filter(|m| {
                m["role"] == "agent" && m["stream_state"] == "complete" && m["content_final"] == t
            })
            .count()
    };
    let open_at_kill = users
        .iter()
        .filter(|u| answered(&stored, u["content_final"].as_str().unwrap()) == 0)
        .count();
    let half = stored
        .iter()
        .filter(|m| m["stream_state"] == "streaming")
        .count();

    // The channel's worker comes back on the same chat and every batch is answered once.
    let (again, _) = start_echo(&s, "stream").await;
    assert_eq!(again, chat);
    let texts: Vec<String> = users
        .iter()
        .map(|m| m["content_final"].as_str().unwrap().to_string())
        .collect();
    // Well within the 30 s lease the dead worker took: its leases are handed back at the start.
    // Each answer is streamed word by word (about 150 ms), and how many messages were posted
    // before the kill depends on the machine's load, so the wait grows with the backlog.
    let backlog = Duration::from_millis(400) * texts.len() as u32;
    let settled = wait_until(Duration::from_secs(10) + backlog, || async {
        let all = s.history(&chat).await;
        texts.iter().all(|t| answered(&all, t) >= 1)
    })
    .await;
    let all = s.history(&chat).await;
    let summary = |m: &Value| format!("{} {} {}", m["role"], m["stream_state"], m["content_final"]);
    assert!(
        settled,
        "unanswered after restart:\n{}",
        all.iter().map(summary).collect::<Vec<_>>().join("\n")
    );
    // Exactly once: no message has two complete answers.
    for t in &texts {
        let n = answered(&all, t);
        assert_eq!(n, 1, "{t:?} answered {n} times");
    }
    // An answer that was half streamed when agentd died does not stay "streaming".
    let streaming: Vec<String> = all
        .iter()
        .filter(|m| m["stream_state"] == "streaming")
        .map(summary)
        .collect();
    assert!(streaming.is_empty(), "left streaming: {streaming:?}");
    println!(
        "drill: {} acknowledged, {} stored, {open_at_kill} unanswered and {half} half streamed \
         at the kill, {} messages in all {:?} after the restart",
        acked.len(),
        users.len(),
        all.len(),
        restarted.elapsed()
    );
    assert!(
        open_at_kill > 0,
        "the kill came after every answer: no drill"
    );
}

/// A worker with nothing to sweep: only `PR_SET_PDEATHSIG` (and the parent check after it) can
/// end it when agentd dies.
fn lone_sleeper() -> Value {
    json!({
        "auto_start": false,
        "nodes": [{"type": "extension", "name": "main", "addon": "custom", "property": {}}],
        "connections": [],
        "runtime": {"command": ["sh", "-c", "exec sleep 600"], "ready": "settle", "settle_ms": 1}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_storm_of_starts_leaves_no_orphan() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let s = TestApp::builder()
        .env("WORKERS_MAX", "2000")
        .graph_file("lone", lone_sleeper())
        .start();
    // Clients start workers as fast as agentd takes them, until it is gone.
    let started = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..12)
        .map(|c| {
            let (client, url, started) = (s.client.clone(), s.url("/start"), started.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    let body = json!({"channel_name": format!("c{c}-{n}"), "graph_name": "lone"});
                    match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {
                            started.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(60), || async {
            started.load(Ordering::SeqCst) >= 60
        })
        .await,
        "the storm did not get going: {}",
        s.output()
    );
    // In the middle of the storm: starts in flight, children being spawned.
    let remains = s.kill9();
    for c in clients {
        let _ = c.await;
    }
    // No sweep runs (no next agentd): every worker must have died with agentd by itself.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            remains.members().is_empty()
        })
        .await,
        "orphans after kill -9 of agentd: {:?}",
        remains.members()
    );
}
