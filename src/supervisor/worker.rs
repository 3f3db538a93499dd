//! The task that owns one channel's worker: spawn, readiness, the running `select!` (stop, ping,
//! exit, inactivity deadline, watchdog), restarts with backoff, and clean-up.

use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::process::ExitStatusExt;
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
    "AGENTD_WORKER_TOKEN",
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
    /// The channel's last ping, written by `/ping`.
    pub(crate) pings: Arc<super::PingClock>,
}

impl Plan {
    /// Starts the inactivity clock now (at readiness): the first deadline is one timeout away.
    fn next_deadline(&self) -> Option<Instant> {
        self.pings.touch();
        self.deadline_from_last_ping()
    }

    fn deadline_from_last_ping(&self) -> Option<Instant> {
        match self.timeout {
            Timeout::Never => None,
            Timeout::Seconds(s) => {
                Instant::from_std(self.pings.last()).checked_add(Duration::from_secs(s))
            }
        }
    }

    /// Called when the inactivity timer fires: true when the worker really is idle; otherwise
    /// `deadline` is moved to one timeout after the latest ping.
    fn idle(&self, deadline: &mut Option<Instant>) -> bool {
        match self.deadline_from_last_ping() {
            Some(d) if d > Instant::now() => {
                *deadline = Some(d);
                false
            }
            _ => true,
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
    /// The records change that recorded this process's group.
    recorded: u64,
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

/// How one spawned process of the worker came to an end.
enum Life {
    /// The worker is gone for good (stopped, idle, or its start failed): the task ends.
    Over,
    /// The process exited on its own with success: not restarted.
    Clean,
    /// The process failed (or the watchdog killed it): restart per policy.
    Failed(ExitStatus),
}

/// The task's state across the processes of one worker.
struct Task {
    inner: Arc<Inner>,
    plan: Plan,
    rx: mpsc::UnboundedReceiver<Command>,
    ready_tx: Option<ReadyReply>,
    /// The inactivity deadline; `None` before the first readiness and for `timeout: -1`.
    deadline: Option<Instant>,
    /// What a late `/stop` is told once no process runs.
    last: StopOutcome,
}

/// Runs a channel's worker from spawn to gone for good.
pub(super) async fn run(
    inner: Arc<Inner>,
    plan: Plan,
    rx: mpsc::UnboundedReceiver<Command>,
    ready_tx: ReadyReply,
) {
    let mut task = Task {
        inner,
        plan,
        rx,
        ready_tx: Some(ready_tx),
        deadline: None,
        last: StopOutcome::from_status("not_started", None, Duration::ZERO),
    };
    let mut consecutive = 0u32;
    loop {
        let (life, ran_for) = match task.spawn_and_run().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(channel = %task.plan.channel, "{e}");
                task.plan.log.note(&e.to_string());
                task.fail_start(e);
                return;
            }
        };
        let status = match life {
            Life::Over => return,
            Life::Clean => {
                task.gone();
                return;
            }
            Life::Failed(st) => st,
        };
        if ran_for >= RESET_AFTER {
            consecutive = 0;
        }
        let plan = &task.plan;
        if plan.restart == Restart::Never || consecutive >= plan.max_restarts {
            tracing::error!(
                channel = %plan.channel, graph = %plan.graph, restarts = consecutive,
                "worker failed ({}); giving up", describe(&status)
            );
            plan.log
                .note(&format!("giving up after {consecutive} restarts"));
            task.gone();
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
        task.set(|i| {
            i.state = WorkerState::Restarting;
            i.pid = None;
            i.restarts += 1;
        });
        if !task.backoff(delay).await {
            return;
        }
        task.set(|i| i.state = WorkerState::Starting);
    }
}

impl Task {
    fn set(&self, f: impl FnOnce(&mut super::WorkerInfo)) {
        self.inner
            .update(&self.plan.channel, self.plan.generation, f);
    }

    /// Spawns one process and runs it to its end; also returns how long it ran.
    async fn spawn_and_run(&mut self) -> Result<(Life, Duration), StartError> {
        self.plan.log.clear_tail();
        let mut proc = spawn(&self.inner, &self.plan).await?;
        let (pid, wid) = (proc.pid, proc.worker_id.clone());
        self.set(|i| {
            i.pid = Some(pid);
            i.worker_id = Some(wid);
        });
        tracing::info!(channel = %self.plan.channel, graph = %self.plan.graph, pid, "worker spawned");
        let life = match wait_ready(&self.plan, &mut proc, &mut self.rx, &mut self.deadline).await {
            Started::Ready => {
                tracing::info!(channel = %self.plan.channel, pid, "worker ready");
                self.plan.log.note(&format!("worker {pid} ready"));
                self.set(|i| i.state = WorkerState::Running);
                if let Some(tx) = self.ready_tx.take() {
                    // "Started" also means "recorded": a kill -9 of agentd from now on leaves no
                    // part of this group unswept. Usually written long before readiness.
                    self.inner.records.written(proc.recorded).await;
                    self.deadline = self.plan.next_deadline();
                    let _ = tx.send(Ok((pid, proc.worker_id.clone())));
                }
                let ended = running(&self.plan, &mut proc, &mut self.rx, &mut self.deadline).await;
                self.after_running(&mut proc, ended).await
            }
            Started::Stop(reply) => {
                self.shut(&mut proc, reply, "stopped before it was ready")
                    .await;
                Life::Over
            }
            Started::Idle => {
                self.shut(&mut proc, None, "inactivity timeout while restarting")
                    .await;
                Life::Over
            }
            Started::Exited(st) => {
                stop::reap_group(proc.pid as i32).await;
                let why = format!("exited before it was ready ({})", describe(&st));
                self.end(&mut proc, &why).await;
                self.last = StopOutcome::from_status("exited", Some(st), Duration::ZERO);
                self.start_failed(
                    StartError::Exited {
                        status: describe(&st),
                        output: self.plan.log.tail(),
                    },
                    st,
                )
            }
            Started::NotReady => {
                let how = match self.plan.ready {
                    Ready::Notify => "no READY=1 on NOTIFY_SOCKET",
                    Ready::Settle => "settle time longer than the start timeout",
                };
                self.last =
                    stop::stop_group(&mut proc.child, proc.pid as i32, None, Duration::ZERO).await;
                self.end(&mut proc, &format!("not ready in time ({how})"))
                    .await;
                self.start_failed(
                    StartError::NotReady {
                        timeout_ms: self.plan.start_timeout.as_millis() as u64,
                        how,
                        output: self.plan.log.tail(),
                    },
                    ExitStatus::from_raw(libc::SIGKILL),
                )
            }
        };
        Ok((life, proc.started.elapsed()))
    }

    /// A first start fails the `/start` call; a restart that fails counts as a failure.
    fn start_failed(&mut self, err: StartError, st: ExitStatus) -> Life {
        if self.ready_tx.is_some() {
            self.fail_start(err);
            return Life::Over;
        }
        tracing::warn!(channel = %self.plan.channel, "restarted worker did not come up: {err}");
        Life::Failed(st)
    }

    async fn after_running(&mut self, proc: &mut Proc, ended: Ended) -> Life {
        let pid = proc.pid;
        match ended {
            Ended::Stop(reply) => {
                self.shut(proc, reply, "stopped").await;
                Life::Over
            }
            Ended::Idle => {
                tracing::info!(channel = %self.plan.channel, pid, "inactivity timeout: stopping the worker");
                self.shut(proc, None, "inactivity timeout").await;
                Life::Over
            }
            Ended::Exited(st) => {
                if st.success() {
                    tracing::info!(channel = %self.plan.channel, pid, "worker exited on its own: {}", describe(&st));
                } else {
                    tracing::warn!(channel = %self.plan.channel, pid, "worker exited on its own: {}", describe(&st));
                }
                stop::reap_group(pid as i32).await;
                self.end(proc, &format!("exited on its own ({})", describe(&st)))
                    .await;
                self.last = StopOutcome::from_status("exited", Some(st), Duration::ZERO);
                if st.success() {
                    Life::Clean
                } else {
                    Life::Failed(st)
                }
            }
            Ended::Watchdog => {
                tracing::warn!(channel = %self.plan.channel, pid, "watchdog: no WATCHDOG=1 in time, killing the worker");
                stop::kill_group(pid as i32, libc::SIGKILL);
                let st = proc
                    .child
                    .wait()
                    .await
                    .unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL));
                stop::reap_group(pid as i32).await;
                self.end(proc, "killed by the watchdog").await;
                self.last = StopOutcome::from_status("killed", Some(st), Duration::ZERO);
                Life::Failed(st)
            }
        }
    }

