//! Reaping the processes agentd inherits as a child subreaper: a worker's descendants whose
//! parents died before them (a `setsid()` one included) become agentd's children, and their
//! exit statuses are collected here so that none stays a zombie.
//!
//! Worker leaders are never reaped here: each one's status belongs to its [`super::child::Child`].
//! They are registered while their spawn is under way ([`spawning`]) and forgotten once their
//! `Child` has been waited for ([`forget`]); the same lock covers the spawn and every reaping
//! pass, so a leader is never mistaken for an orphan, nor is the status of a failed exec (which
//! the spawn collects itself) taken from it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{sleep_until, Instant};

/// Pids of live worker leaders, with a count in case a pid comes back before it is forgotten.
static LEADERS: Mutex<Option<HashMap<i32, u32>>> = Mutex::new(None);

fn leaders() -> MutexGuard<'static, Option<HashMap<i32, u32>>> {
    LEADERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `fork` (which spawns a worker leader and returns its pid) so that no reaping pass runs
/// meanwhile, and registers the pid.
pub(super) fn spawning<T>(fork: impl FnOnce() -> std::io::Result<(T, u32)>) -> std::io::Result<T> {
    let mut guard = leaders();
    let (out, pid) = fork()?;
    *guard
        .get_or_insert_with(HashMap::new)
        .entry(pid as i32)
        .or_insert(0) += 1;
    Ok(out)
}

/// The leader `pid` has been reaped through its `Child`.
pub(super) fn forget(pid: u32) {
    let mut guard = leaders();
    if let Some(map) = guard.as_mut() {
        if let Some(n) = map.get_mut(&(pid as i32)) {
            *n -= 1;
            if *n == 0 {
                map.remove(&(pid as i32));
            }
        }
    }
}

/// Reaps every child of agentd that has exited and is not a worker leader.
pub(super) fn orphans() {
    let guard = leaders();
    let empty = HashMap::new();
    let leaders = guard.as_ref().unwrap_or(&empty);
    for pid in children() {
        if leaders.contains_key(&pid) {
            continue;
        }
        loop {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Err(Errno::EINTR) => continue,
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                    crate::observe::orphan_reaped()
                }
                _ => {}
            }
            break;
        }
    }
}

/// Shortest time between two background reaping passes.
const PASS_EVERY: Duration = Duration::from_millis(10);

/// Reaps orphans whenever a child of agentd changes state; runs for the life of the supervisor.
///
/// A pass reads every thread's list of children, so a burst of exits (200 workers reaped at
/// once) is not a pass per SIGCHLD: one pass at most every [`PASS_EVERY`], on a blocking thread,
/// covers every exit signalled before it began. A stop reaps the orphans of its own worker
/// itself, without waiting for this.
pub(super) async fn run() {
    let mut exits = match signal(SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGCHLD ({e}): orphaned worker descendants are reaped only when their worker stops");
            return;
        }
    };
    while exits.recv().await.is_some() {
        let next = Instant::now() + PASS_EVERY;
        if tokio::task::spawn_blocking(orphans).await.is_err() {
            orphans();
        }
        sleep_until(next).await;
    }
}

/// True when `pid` is a zombie (exited, not yet reaped by anyone).
pub(super) fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st == "Z"))
        })
        .unwrap_or(false)
}

/// agentd's children: from every thread's `children` list, or by scanning `/proc` for processes
/// whose parent is agentd where the kernel has no such lists.
fn children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let mut listed = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.filter_map(Result::ok) {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                listed = true;
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    if listed {
        return out;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| parent_of(*pid) == Some(me))
        .collect()
}

fn parent_of(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}
