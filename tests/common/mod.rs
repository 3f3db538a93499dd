//! Test harness: boots the real `agentd` binary on port 0 in its own temp dir.
//!
//! Every test file does `mod common;` and uses [`TestServer`]. The server's stdout and stderr are
//! collected (print them with `TEST_LOG=1`); dropping the server kills it, and its workers die
//! with it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of the agentd binary under test.
pub fn agentd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_agentd")
}

/// The repository root (for bundled graphs and test fixtures).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture script under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests").join("fixtures").join(name)
}

/// How to boot a server.
#[derive(Default)]
pub struct Builder {
    env: HashMap<String, String>,
    property_json: Option<Value>,
    graphs: Vec<(String, Value)>,
    bundled: bool,
    dir: Option<tempfile::TempDir>,
}

impl Builder {
    /// Sets an environment variable for the server.
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.insert(k.to_string(), v.into());
        self
    }

    /// Writes this document as the server's `property.json`.
    pub fn property_json(mut self, doc: Value) -> Self {
        self.property_json = Some(doc);
        self
    }

    /// Writes `graphs/<name>.json`.
    pub fn graph_file(mut self, name: &str, graph: Value) -> Self {
        self.graphs.push((name.to_string(), graph));
        self
    }

    /// Uses the repository's bundled `property.json` and `graphs/` (copied into the temp dir).
    pub fn bundled(mut self) -> Self {
        self.bundled = true;
        self
    }

    /// Reuses a temp dir (for restart tests: same DATA_DIR and files).
    pub fn in_dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// Starts the server and waits until it listens.
    pub fn start(self) -> TestServer {
        self.try_start()
            .unwrap_or_else(|out| panic!("agentd did not start:\n{out}"))
    }

    /// Starts the server; on failure returns everything it printed.
    pub fn try_start(self) -> Result<TestServer, String> {
        let dir = match self.dir {
            Some(d) => d,
            None => tempfile::tempdir().expect("temp dir"),
        };
        let root = dir.path().to_path_buf();
        let graphs_dir = root.join("graphs");
        std::fs::create_dir_all(&graphs_dir).unwrap();
        if self.bundled {
            std::fs::copy(
                repo_root().join("property.json"),
                root.join("property.json"),
            )
            .unwrap();
            for e in std::fs::read_dir(repo_root().join("graphs")).unwrap() {
                let p = e.unwrap().path();
                std::fs::copy(&p, graphs_dir.join(p.file_name().unwrap())).unwrap();
            }
        }
        if let Some(doc) = &self.property_json {
            write_json(&root.join("property.json"), doc);
        }
        for (name, g) in &self.graphs {
            write_json(&graphs_dir.join(format!("{name}.json")), g);
        }

        let mut cmd = Command::new(agentd_bin());
        cmd.arg("serve")
            .current_dir(&root)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("SERVER_HOST", "127.0.0.1")
            .env("SERVER_PORT", "0")
            .env("DATA_DIR", root.join("data"))
            .env("LOG_PATH", root.join("logs"))
            .env("PROPERTY_JSON", root.join("property.json"))
            .env("GRAPHS_DIR", &graphs_dir)
            .env("HTTP_WORKERS", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn agentd");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = output.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if std::env::var_os("TEST_LOG").is_some() {
                        eprintln!("[agentd] {line}");
                    }
                    if let Some(url) = line.strip_prefix("agentd listening on ") {
                        let _ = tx.send(url.trim().to_string());
                    }
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        drop(tx);
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => Ok(TestServer {
                child: Some(child),
                url,
                dir,
                output,
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap(),
            }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                std::thread::sleep(Duration::from_millis(100));
                let out = output.lock().unwrap().clone();
                Err(format!("exit: {status:?}\n{out}"))
            }
        }
    }
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

/// A running agentd.
pub struct TestServer {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub dir: tempfile::TempDir,
    output: Arc<Mutex<String>>,
    pub client: reqwest::Client,
}

/// An HTTP answer: status, headers and JSON body (`Value::Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl TestServer {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Everything the server printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.client.post(self.url(path)).json(&body))
            .await
    }

    /// POST with a raw body and content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        self.send(
            self.client
                .post(self.url(path))
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let res = req.send().await.expect("request failed");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    /// Sends SIGTERM and waits for the exit status (up to `within`).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Waits (without sending anything) for the server to exit; its status, or `None` after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// `kill -9` the server and reap it; returns the temp dir so a new server can reuse it.
    pub fn kill9(mut self) -> tempfile::TempDir {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Polls `cond` every 10 ms until it is true or `within` passes; returns whether it became true.
pub async fn wait_until<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// True while a process with this pid exists (zombies count as gone: they have exited).
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state letter follows the command name in parentheses.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// True while a process with this pid exists at all, zombie or not.
pub fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Helpers for the supervisor tests.
pub mod sup;
