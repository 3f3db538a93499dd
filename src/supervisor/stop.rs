//! Stopping a worker and everything it started: SIGTERM, the grace period, SIGKILL, and reaping
//! every process so that nothing (and no zombie) is left behind.
//!
//! What holds a worker is its [`Hold`]: its process group, and its cgroup when workers run in
//! cgroups ([`super::cgroup`]). The leader is always reaped through its [`Child`] first;
//! only then is the rest reaped here. With a cgroup, "gone" means the cgroup is empty (a
//! descendant that called `setsid()` is in it too), and the orphans agentd inherits are reaped
//! by [`super::reap`]. Without one, members are reaped by waiting on the group (`waitpid(-pgid)`)
//! whenever a SIGCHLD arrives, until the kernel answers `ECHILD`: no child of agentd is left in
//! the group. Either way they are agentd's children because agentd is a child subreaper (see
//! [`super::Supervisor::new`]).

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{sleep_until, Instant};

use super::cgroup::Cgroup;
use super::child::Child;
use super::reap;

/// Longest wait for killed members to be reaped.
const REAP_WAIT: Duration = Duration::from_secs(2);
/// A grace longer than this is cut to it rather than overflowing the clock.
const MAX_GRACE: Duration = Duration::from_secs(86_400 * 365);

/// How a worker ended.
#[derive(Debug, Clone, Serialize)]
pub struct StopOutcome {
    /// `exited` (on its own, or after SIGTERM with an exit code), `terminated` (by SIGTERM or
    /// another signal), `killed` (SIGKILL after the grace period), or `not_started`.
    pub how: &'static str,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Time from the stop request until the whole group was gone.
    pub took_ms: u64,
}

impl StopOutcome {
    pub fn from_status(how: &'static str, st: Option<ExitStatus>, took: Duration) -> StopOutcome {
        StopOutcome {
            how,
            exit_code: st.and_then(|s| s.code()),
            signal: st.and_then(|s| s.signal()),
            took_ms: took.as_millis() as u64,
        }
    }
}

/// What holds one worker process and all it starts.
#[derive(Debug)]
pub struct Hold {
    /// The leader's pid, which is also its process group id.
    pub pgid: i32,
    /// `None` where workers run in their process group only.
    pub cgroup: Option<Cgroup>,
}

impl Hold {
    /// Sends `sig` to the group and to every process of the cgroup; the pids of the cgroup.
    fn signal(&self, sig: Signal) -> Vec<i32> {
        kill_group(self.pgid, sig);
        self.cgroup
            .as_ref()
            .map(|c| c.signal(sig))
            .unwrap_or_default()
    }

    /// True while any process of the worker is left.
    fn alive(&self) -> bool {
        group_exists(self.pgid) || self.cgroup.as_ref().is_some_and(Cgroup::populated)
    }

    /// Removes the worker's cgroup (if it has one), which must be empty: after [`terminate`].
    pub fn remove_cgroup(&self) {
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.remove() {
                tracing::warn!(cgroup = %cg.dir().display(), "cannot remove a worker's cgroup: {e}");
            }
        }
    }

    /// SIGKILL to everything, without waiting.
    pub fn kill_now(&self) {
        kill_group(self.pgid, Signal::SIGKILL);
        if let Some(c) = &self.cgroup {
            c.kill_now();
        }
    }
}

/// Sends `sig` to the process group `pgid`; false when the group no longer exists.
pub fn kill_group(pgid: i32, sig: Signal) -> bool {
    // 0 would be agentd's own group and 1 init's.
    if pgid <= 1 {
        return false;
    }
    killpg(Pid::from_raw(pgid), sig).is_ok()
}

fn group_exists(pgid: i32) -> bool {
    pgid > 1 && killpg(Pid::from_raw(pgid), None).is_ok()
}

/// Describes an exit status for logs and errors.
pub fn describe(st: &ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => st.to_string(),
    }
}

/// Stops a running worker: SIGTERM, up to `grace` for every process to go, then SIGKILL; its
/// cgroup is removed.
pub async fn stop(child: &mut Child, hold: &Hold, grace: Duration) -> StopOutcome {
    let out = terminate(child, hold, grace).await;
    hold.remove_cgroup();
    out
}

