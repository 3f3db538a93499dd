//! The supervisor endpoints (`/start`, `/stop`, `/ping`, `/list`, `/graphs`, `/health`), graphs
//! that run fixture scripts, and what workers leave on disk (logs, per-worker files).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::app::{fixture, Reply, TestApp};
use super::wait::wait_until;

/// A TEN (old layout) graph whose worker is `command` (a fixture script, then its arguments),
/// with more `runtime` keys from `runtime`.
pub fn graph(command: &[&str], runtime: Value) -> Value {
    let mut cmd: Vec<Value> = vec![fixture(command[0]).to_string_lossy().into_owned().into()];
    cmd.extend(command[1..].iter().map(|a| Value::from(*a)));
    let mut rt = json!({ "command": cmd });
    merge(&mut rt, &runtime);
    json!({
        "auto_start": false,
        "nodes": [
            {"type": "extension", "name": "main", "addon": "custom", "property": {"greeting": "hi"}}
        ],
        "connections": [],
        "runtime": rt
    })
}

/// Adds the fields of `extra` (an object) to `target` (an object).
fn merge(target: &mut Value, extra: &Value) {
    if let (Some(t), Some(e)) = (target.as_object_mut(), extra.as_object()) {
        t.extend(e.clone());
    }
}

/// A worker `/start` started.
#[derive(Debug, Clone)]
pub struct Started {
    pub pid: i32,
    /// The whole `data` of the answer (`chat_id`, `worker_id`, `timeout`, ...).
    pub data: Value,
}

impl Started {
    /// The id of the channel's chat.
    pub fn chat(&self) -> String {
        match self.data["chat_id"].as_str() {
            Some(c) => c.to_string(),
            None => panic!("/start gave no chat_id: {}", self.data),
        }
    }
}

/// What a successful `/start` answered; panics on any other answer.
pub fn started(r: &Reply) -> Started {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["code"], "0", "{}", r.text);
    match r.body["data"]["pid"].as_i64() {
        Some(pid) => Started {
            pid: pid as i32,
            data: r.body["data"].clone(),
        },
        None => panic!("/start gave no pid: {}", r.text),
    }
}

/// Numbers after `prefix ` on the lines of `text` that start with it.
pub fn numbers_after(text: &str, prefix: &str) -> Vec<i32> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
        .collect()
}

impl TestApp {
    /// `POST /start` of `graph` on `channel`, with more body fields from `extra`.
    pub async fn start(&self, channel: &str, graph: &str, extra: Value) -> Reply {
        let mut body = json!({"channel_name": channel, "graph_name": graph, "request_id": "r1"});
        merge(&mut body, &extra);
        self.post("/start", body).await
    }

    /// `POST /start` that must succeed (panics with the server's output if not).
    pub async fn start_ok(&self, channel: &str, graph: &str, extra: Value) -> Started {
        let r = self.start(channel, graph, extra).await;
        if r.status != 200 {
            panic!("start {graph}: {}\n{}", r.text, self.output());
        }
        started(&r)
    }

    /// `POST /stop`.
    pub async fn stop(&self, channel: &str) -> Reply {
        self.post("/stop", json!({"channel_name": channel})).await
    }

    /// `POST /stop` that must succeed; its answer.
    pub async fn stop_ok(&self, channel: &str) -> Value {
        let r = self.stop(channel).await;
        assert_eq!(r.body["code"], "0", "stop: {}", r.text);
        r.body
    }

    /// `POST /ping`.
    pub async fn ping(&self, channel: &str) -> Reply {
        self.post("/ping", json!({"channel_name": channel})).await
    }

    /// The entries of `GET /list`.
    pub async fn list(&self) -> Vec<Value> {
        self.get("/list").await.body["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The `/list` entry of `channel`.
    pub async fn worker(&self, channel: &str) -> Option<Value> {
        self.list()
            .await
            .into_iter()
            .find(|e| e["channel_name"] == channel)
    }

    /// True when `channel` is no longer in `/list`.
    pub async fn gone(&self, channel: &str) -> bool {
        self.worker(channel).await.is_none()
    }

    /// `GET /graphs`.
    pub async fn graphs(&self) -> Reply {
        self.get("/graphs").await
    }

    /// `GET /health`.
    pub async fn health(&self) -> Reply {
        self.get("/health").await
    }

    /// The log file of `channel`.
    pub fn log_path(&self, channel: &str) -> PathBuf {
        agentd::supervisor::logs::log_file(&self.root().join("logs"), channel)
    }

    /// The log of the prewarmed workers of `graph` so far ("" when there is none).
    pub fn prewarm_log(&self, graph: &str) -> String {
        let path = agentd::supervisor::logs::prewarm_log_file(&self.root().join("logs"), graph);
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// The log of `channel` so far ("" when there is none).
    pub fn log(&self, channel: &str) -> String {
        std::fs::read_to_string(self.log_path(channel)).unwrap_or_default()
    }

    /// Waits until the log of `channel` contains `needle`.
    pub async fn wait_log(&self, channel: &str, needle: &str, within: Duration) -> bool {
        wait_until(within, || async { self.log(channel).contains(needle) }).await
    }

    /// The per-worker property files now present.
    pub fn run_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root().join("data").join("run"))
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}