    /// Stops a live process for good and answers the stop that asked for it.
    async fn shut(
        &mut self,
        proc: &mut Proc,
        reply: Option<oneshot::Sender<StopOutcome>>,
        why: &str,
    ) {
        self.set(|i| i.state = WorkerState::Stopping);
        let grace = self.inner.settings.worker_stop_grace;
        let out = stop::stop_group(&mut proc.child, proc.pid as i32, None, grace).await;
        self.end(proc, &format!("{why} ({})", out.how)).await;
        self.last = out.clone();
        finish(&self.inner, &self.plan);
        if let Some(tx) = self.ready_tx.take() {
            let _ = tx.send(Err(StartError::StoppedDuringStart));
        }
        if let Some(r) = reply {
            let _ = r.send(out);
        }
        drain(&mut self.rx, &self.last);
    }

    /// After a process and its group are gone: forget its record, let its output drain, log it.
    async fn end(&self, proc: &mut Proc, why: &str) {
        self.inner.records.remove(&proc.worker_id);
        if let Some(hook) = self.inner.gone_hook.get() {
            hook(&proc.worker_id);
        }
        for p in proc.pumps.drain(..) {
            let _ = tokio::time::timeout(PUMP_WAIT, p).await;
        }
        self.plan.log.note(&format!("worker {} {why}", proc.pid));
    }

