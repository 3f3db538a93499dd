//! The task that owns one channel's worker: spawn, readiness, the running `select!` (stop, ping,
//! exit, inactivity deadline, watchdog), restarts with backoff, and clean-up.

use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixDatagram;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use super::errors::StartError;
use super::logs::{self, LogSink};
use super::records::{self, Record};
use super::stop::{self, describe, StopOutcome};
use super::{Command, Inner, WorkerState};
use crate::catalog::{Ready, Restart, Timeout};

/// Environment variables agentd sets for every worker (they win over `extra_env`).
pub(super) const OWN_ENV: &[&str] = &[
    "AGENTD_CHANNEL",
    "AGENTD_GRAPH",
    "AGENTD_AGENT_ID",
    "AGENTD_REQUEST_ID",
    "AGENTD_WORKER_ID",
    "AGENTD_SERVER_URL",
    "AGENTD_API_URL",
    "AGENTD_API_KEY",
    "AGENTD_CHAT_ID",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
];

/// First restart delay; doubled for each consecutive failure, up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A worker that ran this long before failing starts its backoff (and restart budget) afresh.
const RESET_AFTER: Duration = Duration::from_secs(60);
/// Longest wait for a dead worker's output pipes to drain.
const PUMP_WAIT: Duration = Duration::from_secs(1);

/// Everything the task needs to run one channel's worker.
pub(super) struct Plan {
    pub channel: String,
    pub generation: u64,
    pub graph: String,
    pub request_id: Option<String>,
    pub chat_id: Option<String>,
    pub extra_env: Vec<(String, String)>,
    pub argv: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub ready: Ready,
    pub settle: Duration,
    pub start_timeout: Duration,
    pub timeout: Timeout,
    pub restart: Restart,
    pub max_restarts: u32,
    pub watchdog: Option<Duration>,
    pub property_path: PathBuf,
    pub log: Arc<LogSink>,
}

impl Plan {
    fn next_deadline(&self) -> Option<Instant> {
        match self.timeout {
            Timeout::Never => None,
            Timeout::Seconds(s) => Some(Instant::now() + Duration::from_secs(s)),
        }
    }
}

/// One spawned process of the worker.
struct Proc {
    child: Child,
    pid: u32,
    worker_id: String,
    notify: UnixDatagram,
    pumps: Vec<JoinHandle<()>>,
    started: Instant,
}

/// What the `/start` caller is told: pid and worker id, or why not.
pub(super) type ReadyReply = oneshot::Sender<Result<(u32, String), StartError>>;

enum Started {
    Ready,
    Exited(ExitStatus),
    NotReady,
    Stop(Option<oneshot::Sender<StopOutcome>>),
    Idle,
}

enum Ended {
    Stop(Option<oneshot::Sender<StopOutcome>>),
    Idle,
    Exited(ExitStatus),
    Watchdog,
}

