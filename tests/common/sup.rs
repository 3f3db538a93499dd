//! Helpers for the supervisor tests: graphs that run fixture scripts, and ways to look at what
//! a worker left behind.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::{fixture, Reply, TestServer};

/// A TEN (old layout) graph file whose worker is `command` (fixture name first, then its args),
/// with more `runtime` keys from `runtime`.
pub fn graph(command: &[&str], runtime: Value) -> Value {
    let mut cmd: Vec<Value> = vec![fixture(command[0]).to_string_lossy().into_owned().into()];
    cmd.extend(command[1..].iter().map(|a| Value::from(*a)));
    let mut rt = json!({ "command": cmd });
    if let (Some(rt), Some(extra)) = (rt.as_object_mut(), runtime.as_object()) {
        rt.extend(extra.clone());
    }
    json!({
        "auto_start": false,
        "nodes": [
            {"type": "extension", "name": "main", "addon": "custom", "property": {"greeting": "hi"}}
        ],
        "connections": [],
        "runtime": rt
    })
}

/// `POST /start` for `channel` on `graph`, with more body fields from `extra`.
pub async fn start(s: &TestServer, channel: &str, graph: &str, extra: Value) -> Reply {
    let mut body = json!({"channel_name": channel, "graph_name": graph, "request_id": "r1"});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    s.post("/start", body).await
}

pub async fn stop(s: &TestServer, channel: &str) -> Reply {
    s.post("/stop", json!({"channel_name": channel})).await
}

pub async fn ping(s: &TestServer, channel: &str) -> Reply {
    s.post("/ping", json!({"channel_name": channel})).await
}

/// The `/list` entries.
pub async fn list(s: &TestServer) -> Vec<Value> {
    s.get("/list").await.body["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The pid from a successful `/start`.
pub fn pid(r: &Reply) -> i32 {
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"]["pid"].as_i64().expect("pid") as i32
}

/// The log file of `channel`.
pub fn log_path(s: &TestServer, channel: &str) -> PathBuf {
    agentd::supervisor::logs::log_file(&s.root().join("logs"), channel)
}

/// The log of `channel` so far ("" when there is none).
pub fn log(s: &TestServer, channel: &str) -> String {
    std::fs::read_to_string(log_path(s, channel)).unwrap_or_default()
}

/// Waits until the log of `channel` contains `needle`.
pub async fn wait_log(s: &TestServer, channel: &str, needle: &str, within: Duration) -> bool {
    super::wait_until(within, || async { log(s, channel).contains(needle) }).await
}

/// Per-worker property files now present.
pub fn run_files(s: &TestServer) -> Vec<PathBuf> {
    std::fs::read_dir(s.root().join("data").join("run"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Pids (zombies included) whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|st| {
                    st.rsplit(')')
                        .next()?
                        .split_whitespace()
                        .nth(2)?
                        .parse::<i32>()
                        .ok()
                })
                == Some(pgid)
        })
        .collect()
}

/// Numbers after `prefix ` on the lines of `text` that start with it.
pub fn numbers_after(text: &str, prefix: &str) -> Vec<i32> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
        .collect()
}

/// True when `channel` is no longer in `/list`.
pub async fn get_gone(s: &TestServer, channel: &str) -> bool {
    !list(s).await.iter().any(|e| e["channel_name"] == channel)
}

/// The `data` of `GET /health`.
pub async fn health(s: &TestServer) -> Value {
    s.get("/health").await.body["data"].clone()
}

/// The `/list` entry of `channel`.
pub async fn entry(s: &TestServer, channel: &str) -> Option<Value> {
    list(s)
        .await
        .into_iter()
        .find(|e| e["channel_name"] == channel)
}

/// `(process group, session)` of a live process.
pub fn group_and_session(pid: i32) -> Option<(i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}
