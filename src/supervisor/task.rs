//! The task that owns one channel's worker: it spawns each process, waits for it to be ready,
//! runs it (stop, exit, inactivity deadline, watchdog and memory limit are branches of one
//! `select!`), restarts it with backoff per its [`Plan`], and cleans up once the worker is gone
//! for good. Everyone else reaches it through the [`Command`] sender the registry keeps.
//!
//! One piece: the phases (wait for ready, run, back off) share the child and its plan, and
//! splitting them would only pass that state around.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};

use super::errors::StartError;
use super::ownership::Released;
use super::plan::{self, Plan, RESET_AFTER};
use super::records::{self, Record};
use super::registry::{Command, MemoryMax, WorkerInfo, WorkerState};
use super::spawn::{self, Forking, Proc};
use super::stop::{self, describe, StopOutcome};
use super::{Containment, Inner};
use crate::catalog::Ready;
use crate::contract::env;
use crate::contract::prewarm::Assignment;

/// Longest wait for a dead worker's output pipes to drain.
const PUMP_WAIT: Duration = Duration::from_secs(1);

/// What the `/start` caller is told: pid and worker id, or why not.
pub(super) type ReadyReply = oneshot::Sender<Result<(u32, String), StartError>>;

/// How the wait for readiness ended.
enum Started {
    Ready,
    Exited(ExitStatus),
    NotReady,
    Stop(Option<oneshot::Sender<StopOutcome>>),
    Idle,
    OverMemory { rss: u64, limit: u64 },
}

/// How a ready process's run ended.
enum Ended {
    Stop(Option<oneshot::Sender<StopOutcome>>),
    Idle,
    Exited(ExitStatus),
    Watchdog,
    OverMemory { rss: u64, limit: u64 },
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
    /// A `pids_max` that cannot be enforced has been reported.
    told_unenforced: bool,
    /// A prewarmed worker to adopt instead of spawning the first process.
    warm: Option<HandedOver>,
    /// The first process, handed to the spawner thread by the start (see [`Forking`]).
    forking: Option<Forking>,
}

/// Runs a channel's worker from spawn to gone for good.
pub(super) async fn run(
    inner: Arc<Inner>,
    plan: Plan,
    rx: mpsc::UnboundedReceiver<Command>,
    ready_tx: ReadyReply,
    warm: Option<HandedOver>,
    forking: Option<Forking>,
) {
    let mut task = Task {
        inner,
        plan,
        rx,
        ready_tx: Some(ready_tx),
        deadline: None,
        last: StopOutcome::from_status("not_started", None, Duration::ZERO),
        told_unenforced: false,
        warm,
        forking,
    };
    let mut consecutive = 0u32;
    loop {
        let (life, ran_for) = match task.spawn_and_run().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(channel = %task.plan.channel, "{e}");
                task.plan.log.note(&e.to_string()).await;
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
            Life::Failed(st) => {
                crate::observe::worker_crashed(&task.plan.graph);
                st
            }
        };
        if ran_for >= RESET_AFTER {
            consecutive = 0;
        }
        let plan = &task.plan;
        if !plan.restarts_after(consecutive) {
            tracing::error!(
                channel = %plan.channel, graph = %plan.graph, restarts = consecutive,
                "worker failed ({}); giving up", describe(&status)
            );
            plan.log
                .note(&format!("giving up after {consecutive} restarts"))
                .await;
            task.gone();
            return;
        }
        consecutive += 1;
        crate::observe::worker_restarted(&plan.graph);
        let delay = plan::backoff(consecutive);
        tracing::warn!(channel = %plan.channel, attempt = consecutive, delay_ms = delay.as_millis() as u64, "restarting the worker");
        plan.log
            .note(&format!(
                "restart {consecutive} in {} ms",
                delay.as_millis()
            ))
            .await;
        task.set(|i| {
            i.state = WorkerState::Restarting;
            i.pid = None;
            i.restarts += 1;
            i.containment = None;
            i.cgroup = None;
            i.memory_bytes = None;
            i.cpu_seconds = None;
        });
        if !task.backoff(delay).await {
            return;
        }
        task.set(|i| i.state = WorkerState::Starting);
    }
}

