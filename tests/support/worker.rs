//! An `agentd worker --property FILE` the test runs itself (not through `/start`), with a notify
//! socket of its own to hear `READY=1` and `STOPPING=1` on.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::app::agentd_bin;
use super::process::Proc;

/// How to run a worker.
pub struct WorkerBuilder {
    bin: PathBuf,
    property: Value,
    env: Vec<(String, String)>,
    quiet: bool,
}

impl WorkerBuilder {
    /// Runs this binary instead of [`agentd_bin`].
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.bin = path.into();
        self
    }

    /// Sets an environment variable (the worker starts from an empty environment plus `PATH`,
    /// `RUST_LOG=info` and its `NOTIFY_SOCKET`).
    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.push((k.to_string(), v.into()));
        self
    }

    /// Sets several environment variables.
    pub fn envs(self, vars: &[(&str, &str)]) -> Self {
        vars.iter().fold(self, |b, (k, v)| b.env(k, *v))
    }

    /// Throws the worker's output away instead of keeping it: nothing but the spawn is timed.
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// Writes the property file, binds the notify socket and spawns the worker.
    pub fn spawn(self) -> WorkerProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let prop = dir.path().join("property.json");
        let doc = serde_json::to_vec_pretty(&self.property).expect("JSON");
        std::fs::write(&prop, doc).expect("property file");
        let sock = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&sock).expect("notify socket");
        let mut cmd = Command::new(&self.bin);
        cmd.args(["worker", "--property"])
            .arg(&prop)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("NOTIFY_SOCKET", &sock)
            .envs(self.env)
            .stdin(Stdio::null());
        let spawned_at = Instant::now();
        let proc = if self.quiet {
            Proc::spawn_quiet(&mut cmd)
        } else {
            Proc::spawn(&mut cmd, "worker")
        };
        WorkerProcess {
            proc: proc.expect("spawn agentd worker"),
            notify,
            spawned_at,
            _dir: dir,
        }
    }
}

/// A running worker; killed on drop.
pub struct WorkerProcess {
    proc: Proc,
    notify: UnixDatagram,
    /// Just before the spawn.
    pub spawned_at: Instant,
    _dir: tempfile::TempDir,
}

impl WorkerProcess {
    /// A worker of this `property.json` document.
    pub fn builder(property: Value) -> WorkerBuilder {
        WorkerBuilder {
            bin: agentd_bin(),
            property,
            env: Vec::new(),
            quiet: false,
        }
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// The next notify datagram, if one comes within `within`.
    pub fn next_state(&self, within: Duration) -> Option<String> {
        self.notify.set_read_timeout(Some(within)).ok()?;
        let mut buf = [0u8; 4096];
        let n = self.notify.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Asserts that the first notification, within `within`, is `READY=1` (sent once the
    /// worker has reached the API).
    pub fn ready(&self, within: Duration) {
        let s = self.next_state(within);
        assert_eq!(s.as_deref(), Some("READY=1"), "output:\n{}", self.output());
    }

    /// Waits for a notification with a `READY=1` line; whether one came within `within`.
    pub fn wait_ready(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while let Some(state) = self.next_state(deadline.saturating_duration_since(Instant::now()))
        {
            if state.lines().any(|l| l == "READY=1") {
                return true;
            }
        }
        false
    }

    /// Everything the worker printed so far ("" when quiet).
    pub fn output(&self) -> String {
        self.proc.output().text()
    }

    /// Blocks until the worker has printed `needle`, up to `within`.
    pub fn wait_output(&self, needle: &str, within: Duration) -> bool {
        self.proc
            .output()
            .wait_for(within, |t| t.contains(needle).then_some(()))
            .is_some()
    }

    /// SIGTERM; the exit status and how long the exit took, or `None` after `within`.
    pub fn terminate(&mut self, within: Duration) -> Option<(ExitStatus, Duration)> {
        let t = Instant::now();
        self.proc.terminate(within).map(|st| (st, t.elapsed()))
    }

    /// Waits, sending nothing, for the worker to exit; its status, or `None` after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(within)
    }
}
