//! Child processes the tests own, and what `/proc` says about processes.
//!
//! A [`Proc`] keeps what its child prints (echoed with `TEST_LOG=1`) and waits for its exit on a
//! pidfd, so a wait ends the moment the child does instead of at the next poll. A [`Session`] is
//! the set of processes a server started, grandchildren included: the server runs in a session of
//! its own, so whatever it leaves behind can be found and killed.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a child printed on stdout and stderr, interleaved by line.
#[derive(Default)]
pub struct Output {
    state: Mutex<OutputState>,
    changed: Condvar,
}

#[derive(Default)]
struct OutputState {
    text: String,
    /// Streams still being read; none once the child (and whatever shares its pipes) is gone.
    open: usize,
}

impl Output {
    fn lock(&self) -> MutexGuard<'_, OutputState> {
        // A reader thread that panicked mid-push leaves whole lines behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything printed so far.
    pub fn text(&self) -> String {
        self.lock().text.clone()
    }

    /// Blocks until `find` finds something in the output, every stream is closed, or `within`
    /// passes.
    pub fn wait_for<T>(
        &self,
        within: Duration,
        mut find: impl FnMut(&str) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + within;
        let mut state = self.lock();
        loop {
            if let Some(found) = find(&state.text) {
                return Some(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if state.open == 0 || left.is_zero() {
                return None;
            }
            state = match self.changed.wait_timeout(state, left) {
                Ok((s, _)) => s,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Blocks until every stream is closed or `within` passes; whether they all closed.
    pub fn wait_closed(&self, within: Duration) -> bool {
        self.wait_for(within, |_| None::<()>);
        self.lock().open == 0
    }

    /// Reads `stream` line by line on a thread of its own, prefixing echoed lines with `label`.
    fn follow(self: &Arc<Self>, stream: impl Read + Send + 'static, label: &'static str) {
        self.lock().open += 1;
        let out = self.clone();
        std::thread::spawn(move || {
            let echo = std::env::var_os("TEST_LOG").is_some();
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[{label}] {line}");
                }
                let mut s = out.lock();
                s.text.push_str(&line);
                s.text.push('\n');
                drop(s);
                out.changed.notify_all();
            }
            out.lock().open -= 1;
            out.changed.notify_all();
        });
    }
}

/// A child process with its output kept; killed and reaped on drop if it is still there.
pub struct Proc {
    child: Child,
    output: Arc<Output>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr kept (lines echoed as `[label] ...` with `TEST_LOG=1`).
    pub fn spawn(cmd: &mut Command, label: &'static str) -> std::io::Result<Proc> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let output = Arc::new(Output::default());
        if let Some(s) = child.stdout.take() {
            output.follow(s, label);
        }
        if let Some(s) = child.stderr.take() {
            output.follow(s, label);
        }
        Ok(Proc {
            child,
            output,
            status: None,
        })
    }

    /// Spawns `cmd` with its output thrown away: no reader threads, for timing a spawn.
    pub fn spawn_quiet(cmd: &mut Command) -> std::io::Result<Proc> {
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        Ok(Proc {
            child,
            output: Arc::new(Output::default()),
            status: None,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn output(&self) -> &Arc<Output> {
        &self.output
    }

    /// Sends `signal`, unless the child is already reaped (its pid may belong to another process).
    pub fn signal(&self, signal: i32) {
        if self.status.is_none() {
            // SAFETY: a plain syscall on our own unreaped child.
            unsafe { libc::kill(self.pid(), signal) };
        }
    }

    /// Waits up to `within` for the child to exit, without reaping it: while it is a zombie its
    /// pid (and so its session id) cannot be reused.
    pub fn exited_within(&self, within: Duration) -> bool {
        self.status.is_some() || exited_within(self.pid(), within)
    }

    /// Reaps the child once it has exited (waiting for it if need be); its status.
    pub fn reap(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.wait().ok();
        }
        self.status
    }

    /// The exit status once the child has exited (reaped then), or `None` after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        if self.exited_within(within) {
            self.reap()
        } else {
            None
        }
    }

    /// SIGTERM, then the exit status (or `None` after `within`).
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait_exit(within)
    }

    /// SIGKILL, then the exit status.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.signal(libc::SIGKILL);
        self.reap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `pid` (our child) exits within `within`, on its pidfd; the child is not reaped.
fn exited_within(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return exited_by_waitid(pid, deadline);
    }
    // SAFETY: the descriptor was just opened and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut p = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut p, 1, ms) } {
            n if n > 0 => return true,
            0 => return false,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return exited_by_waitid(pid, deadline),
        }
    }
}