impl Task {
    fn set(&self, f: impl FnOnce(&mut WorkerInfo)) {
        self.inner
            .registry
            .update(&self.plan.channel, self.plan.generation, f);
    }

    /// Spawns one process and runs it to its end; also returns how long it ran.
    async fn spawn_and_run(&mut self) -> Result<(Life, Duration), StartError> {
        self.plan.log.clear_tail();
        let mut proc = match (self.warm.take(), self.forking.take()) {
            (Some(warm), _) => self.adopt(warm).await,
            (None, Some(forking)) => forking.finish(&self.inner, &self.plan).await?,
            (None, None) => spawn::spawn(&self.inner, &self.plan, None).await?,
        };
        let (pid, wid) = (proc.pid, proc.worker_id.clone());
        let cgroup = proc.hold.cgroup.as_ref().map(|c| c.dir().to_path_buf());
        let memory_max = self.plan.memory_max.map(|bytes| MemoryMax {
            bytes,
            by_kernel: proc.enforced.memory,
        });
        self.set(|i| {
            i.pid = Some(pid);
            i.worker_id = Some(wid);
            i.containment = Some(if cgroup.is_some() {
                Containment::Cgroup
            } else {
                Containment::ProcessGroup
            });
            i.cgroup = cgroup;
            i.memory_max = memory_max;
            i.memory_bytes = None;
            i.cpu_seconds = None;
        });
        if let Some(o) = self.inner.ownership.get() {
            o.spawned(&self.plan.channel, self.plan.generation, &proc.worker_id);
        }
        tracing::info!(channel = %self.plan.channel, graph = %self.plan.graph, pid, "worker spawned");
        self.tell_unenforced(&proc).await;
        let life = match wait_ready(&self.plan, &mut proc, &mut self.rx, &mut self.deadline).await {
            Started::Ready => {
                tracing::info!(channel = %self.plan.channel, pid, "worker ready");
                self.plan.log.note_soon(&format!("worker {pid} ready"));
                self.set(|i| i.state = WorkerState::Running);
                if let Some(tx) = self.ready_tx.take() {
                    // "Started" also means "findable": a kill -9 of agentd from now on leaves no
                    // part of this worker unswept. A worker in a cgroup is found by it (the
                    // start-up sweep kills every worker cgroup of this DATA_DIR's subtree); a
                    // process group only by its record, so the answer waits for the file.
                    if proc.hold.cgroup.is_none() {
                        self.inner.records.written(proc.recorded).await;
                    }
                    self.deadline = self.plan.next_deadline();
                    let _ = tx.send(Ok((pid, proc.worker_id.clone())));
                }
                let ended = running(&self.plan, &mut proc, &mut self.rx, &mut self.deadline).await;
                self.after_running(&mut proc, ended).await
            }
            Started::Stop(reply) => {
                self.shut(&mut proc, reply, false, "stopped before it was ready")
                    .await;
                Life::Over
            }
            Started::Idle => {
                self.shut(&mut proc, None, true, "inactivity timeout while restarting")
                    .await;
                Life::Over
            }
            Started::Exited(st) => {
                stop::reap(&proc.hold, Vec::new()).await;
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
                let how = self.plan.readiness();
                self.last = stop::stop(&mut proc.child, &proc.hold, Duration::ZERO).await;
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
            Started::OverMemory { rss, limit } => {
                let st = self.kill_over_memory(&mut proc, rss, limit).await;
                self.start_failed(
                    StartError::Exited {
                        status: format!(
                            "killed: {rss} bytes of memory, over runtime.memory_max ({limit})"
                        ),
                        output: self.plan.log.tail(),
                    },
                    st,
                )
            }
        };
        Ok((life, proc.started.elapsed()))
    }

    /// Makes a prewarmed worker this channel's once [`hand_over`] gave it its channel: its
    /// record goes under the channel, and the rest of its line, if the pipe could not take it
    /// all at once, goes to it (bounded by the start timeout, for a worker that stopped reading:
    /// it is then not ready in time). A worker that died meanwhile is noticed by the wait for
    /// readiness, like a cold one.
    ///
    /// Its group was recorded when it was prewarmed, and that record is what the start-up sweep
    /// kills by: the channel it now gets is written with the record's next rewrite, and the
    /// start does not wait for that (`proc.recorded` stays the prewarmed one's change).
    async fn adopt(&self, warm: HandedOver) -> Proc {
        use tokio::io::AsyncWriteExt;
        let HandedOver { mut proc, rest } = warm;
        let plan = &self.plan;
        self.inner.records.add(Record {
            channel: plan.channel.clone(),
            worker_id: proc.worker_id.clone(),
            pgid: proc.pid as i32,
            start_time: records::start_time(proc.pid as i32).unwrap_or(0),
            cgroup: proc.hold.cgroup.as_ref().map(|c| c.dir().to_path_buf()),
        });
        if let Some(mut stdin) = proc.child.stdin.take() {
            let written = tokio::time::timeout(plan.start_timeout(), stdin.write_all(&rest)).await;
            let failed = match written {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("it does not read its stdin".to_string()),
            };
            if let Some(e) = failed {
                tracing::warn!(channel = %plan.channel, pid = proc.pid, "cannot hand the prewarmed worker its channel: {e}");
            }
        }
        proc.started = Instant::now();
        plan.log
            .note_soon(&format!("prewarmed worker {} taken", proc.pid));
        proc
    }

    /// Says once per worker that its graph's `pids_max` cannot be enforced for this process.
    async fn tell_unenforced(&mut self, proc: &Proc) {
        let Some(max) = self.plan.pids_max.filter(|_| !proc.enforced.pids) else {
            return;
        };
        if std::mem::replace(&mut self.told_unenforced, true) {
            return;
        }
        tracing::warn!(
            channel = %self.plan.channel, graph = %self.plan.graph, pids_max = max,
            "runtime.pids_max is not enforced for this worker (no cgroup with a pids controller)"
        );
        self.plan
            .log
            .note(&format!("runtime.pids_max {max} is not enforced here"))
            .await;
    }

    /// Kills a process sampled over its `memory_max`, with the figures in both logs; its status.
    async fn kill_over_memory(&mut self, proc: &mut Proc, rss: u64, limit: u64) -> ExitStatus {
        let pid = proc.pid;
        tracing::warn!(
            channel = %self.plan.channel, pid, memory_bytes = rss, memory_max = limit,
            "worker over runtime.memory_max: killing it"
        );
        proc.hold.kill_now();
        let st = proc
            .child
            .wait()
            .await
            .unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL));
        stop::reap(&proc.hold, Vec::new()).await;
        self.end(
            proc,
            &format!("killed: {rss} bytes of memory, over runtime.memory_max ({limit} bytes)"),
        )
        .await;
        self.last = StopOutcome::from_status("killed", Some(st), Duration::ZERO);
        st
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
                self.shut(proc, reply, false, "stopped").await;
                Life::Over
            }
            Ended::Idle => {
                // The one info line of a reap is `shut`'s "worker stopped" (with how and took_ms).
                tracing::debug!(channel = %self.plan.channel, pid, "inactivity timeout: stopping the worker");
                self.shut(proc, None, true, "inactivity timeout").await;
                Life::Over
            }
            Ended::Exited(st) => {
                if st.success() {
                    tracing::info!(channel = %self.plan.channel, pid, "worker exited on its own: {}", describe(&st));
                } else {
                    tracing::warn!(channel = %self.plan.channel, pid, "worker exited on its own: {}", describe(&st));
                }
                let why = match self.oom_killed(proc) {
                    Some(limit) => {
                        tracing::warn!(channel = %self.plan.channel, pid, memory_max = limit, "the kernel killed the worker: over runtime.memory_max");
                        format!("killed by the kernel: over runtime.memory_max ({limit} bytes)")
                    }
                    None => format!("exited on its own ({})", describe(&st)),
                };
                stop::reap(&proc.hold, Vec::new()).await;
                self.end(proc, &why).await;
                self.last = StopOutcome::from_status("exited", Some(st), Duration::ZERO);
                if st.success() {
                    Life::Clean
                } else {
                    Life::Failed(st)
                }
            }
            Ended::Watchdog => {
                tracing::warn!(channel = %self.plan.channel, pid, "watchdog: no WATCHDOG=1 in time, killing the worker");
                proc.hold.kill_now();
                let st = proc
                    .child
                    .wait()
                    .await
                    .unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL));
                stop::reap(&proc.hold, Vec::new()).await;
                self.end(proc, "killed by the watchdog").await;
                self.last = StopOutcome::from_status("killed", Some(st), Duration::ZERO);
                Life::Failed(st)
            }
            Ended::OverMemory { rss, limit } => {
                Life::Failed(self.kill_over_memory(proc, rss, limit).await)
            }
        }
    }

    /// The kernel's limit, when its OOM killer ended this process for being over it.
    fn oom_killed(&self, proc: &Proc) -> Option<u64> {
        let cg = proc.hold.cgroup.as_ref().filter(|_| proc.enforced.memory)?;
        (cg.oom_kills() > 0)
            .then_some(self.plan.memory_max)
            .flatten()
    }

    /// Stops a live process for good and answers the stop that asked for it.
    async fn shut(
        &mut self,
        proc: &mut Proc,
        reply: Option<oneshot::Sender<StopOutcome>>,
        idle: bool,
        why: &str,
    ) {
        self.set(|i| i.state = WorkerState::Stopping);
        let began = Instant::now();
        let out = stop::terminate(&mut proc.child, &proc.hold, self.plan.stop_grace).await;
        crate::observe::worker_stopped(&self.plan.graph, idle, began.elapsed());
        if reply.is_none() {
            // A stop someone asked for is logged by `Supervisor::stop`, which knows who.
            tracing::info!(channel = %self.plan.channel, by = why, how = out.how, took_ms = out.took_ms, "worker stopped");
        }
        self.end(proc, &format!("{why} ({})", out.how)).await;
        self.last = out.clone();
        let released = self.finish();
        // Gone (its cgroup empty) is told first; the empty cgroup goes before any answer.
        proc.hold.remove_cgroup();
        if let Some(released) = released {
            released.await;
        }
        if let Some(tx) = self.ready_tx.take() {
            let _ = tx.send(Err(StartError::StoppedDuringStart));
        }
        if let Some(r) = reply {
            let _ = r.send(out);
        }
        self.drain();
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
        self.plan
            .log
            .note(&format!("worker {} {why}", proc.pid))
            .await;
    }

    /// The first start failed: release everything, then tell the `/start` caller.
    fn fail_start(&mut self, err: StartError) {
        let released = self.finish();
        let tx = self.ready_tx.take();
        match released {
            // The caller hears of the failure once the channel is given back (a retry on
            // another node must not find it taken).
            Some(r) => {
                self.inner.rt.spawn(async move {
                    r.await;
                    if let Some(tx) = tx {
                        let _ = tx.send(Err(err));
                    }
                });
            }
            None => {
                if let Some(tx) = tx {
                    let _ = tx.send(Err(err));
                }
            }
        }
        self.drain();
    }

    /// No process runs and none will: the worker is gone for good.
    fn gone(&mut self) {
        if let Some(released) = self.finish() {
            self.inner.rt.spawn(released);
        }
        self.drain();
    }

    /// The worker leaves the registry and its property file goes; with several nodes, the
    /// giving back of its channel, to await or spawn.
    #[must_use]
    fn finish(&self) -> Option<Released> {
        self.inner
            .registry
            .release(&self.plan.channel, self.plan.generation);
        self.plan.remove_property_file();
        self.inner
            .ownership
            .get()
            .map(|o| o.released(&self.plan.channel, self.plan.generation))
    }

    /// Answers the stops that raced with the end of the worker.
    fn drain(&mut self) {
        self.rx.close();
        while let Ok(cmd) = self.rx.try_recv() {
            if let Command::Stop(reply) = cmd {
                let _ = reply.send(self.last.clone());
            }
        }
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
                        if let Some(released) = self.finish() {
                            released.await;
                        }
                        let _ = reply.send(self.last.clone());
                        self.drain();
                        return false;
                    }
                    // About a process that is gone already.
                    Some(Command::OverMemory { .. }) => {}
                    None => {
                        self.gone();
                        return false;
                    }
                },
            }
        }
    }
}

