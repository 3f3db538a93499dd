//! Stopping a worker's process group: SIGTERM, the grace period, SIGKILL, and reaping every
//! member so that nothing (and no zombie) is left behind.
//!
//! The leader is always reaped through its tokio `Child` first; only then are the other members
//! reaped here, by waiting on the group (`waitpid(-pgid)`) whenever a SIGCHLD arrives, until the
//! kernel answers `ECHILD`: no child of agentd is left in the group. Members are agentd's
//! children because agentd is a child subreaper (see [`super::Supervisor::new`]).

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::process::Child;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::{sleep_until, Instant};

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

/// Stops a running group: SIGTERM, up to `grace` for every member to go, then SIGKILL.
pub async fn stop_group(child: &mut Child, pgid: i32, grace: Duration) -> StopOutcome {
    let began = Instant::now();
    kill_group(pgid, Signal::SIGTERM);
    let deadline = began + grace.min(MAX_GRACE);
    let mut status = tokio::select! {
        st = child.wait() => st.ok(),
        _ = sleep_until(deadline) => None,
    };
    if status.is_some() {
        // The leader is gone; give the rest of its group what is left of the grace.
        reap_members(pgid, deadline).await;
    }
    let killed = group_exists(pgid) && kill_group(pgid, Signal::SIGKILL);
    if status.is_none() {
        status = child.wait().await.ok();
    }
    reap_group(pgid).await;
    let how = match status {
        _ if killed && status.is_some_and(|s| s.signal() == Some(libc::SIGKILL)) => "killed",
        Some(s) if s.code().is_some() => "exited",
        _ => "terminated",
    };
    StopOutcome::from_status(how, status, began.elapsed())
}

/// Kills what is left of a group whose leader has been reaped, and reaps the members.
pub async fn reap_group(pgid: i32) {
    kill_group(pgid, Signal::SIGKILL);
    if !reap_members(pgid, Instant::now() + REAP_WAIT).await {
        tracing::warn!(
            pgid,
            "members of a worker's process group were not reaped within {REAP_WAIT:?}"
        );
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
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return true,
        }
    }
}