/// Runs a channel's worker from spawn to gone for good.
pub(super) async fn run(
    inner: Arc<Inner>,
    plan: Plan,
    mut rx: mpsc::UnboundedReceiver<Command>,
    ready_tx: ReadyReply,
) {
    let mut ready_tx = Some(ready_tx);
    let mut deadline: Option<Instant> = None;
    let mut consecutive = 0u32;
    let mut last_outcome = StopOutcome::from_status("not_started", None, Duration::ZERO);
    loop {
        plan.log.clear_tail();
        let mut proc = match spawn(&inner, &plan).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(channel = %plan.channel, "{e}");
                plan.log.note(&e.to_string());
                finish(&inner, &plan);
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(Err(e));
                }
                drain(&mut rx, &last_outcome);
                return;
            }
        };
        let pgid = proc.pid as i32;
        let (pid, wid) = (proc.pid, proc.worker_id.clone());
        inner.update(&plan.channel, plan.generation, |i| {
            i.pid = Some(pid);
            i.worker_id = Some(wid.clone());
        });
        tracing::info!(channel = %plan.channel, graph = %plan.graph, pid, "worker spawned");

        let failed: Option<ExitStatus> = match wait_ready(&plan, &mut proc, &mut rx, &mut deadline)
            .await
        {
            Started::Ready => {
                tracing::info!(channel = %plan.channel, pid, "worker ready");
                plan.log.note(&format!("worker {pid} ready"));
                inner.update(&plan.channel, plan.generation, |i| {
                    i.state = WorkerState::Running
                });
                if let Some(tx) = ready_tx.take() {
                    deadline = plan.next_deadline();
                    let _ = tx.send(Ok((pid, proc.worker_id.clone())));
                }
                match running(&plan, &mut proc, &mut rx, &mut deadline).await {
                    Ended::Stop(reply) => {
                        set_stopping(&inner, &plan);
                        let out = stop::stop_group(
                            &mut proc.child,
                            pgid,
                            None,
                            inner.settings.worker_stop_grace,
                        )
                        .await;
                        end(&inner, &plan, &mut proc, &format!("stopped ({})", out.how)).await;
                        finish(&inner, &plan);
                        if let Some(r) = reply {
                            let _ = r.send(out.clone());
                        }
                        drain(&mut rx, &out);
                        return;
                    }
                    Ended::Idle => {
                        tracing::info!(channel = %plan.channel, pid, "inactivity timeout: stopping the worker");
                        set_stopping(&inner, &plan);
                        let out = stop::stop_group(
                            &mut proc.child,
                            pgid,
                            None,
                            inner.settings.worker_stop_grace,
                        )
                        .await;
                        end(
                            &inner,
                            &plan,
                            &mut proc,
                            &format!("inactivity timeout ({})", out.how),
                        )
                        .await;
                        finish(&inner, &plan);
                        drain(&mut rx, &out);
                        return;
                    }
                    Ended::Exited(st) => {
                        let level_fail = !st.success();
                        if level_fail {
                            tracing::warn!(channel = %plan.channel, pid, "worker exited on its own: {}", describe(&st));
                        } else {
                            tracing::info!(channel = %plan.channel, pid, "worker exited on its own: {}", describe(&st));
                        }
                        stop::reap_group(pgid).await;
                        end(
                            &inner,
                            &plan,
                            &mut proc,
                            &format!("exited on its own ({})", describe(&st)),
                        )
                        .await;
                        last_outcome = StopOutcome::from_status("exited", Some(st), Duration::ZERO);
                        (!st.success()).then_some(st)
                    }
                    Ended::Watchdog => {
                        tracing::warn!(channel = %plan.channel, pid, "watchdog: no WATCHDOG=1 in time, killing the worker");
                        stop::kill_group(pgid, libc::SIGKILL);
                        let st = proc.child.wait().await.ok();
                        stop::reap_group(pgid).await;
                        end(&inner, &plan, &mut proc, "killed by the watchdog").await;
                        last_outcome = StopOutcome::from_status("killed", st, Duration::ZERO);
                        Some(st.unwrap_or_else(|| {
                            std::os::unix::process::ExitStatusExt::from_raw(libc::SIGKILL)
                        }))
                    }
                }
            }
            Started::Stop(reply) => {
                set_stopping(&inner, &plan);
                let out = stop::stop_group(
                    &mut proc.child,
                    pgid,
                    None,
                    inner.settings.worker_stop_grace,
                )
                .await;
                end(&inner, &plan, &mut proc, "stopped before it was ready").await;
                finish(&inner, &plan);
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(Err(StartError::StoppedDuringStart));
                }
                if let Some(r) = reply {
                    let _ = r.send(out.clone());
                }
                drain(&mut rx, &out);
                return;
            }
            Started::Idle => {
                set_stopping(&inner, &plan);
                let out = stop::stop_group(
                    &mut proc.child,
                    pgid,
                    None,
                    inner.settings.worker_stop_grace,
                )
                .await;
                end(
                    &inner,
                    &plan,
                    &mut proc,
                    "inactivity timeout while restarting",
                )
                .await;
                finish(&inner, &plan);
                drain(&mut rx, &out);
                return;
            }
            Started::Exited(st) => {
                stop::reap_group(pgid).await;
                end(
                    &inner,
                    &plan,
                    &mut proc,
                    &format!("exited before it was ready ({})", describe(&st)),
                )
                .await;
                last_outcome = StopOutcome::from_status("exited", Some(st), Duration::ZERO);
                if let Some(tx) = ready_tx.take() {
                    finish(&inner, &plan);
                    let _ = tx.send(Err(StartError::Exited {
                        status: describe(&st),
                        output: plan.log.tail(),
                    }));
                    drain(&mut rx, &last_outcome);
                    return;
                }
                tracing::warn!(channel = %plan.channel, pid, "restarted worker exited before it was ready: {}", describe(&st));
                Some(st)
            }
            Started::NotReady => {
                let how = if plan.ready == Ready::Notify {
                    "no READY=1 on NOTIFY_SOCKET"
                } else {
                    "settle time longer than the start timeout"
                };
                let out = stop::stop_group(&mut proc.child, pgid, None, Duration::ZERO).await;
                end(
                    &inner,
                    &plan,
                    &mut proc,
                    &format!("not ready in time ({how})"),
                )
                .await;
                last_outcome = out.clone();
                if let Some(tx) = ready_tx.take() {
                    finish(&inner, &plan);
                    let _ = tx.send(Err(StartError::NotReady {
                        timeout_ms: inner.settings.worker_start_timeout.as_millis() as u64,
                        how,
                        output: plan.log.tail(),
                    }));
                    drain(&mut rx, &last_outcome);
                    return;
                }
                tracing::warn!(channel = %plan.channel, pid, "restarted worker was not ready in time");
                Some(std::os::unix::process::ExitStatusExt::from_raw(
                    libc::SIGKILL,
                ))
            }
        };

        // The process is gone. Restart it, or the worker is gone for good.
        if proc.started.elapsed() >= RESET_AFTER {
            consecutive = 0;
        }
        let Some(status) = failed else {
            finish(&inner, &plan);
            drain(&mut rx, &last_outcome);
            return;
        };
        if plan.restart == Restart::Never || consecutive >= plan.max_restarts {
            tracing::error!(
                channel = %plan.channel, graph = %plan.graph, restarts = consecutive,
                "worker failed ({}); giving up", describe(&status)
            );
            plan.log
                .note(&format!("giving up after {consecutive} restarts"));
            finish(&inner, &plan);
            drain(&mut rx, &last_outcome);
            return;
        }
        consecutive += 1;
        let delay = BACKOFF_BASE
            .saturating_mul(1 << (consecutive - 1).min(16))
            .min(BACKOFF_MAX);
        tracing::warn!(channel = %plan.channel, attempt = consecutive, delay_ms = delay.as_millis() as u64, "restarting the worker");
        plan.log.note(&format!(
            "restart {consecutive} in {} ms",
            delay.as_millis()
        ));
        inner.update(&plan.channel, plan.generation, |i| {
            i.state = WorkerState::Restarting;
            i.pid = None;
            i.restarts += 1;
        });
        let wake = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(wake) => break,
                _ = maybe_sleep(deadline) => {
                    tracing::info!(channel = %plan.channel, "inactivity timeout while waiting to restart");
                    finish(&inner, &plan);
                    drain(&mut rx, &last_outcome);
                    return;
                }
                cmd = rx.recv() => match cmd {
                    Some(Command::Ping) => deadline = deadline.and(plan.next_deadline()),
                    Some(Command::Stop(reply)) => {
                        finish(&inner, &plan);
                        let _ = reply.send(last_outcome.clone());
                        drain(&mut rx, &last_outcome);
                        return;
                    }
                    None => {
                        finish(&inner, &plan);
                        return;
                    }
                },
            }
        }
        inner.update(&plan.channel, plan.generation, |i| {
            i.state = WorkerState::Starting
        });
    }
}