/// A prewarmed worker given its channel by [`hand_over`], for its task to adopt.
pub(super) struct HandedOver {
    proc: Proc,
    /// What of the assignment line the pipe did not take at once (its stdin is kept for it).
    rest: Vec<u8>,
}

/// Gives a prewarmed worker its channel (see [`crate::contract::prewarm`]) without waiting, so
/// that it works on it while its task starts: its output goes to the channel's log from now on,
/// and the channel's variables go to its stdin, as far as the pipe takes them at once (all of a
/// usual line); its task writes the rest.
pub(super) fn hand_over(plan: &Plan, mut proc: Proc) -> HandedOver {
    proc.route.set(plan.log.clone());
    let mut a = Assignment::default();
    for (k, v) in plan.extra_env.iter().filter(|(k, _)| !env::is_own(k)) {
        a.env.insert(k.clone(), v.clone());
    }
    a.env.insert(env::CHANNEL.into(), plan.channel.clone());
    for (k, v) in [
        (env::REQUEST_ID, &plan.request_id),
        (env::CHAT_ID, &plan.chat_id),
    ] {
        if let Some(v) = v {
            a.env.insert(k.into(), v.clone());
        }
    }
    let line = a.to_line();
    let mut sent = 0;
    if let Some(stdin) = &proc.child.stdin {
        while sent < line.len() {
            match stdin.try_write(&line[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Full (or not known to be writable yet): the task waits for it. Any other
                // error is the task's to report, once.
                Err(_) => break,
            }
        }
    }
    if sent == line.len() {
        // End of file after the line: nothing more comes.
        drop(proc.child.stdin.take());
    }
    HandedOver {
        proc,
        rest: line[sent..].to_vec(),
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

/// A notify socket that fails is not polled again (instead of spinning on the error).
fn notify_broken(plan: &Plan, e: &std::io::Error, notify_ok: &mut bool) {
    tracing::warn!(channel = %plan.channel, "notify socket failed: {e}");
    *notify_ok = false;
}

/// Waits until the process is ready by its plan (`READY=1`, or alive for the settle time), or
/// until something else happens first.
async fn wait_ready(
    plan: &Plan,
    proc: &mut Proc,
    rx: &mut mpsc::UnboundedReceiver<Command>,
    deadline: &mut Option<Instant>,
) -> Started {
    let begin = Instant::now();
    let timeout_at = begin.checked_add(plan.start_timeout());
    let settle_at = match plan.ready {
        Ready::Settle => begin.checked_add(plan.settle),
        Ready::Notify => None,
    };
    let pgid = proc.pid;
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
            r = proc.notify.next(pgid), if notify_ok => match r {
                Ok(notice) if notice.ready => return Started::Ready,
                Ok(_) => {}
                Err(e) => notify_broken(plan, &e, &mut notify_ok),
            },
            cmd = rx.recv() => match cmd {
                Some(Command::Stop(reply)) => return Started::Stop(Some(reply)),
                Some(Command::OverMemory { pid, rss, limit }) if pid == proc.pid => {
                    return Started::OverMemory { rss, limit }
                }
                Some(Command::OverMemory { .. }) => {}
                None => return Started::Stop(None),
            },
            _ = maybe_sleep(*deadline) => if plan.idle(deadline) { return Started::Idle },
            _ = maybe_sleep(timeout_at) => return Started::NotReady,
        }
    }
}

/// Runs a ready process until it is stopped, exits, goes idle or misses its watchdog.
async fn running(
    plan: &Plan,
    proc: &mut Proc,
    rx: &mut mpsc::UnboundedReceiver<Command>,
    deadline: &mut Option<Instant>,
) -> Ended {
    let mut watchdog_at = plan.watchdog.and_then(after);
    let pgid = proc.pid;
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
                Some(Command::OverMemory { pid, rss, limit }) if pid == proc.pid => {
                    return Ended::OverMemory { rss, limit }
                }
                Some(Command::OverMemory { .. }) => {}
                None => return Ended::Stop(None),
            },
            r = proc.notify.next(pgid), if notify_ok => match r {
                Ok(notice) if notice.watchdog_trigger => return Ended::Watchdog,
                Ok(notice) if notice.watchdog => watchdog_at = plan.watchdog.and_then(after),
                Ok(_) => {}
                Err(e) => notify_broken(plan, &e, &mut notify_ok),
            },
            _ = maybe_sleep(*deadline) => if plan.idle(deadline) { return Ended::Idle },
            _ = maybe_sleep(watchdog_at) => return Ended::Watchdog,
        }
    }
}
