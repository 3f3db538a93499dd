//! [`TestApp`]: the real `agentd serve` on port 0 in a temp dir of its own (its own `DATA_DIR` and
//! SQLite file, or its own PostgreSQL schema: see [`super::database`]), the way to build one, and
//! plain HTTP to it.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::database::TestSchema;
use super::process::{Output, Proc, Session};

/// How long a server may take to print its address.
const BOOT: Duration = Duration::from_secs(20);
/// How long a dropped server may take to stop its workers before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Every request's time limit (long polls and streams included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The agentd binary Cargo built for this target (the release build under `cargo bench`).
pub fn agentd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agentd"))
}

/// The repository root (bundled graphs, fixtures).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests").join("fixtures").join(name)
}

/// How to boot a [`TestApp`].
pub struct Builder {
    bin: PathBuf,
    /// Overrides of the server's environment; `None` removes a default.
    env: BTreeMap<String, Option<String>>,
    property_json: Option<Value>,
    graphs: Vec<(String, Value)>,
    bundled: bool,
    dir: Option<tempfile::TempDir>,
    inherited: Vec<Session>,
    key: Option<String>,
    /// The PostgreSQL schema to run on (shared with another server, or a killed one's).
    schema: Option<TestSchema>,
}

impl Builder {
    /// Runs on this PostgreSQL schema (another node's, to share its database).
    pub fn schema(mut self, schema: &TestSchema) -> Self {
        self.schema = Some(schema.clone());
        self
    }