/// The same without a pidfd (kernels before 5.3): `waitid` with `WNOWAIT`, every 5 ms.
fn exited_by_waitid(pid: i32, deadline: Instant) -> bool {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: a valid pointer to our siginfo_t.
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        // SAFETY: si_pid is set (to 0 when nothing has exited) after a successful waitid.
        if r != 0 || unsafe { info.si_pid() } != 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The fields of `/proc/<pid>/stat` after the command name; `[0]` is the state (field 3).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain anything, spaces included.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn state(f: &[String]) -> Option<&str> {
    f.first().map(String::as_str)
}

fn field(f: &[String], n: usize) -> Option<i64> {
    f.get(n - 3)?.parse().ok()
}

/// True while a process with this pid exists (zombies count as gone: they have exited).
pub fn pid_alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| !matches!(state(&f), Some("Z") | Some("X") | None))
}

/// True while a process with this pid exists at all, zombie or not.
pub fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Every pid on the machine.
fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Pids (zombies included) whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|p| stat_fields(*p).and_then(|f| field(&f, 5)) == Some(pgid as i64))
        .collect()
}

/// The arguments `pid` was started with (`/proc/<pid>/cmdline`).
pub fn cmdline(pid: i32) -> Vec<String> {
    nul_separated(&format!("/proc/{pid}/cmdline"))
}

/// The environment `pid` was started with, as `NAME=value` (`/proc/<pid>/environ`).
pub fn environ(pid: i32) -> Vec<String> {
    nul_separated(&format!("/proc/{pid}/environ"))
}

fn nul_separated(path: &str) -> Vec<String> {
    std::fs::read(path)
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `(process group, session)` of a process.
pub fn group_and_session(pid: i32) -> Option<(i32, i32)> {
    let f = stat_fields(pid)?;
    Some((field(&f, 5)? as i32, field(&f, 6)? as i32))
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The session a server leads: it and every process it started (they do not leave it).
#[derive(Debug, Clone, Copy)]
pub struct Session {
    id: i32,
    /// The leader's start time: tells the leader from a later process given the same pid.
    leader_start: i64,
}

impl Session {
    /// The session `pid` leads (it calls `setsid` as it starts).
    pub fn led_by(pid: i32) -> Session {
        Session {
            id: pid,
            leader_start: stat_fields(pid).and_then(|f| field(&f, 22)).unwrap_or(0),
        }
    }

    /// Live members; none if the id now names a session some other process leads.
    pub fn members(&self) -> Vec<i32> {
        if let Some(f) = stat_fields(self.id) {
            if field(&f, 22) != Some(self.leader_start) && field(&f, 6) == Some(self.id as i64) {
                return Vec::new();
            }
        }
        all_pids()
            .into_iter()
            .filter(|p| {
                stat_fields(*p).is_some_and(|f| {
                    field(&f, 6) == Some(self.id as i64)
                        && !matches!(state(&f), Some("Z") | Some("X"))
                })
            })
            .collect()
    }

    /// Kills every member, again while any is left (one may fork as it dies), up to `within`.
    pub fn kill_all(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = self.members();
            if left.is_empty() || Instant::now() >= deadline {
                return;
            }
            for p in left {
                // SAFETY: a plain syscall on pids just read from /proc.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