fn set_stopping(inner: &Inner, plan: &Plan) {
    inner.update(&plan.channel, plan.generation, |i| {
        i.state = WorkerState::Stopping
    });
}

/// Sleeps until `d`, or forever without one.
async fn maybe_sleep(d: Option<Instant>) {
    match d {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What a datagram on the notify socket says.
#[derive(Debug, Default, PartialEq)]
struct Notice {
    ready: bool,
    watchdog: bool,
    watchdog_trigger: bool,
}

fn parse_notice(buf: &[u8]) -> Notice {
    let mut n = Notice::default();
    for line in String::from_utf8_lossy(buf).lines() {
        match line.trim() {
            "READY=1" => n.ready = true,
            "WATCHDOG=1" => n.watchdog = true,
            "WATCHDOG=trigger" => n.watchdog_trigger = true,
            _ => {}
        }
    }
    n
}

async fn wait_ready(
    plan: &Plan,
    proc: &mut Proc,
    rx: &mut mpsc::UnboundedReceiver<Command>,
    deadline: &mut Option<Instant>,
) -> Started {
    let begin = Instant::now();
    let timeout_at = begin + proc_start_timeout(plan);
    let settle_at = (plan.ready == Ready::Settle).then(|| begin + plan.settle);
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            biased;
            st = proc.child.wait() => {
                return match st {
                    Ok(st) => Started::Exited(st),
                    Err(_) => Started::NotReady,
                };
            }
            _ = maybe_sleep(settle_at) => return Started::Ready,
            r = recv_notice(&proc.notify, &mut buf) => {
                if let Ok((n, sender)) = r {
                    if from_group(sender, proc.pid) && parse_notice(&buf[..n]).ready {
                        return Started::Ready;
                    }
                }
            }
            cmd = rx.recv() => match cmd {
                Some(Command::Ping) => *deadline = deadline.and(plan.next_deadline()),
                Some(Command::Stop(reply)) => return Started::Stop(Some(reply)),
                None => return Started::Stop(None),
            },
            _ = maybe_sleep(*deadline) => return Started::Idle,
            _ = sleep_until(timeout_at) => return Started::NotReady,
        }
    }
}