    /// The first start failed: release everything, then tell the `/start` caller.
    fn fail_start(&mut self, err: StartError) {
        finish(&self.inner, &self.plan);
        if let Some(tx) = self.ready_tx.take() {
            let _ = tx.send(Err(err));
        }
        drain(&mut self.rx, &self.last);
    }

    /// No process runs and none will: the worker is gone for good.
    fn gone(&mut self) {
        finish(&self.inner, &self.plan);
        drain(&mut self.rx, &self.last);
    }

    /// Waits before a restart; false when the worker was stopped (or went idle) meanwhile.
    async fn backoff(&mut self, delay: Duration) -> bool {
        let wake = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(wake) => return true,
                _ = maybe_sleep(self.deadline) => {
                    if !self.plan.idle(&mut self.deadline) {
                        continue;
                    }
                    tracing::info!(channel = %self.plan.channel, "inactivity timeout while waiting to restart");
                    self.gone();
                    return false;
                }
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Stop(reply)) => {
                        finish(&self.inner, &self.plan);
                        let _ = reply.send(self.last.clone());
                        drain(&mut self.rx, &self.last);
                        return false;
                    }
                    None => {
                        self.gone();
                        return false;
                    }
                },
            }
        }
    }
}

/// `d` from now; `None` (never) when that is beyond what the clock can represent.
fn after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
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
    let timeout_at = begin.checked_add(proc_start_timeout(plan));
    let settle_at = match plan.ready {
        Ready::Settle => begin.checked_add(plan.settle),
        Ready::Notify => None,
    };
    let mut buf = [0u8; 4096];
    let mut notify_ok = true;
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
            r = recv_notice(&proc.notify, &mut buf), if notify_ok => match r {
                Ok((n, sender)) => {
                    if from_group(sender, proc.pid) && parse_notice(&buf[..n]).ready {
                        return Started::Ready;
                    }
                }
                Err(e) => notify_broken(plan, &e, &mut notify_ok),
            },
            cmd = rx.recv() => match cmd {
                Some(Command::Stop(reply)) => return Started::Stop(Some(reply)),
                None => return Started::Stop(None),
            },
            _ = maybe_sleep(*deadline) => if plan.idle(deadline) { return Started::Idle },
            _ = maybe_sleep(timeout_at) => return Started::NotReady,
        }
    }
}

/// A notify socket that fails is not polled again (instead of spinning on the error).
fn notify_broken(plan: &Plan, e: &std::io::Error, notify_ok: &mut bool) {
    tracing::warn!(channel = %plan.channel, "notify socket failed: {e}");
    *notify_ok = false;
}

/// The start timeout, never shorter than the settle time plus a margin (so a long `settle_ms`
/// cannot fail every start).
fn proc_start_timeout(plan: &Plan) -> Duration {
    let base = plan.start_timeout;
    match plan.ready {
        Ready::Settle => base.max(plan.settle.saturating_add(Duration::from_millis(500))),
        Ready::Notify => base,
    }
}

async fn running(
    plan: &Plan,
    proc: &mut Proc,
    rx: &mut mpsc::UnboundedReceiver<Command>,
    deadline: &mut Option<Instant>,
) -> Ended {
    let mut watchdog_at = plan.watchdog.and_then(after);
    let mut buf = [0u8; 4096];
    let mut notify_ok = true;
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
                Some(Command::Stop(reply)) => return Ended::Stop(Some(reply)),
                None => return Ended::Stop(None),
            },
            r = recv_notice(&proc.notify, &mut buf), if notify_ok => match r {
                Ok((n, sender)) => {
                    if !from_group(sender, proc.pid) {
                        continue;
                    }
                    let notice = parse_notice(&buf[..n]);
                    if notice.watchdog_trigger {
                        return Ended::Watchdog;
                    }
                    if notice.watchdog {
                        watchdog_at = plan.watchdog.and_then(after);
                    }
                }
                Err(e) => notify_broken(plan, &e, &mut notify_ok),
            },
            _ = maybe_sleep(*deadline) => if plan.idle(deadline) { return Ended::Idle },
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
    // Unset ones are removed too, so nothing leaks from agentd's own environment.
    match &settings.api_key {
        Some(key) => cmd.env("AGENTD_API_KEY", key),
        None => cmd.env_remove("AGENTD_API_KEY"),
    };
    cmd.env("AGENTD_WORKER_TOKEN", settings.worker_token.as_str());
    match &plan.chat_id {
        Some(chat) => cmd.env("AGENTD_CHAT_ID", chat),
        None => cmd.env_remove("AGENTD_CHAT_ID"),
    };
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
    // PR_SET_PDEATHSIG follows the forking thread: see `spawner`.
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
    let mut child = super::spawner::spawn(cmd).await.map_err(spawn_err)?;
    let pid = child.id().unwrap_or(0);
    let recorded = inner.records.add(Record {
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
        recorded,
    })
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
    while let Ok(Command::Stop(reply)) = rx.try_recv() {
        let _ = reply.send(out.clone());
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