    /// Runs this binary instead of [`agentd_bin`].
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.bin = path.into();
        self
    }

    /// Sets an environment variable for the server.
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.insert(k.to_string(), Some(v.into()));
        self
    }

    /// Sets several environment variables.
    pub fn envs(self, vars: &[(&str, &str)]) -> Self {
        vars.iter().fold(self, |b, (k, v)| b.env(k, *v))
    }

    /// Sets `AGENTD_API_KEY` and has every helper request of the [`TestApp`] carry it (as
    /// `Authorization: Bearer`); requests built on `client` directly do not.
    pub fn client_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_string());
        self.env("AGENTD_API_KEY", key)
    }

    /// Leaves out one of the test defaults (such as `HTTP_WORKERS`), so agentd's own applies.
    pub fn unset(mut self, k: &str) -> Self {
        self.env.insert(k.to_string(), None);
        self
    }

    /// Dispatch timings short enough for tests, and no write rate limit to speak of.
    pub fn fast_dispatch(self) -> Self {
        self.envs(&[
            ("DISPATCH_BATCH_DEBOUNCE_MS", "100"),
            ("DISPATCH_TYPING_GRACE_MS", "600"),
            ("DISPATCH_LEASE_MS", "1000"),
            ("DISPATCH_CLAIM_WAIT_MS", "0"),
            ("DISPATCH_RETRY_BASE_MS", "100"),
            ("WRITE_RATE_LIMIT_MAX", "100000"),
        ])
    }

    /// Points the bundled `assistant` graph (an `openai_chat` agent) at an OpenAI-compatible
    /// server at `base_url`, with this key and model.
    pub fn openai(self, base_url: &str, key: &str, model: &str) -> Self {
        self.env("OPENAI_API_KEY", key)
            .env("OPENAI_BASE_URL", base_url)
            .env("OPENAI_MODEL", model)
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

    /// Uses the repository's `property.json` and `graphs/` (copied into the temp dir).
    pub fn bundled(mut self) -> Self {
        self.bundled = true;
        self
    }

    /// Boots in this temp dir (its files as they are) instead of a new one.
    pub fn in_dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// Boots on what a killed server left: its temp dir, and its session, whose leftovers this
    /// server clears when it is dropped.
    pub fn after(mut self, remains: Remains) -> Self {
        self.dir = Some(remains.dir);
        self.inherited.extend(remains.sessions);
        self.schema = self.schema.or(remains.schema);
        self
    }

    /// Starts the server and waits until it listens; panics with its output if it does not.
    pub fn start(self) -> TestApp {
        self.try_start()
            .unwrap_or_else(|out| panic!("agentd did not start:\n{out}"))
    }

    /// Starts the server; on failure, its exit status and everything it printed.
    pub fn try_start(self) -> Result<TestApp, String> {
        let dir = match self.dir {
            Some(d) => d,
            None => tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?,
        };
        let root = dir.path().to_path_buf();
        let graphs_dir = root.join("graphs");
        let schema = match self.schema {
            Some(s) => Some(s),
            None => TestSchema::create().transpose()?,
        };
        lay_out(
            &root,
            self.bundled,
            self.property_json.as_ref(),
            &self.graphs,
        )
        .map_err(|e| format!("writing the server's files in {}: {e}", root.display()))?;

        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .current_dir(&root)
            .env_clear()
            .stdin(Stdio::null());
        let defaults = [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("HOME", std::env::var("HOME").unwrap_or_default()),
            (
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            ),
            ("SERVER_HOST", "127.0.0.1".into()),
            ("SERVER_PORT", "0".into()),
            ("DATA_DIR", path_str(&root.join("data"))),
            ("LOG_PATH", path_str(&root.join("logs"))),
            ("PROPERTY_JSON", path_str(&root.join("property.json"))),
            ("GRAPHS_DIR", path_str(&graphs_dir)),
            ("HTTP_WORKERS", "2".into()),
        ];
        for (k, v) in defaults {
            cmd.env(k, v);
        }
        if let Some(s) = &schema {
            cmd.env("DATABASE_URL", s.url());
        }
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        // A session of its own: every process it starts stays in it, so none can be missed when
        // the server is dropped (workers have process groups of their own, not sessions).
        // SAFETY: setsid is async-signal-safe and touches nothing of the parent's.
        unsafe {
            cmd.pre_exec(|| match libc::setsid() {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            });
        }
        let mut proc = Proc::spawn(&mut cmd, "agentd")
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let session = Session::led_by(proc.pid());
        let listening = proc.output().wait_for(BOOT, |text| {
            text.lines()
                .find_map(|l| l.strip_prefix("agentd listening on "))
                .map(|u| u.trim().to_string())
        });
        let Some(base_url) = listening else {
            let status = proc.kill();
            session.kill_all(Duration::from_secs(5));
            proc.output().wait_closed(Duration::from_secs(2));
            return Err(format!("exit: {status:?}\n{}", proc.output().text()));
        };
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(TestApp {
            proc,
            session: Some(session),
            inherited: self.inherited,
            base_url,
            root,
            dir: Some(dir),
            client,
            key: self.key,
            schema,
        })
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Writes the server's `property.json` and `graphs/` under `root`.
fn lay_out(
    root: &Path,
    bundled: bool,
    property_json: Option<&Value>,
    graphs: &[(String, Value)],
) -> std::io::Result<()> {
    let graphs_dir = root.join("graphs");
    std::fs::create_dir_all(&graphs_dir)?;
    if bundled {
        std::fs::copy(
            repo_root().join("property.json"),
            root.join("property.json"),
        )?;
        for e in std::fs::read_dir(repo_root().join("graphs"))? {
            let p = e?.path();
            if let Some(name) = p.file_name() {
                std::fs::copy(&p, graphs_dir.join(name))?;
            }
        }
    }
    if let Some(doc) = property_json {
        std::fs::write(root.join("property.json"), serde_json::to_vec_pretty(doc)?)?;
    }
    for (name, g) in graphs {
        std::fs::write(
            graphs_dir.join(format!("{name}.json")),
            serde_json::to_vec_pretty(g)?,
        )?;
    }
    Ok(())
}

/// What `kill -9` of a server leaves: its temp dir, and the sessions whose leftovers the next
/// server (see [`Builder::after`]) clears when it is dropped.
pub struct Remains {
    dir: tempfile::TempDir,
    sessions: Vec<Session>,
    schema: Option<TestSchema>,
}

impl Remains {
    /// Live processes (zombies excluded) of the killed servers' sessions.
    pub fn members(&self) -> Vec<i32> {
        self.sessions.iter().flat_map(Session::members).collect()
    }
}

/// A running agentd. Dropping it stops it (SIGTERM, then SIGKILL after a grace) and kills
/// whatever it left behind.
pub struct TestApp {
    proc: Proc,
    /// `None` once handed on by [`TestApp::kill9`].
    session: Option<Session>,
    /// Sessions of killed servers this one was started after.
    inherited: Vec<Session>,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    root: PathBuf,
    /// `None` once handed on by [`TestApp::kill9`].
    dir: Option<tempfile::TempDir>,
    pub client: reqwest::Client,
    /// Sent by [`TestApp::request`] (see [`Builder::client_key`]).
    key: Option<String>,
    /// Its PostgreSQL schema (dropped after the server, as the last field to go).
    schema: Option<TestSchema>,
}

/// An HTTP answer: status, headers, and the body as JSON (`Value::Null` when empty or not JSON)
/// and as text.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// Reads the whole of `res`.
    pub async fn read(res: reqwest::Response) -> Reply {
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

    /// A header's value ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

impl TestApp {
    /// A server with the test defaults: no graphs, info logs, 2 HTTP workers.
    pub fn builder() -> Builder {
        Builder {
            bin: agentd_bin(),
            env: BTreeMap::new(),
            property_json: None,
            graphs: Vec::new(),
            bundled: false,
            dir: None,
            inherited: Vec::new(),
            key: None,
            schema: None,
        }
    }

    /// The bundled graphs with [`Builder::fast_dispatch`] timings and `extra` settings.
    pub fn with_fast_dispatch(extra: &[(&str, &str)]) -> TestApp {
        TestApp::builder()
            .bundled()
            .fast_dispatch()
            .envs(extra)
            .start()
    }

    /// Everything the server printed so far.
    pub fn output(&self) -> String {
        self.proc.output().text()
    }

    /// Waits until the server has printed `needle`.
    pub async fn wait_output(&self, needle: &str, within: Duration) -> bool {
        let out: Arc<Output> = self.proc.output().clone();
        let needle = needle.to_string();
        tokio::task::spawn_blocking(move || {
            out.wait_for(within, |t| t.contains(&needle).then_some(()))
                .is_some()
        })
        .await
        .unwrap_or(false)
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// Every live process the server started, grandchildren included (not the server itself).
    pub fn spawned(&self) -> Vec<i32> {
        let server = self.pid();
        self.session
            .iter()
            .flat_map(Session::members)
            .filter(|p| *p != server)
            .collect()
    }

    /// The PostgreSQL schema it runs on (`None` on SQLite).
    pub fn schema(&self) -> Option<&TestSchema> {
        self.schema.as_ref()
    }

    /// The server's temp dir (its `property.json`, `graphs/`, `data/` and `logs/`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// A request to `path`, to finish and [`send`](Self::send) (for headers of its own).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, self.url(path));
        match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::PATCH, path).json(&body))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::PUT, path).json(&body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// POST with a raw body and content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        self.send(
            self.request(reqwest::Method::POST, path)
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    /// Sends `req` and reads the whole answer; panics if the server cannot be reached.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}"));
        Reply::read(res).await
    }

    /// Sends SIGTERM; the exit status, or `None` if it did not exit within `within`.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        self.proc.terminate(within)
    }

    /// Waits, sending nothing, for the server to exit; its status, or `None` after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(within)
    }

    /// `kill -9` of the server (reaped at once, as an init would); what it left, for the next
    /// server to boot on with [`Builder::after`]. Its workers' leftovers are not touched.
    pub fn kill9(mut self) -> Remains {
        self.proc.kill();
        let mut sessions = std::mem::take(&mut self.inherited);
        sessions.extend(self.session.take());
        let dir = match self.dir.take() {
            Some(d) => d,
            None => unreachable!("the temp dir is only taken here, by value"),
        };
        Remains {
            dir,
            sessions,
            schema: self.schema.take(),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.proc.signal(libc::SIGTERM);
        if !self.proc.exited_within(STOP_GRACE) {
            self.proc.signal(libc::SIGKILL);
            self.proc.exited_within(STOP_GRACE);
        }
        // Before the reap: until then the server's pid, its session id, cannot be reused.
        for s in self.session.iter().chain(&self.inherited) {
            s.kill_all(Duration::from_secs(5));
        }
        self.proc.reap();
    }
}
