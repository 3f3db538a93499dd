//! Stopping a worker's process group: SIGTERM, the grace period, SIGKILL, and reaping every
//! member so that nothing (and no zombie) is left behind.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use serde::Serialize;
use tokio::process::Child;
use tokio::time::{sleep, sleep_until, Instant};

/// How often the group is checked for members that outlive their leader.
const GROUP_POLL: Duration = Duration::from_millis(20);
/// Longest wait for killed members to be reaped.
const REAP_WAIT: Duration = Duration::from_secs(2);

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
pub fn kill_group(pgid: i32, sig: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: plain syscall; a negative pid addresses the group.
    unsafe { libc::kill(-pgid, sig) == 0 }
}

fn group_exists(pgid: i32) -> bool {
    kill_group(pgid, 0)
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
/// `exited` is the leader's status when it is already known.
pub async fn stop_group(
    child: &mut Child,
    pgid: i32,
    exited: Option<ExitStatus>,
    grace: Duration,
) -> StopOutcome {
    let began = Instant::now();
    if let Some(st) = exited {
        kill_group(pgid, libc::SIGKILL);
        reap_group(pgid).await;
        return StopOutcome::from_status("exited", Some(st), began.elapsed());
    }
    kill_group(pgid, libc::SIGTERM);
    // An absurdly long grace is capped rather than overflowing the clock.
    let deadline = began
        .checked_add(grace)
        .unwrap_or_else(|| began + Duration::from_secs(86_400 * 365));
    let mut status = tokio::select! {
        st = child.wait() => st.ok(),
        _ = sleep_until(deadline) => None,
    };
    if status.is_some() {
        // The leader is gone; give the rest of its group what is left of the grace.
        reap_members(pgid);
        while group_exists(pgid) && Instant::now() < deadline {
            sleep(GROUP_POLL).await;
            reap_members(pgid);
        }
    }
    let killed = group_exists(pgid) && kill_group(pgid, libc::SIGKILL);
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
    kill_group(pgid, libc::SIGKILL);
    let deadline = Instant::now() + REAP_WAIT;
    loop {
        reap_members(pgid);
        if !group_exists(pgid) || Instant::now() >= deadline {
            break;
        }
        sleep(GROUP_POLL).await;
    }
}

/// Reaps the members of `pgid` that have exited and are agentd's children (grandchildren of a
/// worker are re-parented to agentd, a child subreaper). Never called before the leader itself
/// has been reaped through its `Child`.
fn reap_members(pgid: i32) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on a process group we own; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(-pgid, &mut status, libc::WNOHANG) };
        if r <= 0 {
            break;
        }
    }
}