/// The start timeout, never shorter than the settle time plus a margin (so a long `settle_ms`
/// cannot fail every start).
fn proc_start_timeout(plan: &Plan) -> Duration {
    let base = plan.start_timeout;
    match plan.ready {
        Ready::Settle => base.max(plan.settle + Duration::from_millis(500)),
        Ready::Notify => base,
    }
}

async fn running(
    plan: &Plan,
    proc: &mut Proc,
    rx: &mut mpsc::UnboundedReceiver<Command>,
    deadline: &mut Option<Instant>,
) -> Ended {
    let mut watchdog_at = plan.watchdog.map(|w| Instant::now() + w);
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            biased;
            st = proc.child.wait() => {
                return match st {
                    Ok(st) => Ended::Exited(st),
                    Err(_) => Ended::Watchdog,
                };
            }
            cmd = rx.recv() => match cmd {
                Some(Command::Ping) => *deadline = plan.next_deadline(),
                Some(Command::Stop(reply)) => return Ended::Stop(Some(reply)),
                None => return Ended::Stop(None),
            },
            r = recv_notice(&proc.notify, &mut buf) => {
                if let Ok((n, sender)) = r {
                    if !from_group(sender, proc.pid) {
                        continue;
                    }
                    let notice = parse_notice(&buf[..n]);
                    if notice.watchdog_trigger {
                        return Ended::Watchdog;
                    }
                    if notice.watchdog {
                        watchdog_at = plan.watchdog.map(|w| Instant::now() + w);
                    }
                }
            }
            _ = maybe_sleep(*deadline) => return Ended::Idle,
            _ = maybe_sleep(watchdog_at) => return Ended::Watchdog,
        }
    }
}

/// Binds the worker's notify socket, asking the kernel for each sender's credentials.
fn bind_notify(name: &str) -> std::io::Result<UnixDatagram> {
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let sock = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
    sock.set_nonblocking(true)?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    UnixDatagram::from_std(sock)
}

/// Only the worker's own process group may speak on its notify socket (the abstract name is
/// visible to every local user in `/proc/net/unix`).
fn from_group(sender: Option<i32>, pgid: u32) -> bool {
    match sender {
        Some(pid) if pid > 0 => {
            records::proc_stat(pid).is_some_and(|(pgrp, _, _)| pgrp == pgid as i32)
        }
        _ => false,
    }
}