/// [`stop`], except that the worker's cgroup, empty by now, is left for the caller to remove
/// ([`Hold::remove_cgroup`]): removing a cgroup costs more than the rest of a stop, so a caller
/// can tell that the worker is gone first.
pub async fn terminate(child: &mut Child, hold: &Hold, grace: Duration) -> StopOutcome {
    let began = Instant::now();
    let seen = hold.signal(Signal::SIGTERM);
    let deadline = began + grace.min(MAX_GRACE);
    let mut status = tokio::select! {
        st = child.wait() => st.ok(),
        _ = sleep_until(deadline) => None,
    };
    // The leader is gone; give the rest what is left of the grace. An empty cgroup stays empty
    // (no process is left to fork into it), so nothing more is looked for in it.
    let emptied = match (&status, &hold.cgroup) {
        (None, _) => false,
        (Some(_), Some(cg)) => cg.wait_empty(deadline).await,
        (Some(_), None) => {
            reap_members(hold.pgid, deadline).await;
            false
        }
    };
    let killed = !emptied && hold.alive();
    if killed {
        hold.kill_now();
    }
    if status.is_none() {
        status = child.wait().await.ok();
    }
    if emptied {
        // A process that left the cgroup (agentd's user may move its own processes) but kept
        // the group is still killed: one syscall, which usually finds no group.
        kill_group(hold.pgid, Signal::SIGKILL);
        reap_orphans(&seen, Instant::now() + REAP_WAIT).await;
    } else {
        kill_rest(hold, seen).await;
    }
    let how = match status {
        _ if killed && status.is_some_and(|s| s.signal() == Some(libc::SIGKILL)) => "killed",
        Some(s) if s.code().is_some() => "exited",
        _ => "terminated",
    };
    StopOutcome::from_status(how, status, began.elapsed())
}

/// Kills what is left of a worker whose leader has been reaped, and reaps the rest; the cgroup
/// is removed once empty. `seen` are processes of the worker seen earlier (maybe zombies by now).
pub async fn reap(hold: &Hold, seen: Vec<i32>) {
    if kill_rest(hold, seen).await {
        hold.remove_cgroup();
    }
}

/// [`reap`] without the removal of the cgroup; false when the cgroup could not be emptied.
async fn kill_rest(hold: &Hold, mut seen: Vec<i32>) -> bool {
    kill_group(hold.pgid, Signal::SIGKILL);
    let deadline = Instant::now() + REAP_WAIT;
    let Some(cg) = &hold.cgroup else {
        if !reap_members(hold.pgid, deadline).await {
            tracing::warn!(
                pgid = hold.pgid,
                "members of a worker's process group were not reaped within {REAP_WAIT:?}"
            );
        }
        return true;
    };
    seen.extend(cg.pids());
    // Usually empty by now (stop waited for it): no write, no wait.
    if cg.populated() && !cg.kill(deadline).await {
        tracing::warn!(
            cgroup = %cg.dir().display(), pids = ?cg.pids(),
            "processes of a worker's cgroup were still alive {REAP_WAIT:?} after SIGKILL"
        );
        return false;
    }
    reap_orphans(&seen, deadline).await;
    true
}

/// Reaps the orphans agentd inherited until none of `seen` is a zombie any more, or `deadline`.
/// A dead parent hands its children to agentd just after it leaves its cgroup, so a zombie may
/// need one more SIGCHLD.
async fn reap_orphans(seen: &[i32], deadline: Instant) {
    // Most stops leave no zombie (the leader was reaped through its Child): then there is
    // nothing to do, and no scan of agentd's children (which costs O(children) per stop, and
    // made 200 simultaneous reapings quadratic).
    if !seen.iter().any(|p| reap::is_zombie(*p)) {
        return;
    }
    let mut exits = signal(SignalKind::child()).ok();
    loop {
        reap::orphans();
        if !seen.iter().any(|p| reap::is_zombie(*p)) {
            return;
        }
        let Some(exits) = exits.as_mut() else {
            return;
        };
        tokio::select! {
            _ = exits.recv() => {}
            _ = sleep_until(deadline) => return,
        }
    }
}

/// Reaps the members of `pgid` as they exit, until none of agentd's children is left in the
/// group (true) or `deadline` passes (false). Never called before the leader itself has been
/// reaped through its `Child`, whose status this would otherwise take.
async fn reap_members(pgid: i32, deadline: Instant) -> bool {
    // Listening before the first look, so that an exit between the look and the wait still
    // wakes the wait.
    let mut exits = match signal(SignalKind::child()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot listen for SIGCHLD: {e}");
            None
        }
    };
    loop {
        if reap_exited(pgid) {
            return true;
        }
        let Some(exits) = exits.as_mut() else {
            return false;
        };
        tokio::select! {
            _ = exits.recv() => {}
            _ = sleep_until(deadline) => return reap_exited(pgid),
        }
    }
}

/// Reaps every member of `pgid` that has exited; true when no child of agentd is left in the
/// group (`ECHILD`: nothing left to wait for).
fn reap_exited(pgid: i32) -> bool {
    if pgid <= 1 {
        return true;
    }
    loop {
        match waitpid(Pid::from_raw(-pgid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return false,
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                crate::observe::orphan_reaped();
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return true,
        }
    }
}