/// Receives one datagram and its sender's pid (from `SCM_CREDENTIALS`).
async fn recv_notice(sock: &UnixDatagram, buf: &mut [u8]) -> std::io::Result<(usize, Option<i32>)> {
    loop {
        sock.readable().await?;
        match sock.try_io(tokio::io::Interest::READABLE, || {
            recv_with_creds(sock.as_raw_fd(), buf)
        }) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

fn recv_with_creds(fd: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<i32>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one SCM_CREDENTIALS message, 8-byte aligned.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer set below outlives the recvmsg call, and the
    // CMSG_* macros only walk inside `control` up to msg_controllen.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut pid = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
            {
                let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                pid = Some(cred.pid);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok((n as usize, pid))
    }
}

async fn spawn(inner: &Inner, plan: &Plan) -> Result<Proc, StartError> {
    let program = plan.argv.first().cloned().unwrap_or_default();
    let spawn_err = |source| StartError::Spawn {
        program: program.clone(),
        source,
    };
    let worker_id = nanoid::nanoid!(12);
    let notify_name = format!("agentd-{}-{worker_id}", std::process::id());
    let notify = bind_notify(&notify_name).map_err(spawn_err)?;

    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&plan.argv[1..]);
    if let Some(dir) = &plan.cwd {
        cmd.current_dir(dir);
    }
    cmd.env_remove("WATCHDOG_PID");
    for (k, v) in plan
        .extra_env
        .iter()
        .filter(|(k, _)| !OWN_ENV.contains(&k.as_str()))
    {
        cmd.env(k, v);
    }
    let settings = &inner.settings;
    cmd.env("AGENTD_CHANNEL", &plan.channel)
        .env("AGENTD_GRAPH", &plan.graph)
        .env("AGENTD_AGENT_ID", &plan.graph)
        .env("AGENTD_WORKER_ID", &worker_id)
        .env("AGENTD_SERVER_URL", &inner.base_url)
        .env("AGENTD_API_URL", format!("{}/api/v1", inner.base_url))
        .env("NOTIFY_SOCKET", format!("@{notify_name}"));
    match &plan.request_id {
        Some(r) => cmd.env("AGENTD_REQUEST_ID", r),
        None => cmd.env_remove("AGENTD_REQUEST_ID"),
    };
    if let Some(key) = &settings.api_key {
        cmd.env("AGENTD_API_KEY", key);
    }
    if let Some(chat) = &plan.chat_id {
        cmd.env("AGENTD_CHAT_ID", chat);
    }
    match plan.watchdog {
        Some(w) => cmd.env("WATCHDOG_USEC", (w.as_micros() as u64).to_string()),
        None => cmd.env_remove("WATCHDOG_USEC"),
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec; no allocation.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // agentd died between fork and prctl: do not run as an orphan.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(spawn_err)?;
    let pid = child.id().unwrap_or(0);
    inner.records.add(Record {
        channel: plan.channel.clone(),
        worker_id: worker_id.clone(),
        pgid: pid as i32,
        start_time: records::start_time(pid as i32).unwrap_or(0),
    });
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(logs::pump(out, plan.log.clone())));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(logs::pump(err, plan.log.clone())));
    }
    Ok(Proc {
        child,
        pid,
        worker_id,
        notify,
        pumps,
        started: Instant::now(),
    })
}

/// After a process and its group are gone: forget its record, let its output drain, log it.
async fn end(inner: &Inner, plan: &Plan, proc: &mut Proc, why: &str) {
    inner.records.remove(&proc.worker_id);
    for p in proc.pumps.drain(..) {
        let _ = tokio::time::timeout(PUMP_WAIT, p).await;
    }
    plan.log.note(&format!("worker {} {why}", proc.pid));
}

/// The worker is gone for good: it leaves the registry and its property file goes.
fn finish(inner: &Inner, plan: &Plan) {
    inner.release(&plan.channel, plan.generation);
    if !inner.settings.keep_property_files {
        let _ = std::fs::remove_file(&plan.property_path);
    }
}

/// Answers stops that raced with the end of the worker.
fn drain(rx: &mut mpsc::UnboundedReceiver<Command>, out: &StopOutcome) {
    rx.close();
    while let Ok(cmd) = rx.try_recv() {
        if let Command::Stop(reply) = cmd {
            let _ = reply.send(out.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices() {
        assert!(parse_notice(b"READY=1").ready);
        assert!(parse_notice(b"STATUS=x\nREADY=1\n").ready);
        assert!(parse_notice(b"WATCHDOG=1").watchdog);
        assert_eq!(parse_notice(b"READY=0"), Notice::default());
    }
}
