//! Who runs where right now: one slot per channel with the worker's description, the sender of
//! its task's commands, its generation, its ping clock and its log. Every read and change takes
//! one short lock; nothing here awaits, spawns or touches a process. Each change of a
//! description is announced, under that lock, to whoever [watches](Registry::watch).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::errors::{ChannelError, StartError};
use super::logs::LogSink;
use super::stop::StopOutcome;
use super::Containment;
use crate::catalog::Timeout;

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    Starting,
    Running,
    Stopping,
    Restarting,
}

/// A description of one worker (what `/list` shows).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerInfo {
    pub channel: String,
    pub graph: String,
    pub pid: Option<u32>,
    pub worker_id: Option<String>,
    pub state: WorkerState,
    pub created: SystemTime,
    pub last_ping: SystemTime,
    pub timeout: Timeout,
    pub restarts: u32,
    pub request_id: Option<String>,
    pub chat_id: Option<String>,
    /// How the current process is contained; `None` while no process runs.
    pub containment: Option<Containment>,
    /// The current process's cgroup.
    pub cgroup: Option<PathBuf>,
    /// Resident memory of the current process and everything it started, in bytes, as last
    /// sampled.
    pub memory_bytes: Option<u64>,
    /// CPU time of the current process and everything it started, in seconds, as last sampled.
    pub cpu_seconds: Option<f64>,
    /// The graph's `runtime.memory_max`, and how it is enforced for the current process.
    pub memory_max: Option<MemoryMax>,
}

/// A worker's memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMax {
    pub bytes: u64,
    /// By the kernel (the cgroup's `memory.max`) rather than by agentd's sampler.
    pub by_kernel: bool,
}

impl WorkerInfo {
    /// The TEN-compatible JSON of a `/list` entry.
    pub fn to_json(&self) -> Value {
        let rfc = |t: SystemTime| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        serde_json::json!({
            "channel_name": self.channel,
            "channelName": self.channel,
            "graph_name": self.graph,
            "pid": self.pid,
            "worker_id": self.worker_id,
            "state": self.state,
            "created_at": rfc(self.created),
            "createTs": secs(self.created),
            "last_ping_at": rfc(self.last_ping),
            "timeout": timeout_secs(self.timeout),
            "restarts": self.restarts,
            "request_id": self.request_id,
            "chat_id": self.chat_id,
            "containment": self.containment.map(Containment::as_str),
            "cgroup": self.cgroup.as_ref().map(|c| c.display().to_string()),
            "memory_bytes": self.memory_bytes,
            "cpu_seconds": self.cpu_seconds,
            "memory_max": self.memory_max.map(|m| m.bytes),
            "memory_max_enforced_by": self.memory_max.map(|m| if m.by_kernel { "kernel" } else { "agentd" }),
        })
    }
}

/// The wire form of a timeout: seconds, or -1 for never.
pub fn timeout_secs(t: Timeout) -> i64 {
    match t {
        Timeout::Never => -1,
        Timeout::Seconds(s) => i64::try_from(s).unwrap_or(i64::MAX),
    }
}

/// A change of the registry, as announced to its watchers.
#[derive(Debug, Clone)]
pub enum WorkerChange {
    /// A channel was taken: its worker is starting.
    Started(WorkerInfo),
    /// The description changed: state, pid, worker id, chat, or a ping.
    Changed(WorkerInfo),
    /// The worker failed and waits to be restarted (`restarts` went up, `state` is
    /// `restarting`).
    Restarted(WorkerInfo),
    /// The worker is gone for good (stopped, idle, given up, or its start failed); its last
    /// description.
    Gone(WorkerInfo),
}

/// Changes buffered per watcher; one that falls further behind is told it lagged and takes a
/// new snapshot.
const WATCH_BUFFER: usize = 256;

/// A message to the task that owns a worker ([`super::task`]).
#[derive(Debug)]
pub(super) enum Command {
    /// Stop the worker for good and answer with how it ended.
    Stop(oneshot::Sender<StopOutcome>),
    /// The process `pid` was sampled at `rss` bytes, over its `runtime.memory_max` of `limit`.
    OverMemory { pid: u32, rss: u64, limit: u64 },
}

/// A worker process to sample ([`super::usage`]).
pub(super) struct Target {
    pub channel: String,
    pub generation: u64,
    pub pid: u32,
    pub cgroup: Option<PathBuf>,
    /// The memory limit agentd enforces itself (the kernel does not).
    pub memory_max: Option<u64>,
    pub tx: Option<mpsc::UnboundedSender<Command>>,
}

/// One sample of a worker process.
pub(super) struct Sample {
    pub channel: String,
    pub generation: u64,
    pub pid: u32,
    pub memory_bytes: u64,
    pub cpu_seconds: f64,
}

/// When a channel was last pinged, shared by the registry (which writes it on `/ping`) and the
/// worker's task (which reads it when its inactivity timer fires). A ping is one atomic store: it
/// never wakes the task; the task re-arms its timer from the latest ping when it fires.
#[derive(Debug, Default)]
pub(crate) struct PingClock(std::sync::atomic::AtomicU64);

/// The monotonic origin of [`PingClock`] readings.
fn clock_base() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

impl PingClock {
    pub(crate) fn touch(&self) {
        let ms = clock_base().elapsed().as_millis() as u64;
        self.0.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// The instant of the last ping (or [`touch`](Self::touch)).
    pub(crate) fn last(&self) -> Instant {
        clock_base() + Duration::from_millis(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

struct Slot {
    /// Tells this worker from a later one of the same channel: whoever releases or updates a
    /// slot names the generation it holds, so a late one never touches its successor.
    generation: u64,
    /// `None` while reserved and not yet launched.
    tx: Option<mpsc::UnboundedSender<Command>>,
    pings: Arc<PingClock>,
    log: Arc<LogSink>,
    info: WorkerInfo,
}

#[derive(Default)]
struct Slots {
    by_channel: HashMap<String, Slot>,
    next_generation: u64,
    shutting_down: bool,
}

/// The limits a reservation is checked against.
pub(super) struct Limits {
    pub workers_max: usize,
    /// The graph's `runtime.max_workers`.
    pub graph_max: Option<usize>,
}

/// A reserved slot: its generation and ping clock.
pub(super) struct Reserved {
    pub generation: u64,
    pub pings: Arc<PingClock>,
}

/// Every worker slot, behind one lock.
pub(crate) struct Registry {
    slots: Mutex<Slots>,
    /// Sent to under the slots' lock, so a watcher's snapshot and its changes never overlap.
    changes: broadcast::Sender<WorkerChange>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            slots: Mutex::default(),
            changes: broadcast::channel(WATCH_BUFFER).0,
        }
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        // A panic while holding the lock cannot leave the map half-edited (single inserts and
        // removes), so a poisoned lock is still usable.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Announces a change; call with the slots' lock held. Nothing is built when nobody
    /// watches, which is most of the time (pings stay one lookup and a store).
    fn announce(&self, change: impl FnOnce() -> WorkerChange) {
        if self.changes.receiver_count() > 0 {
            let _ = self.changes.send(change());
        }
    }

    /// Every worker now, and every change after that moment.
    pub(super) fn watch(&self) -> (Vec<WorkerInfo>, broadcast::Receiver<WorkerChange>) {
        let slots = self.lock();
        let rx = self.changes.subscribe();
        (sorted(&slots), rx)
    }

    /// The log of `channel`'s worker.
    pub(super) fn log(&self, channel: &str) -> Result<Arc<LogSink>, ChannelError> {
        self.lock()
            .by_channel
            .get(channel)
            .map(|s| s.log.clone())
            .ok_or_else(|| ChannelError::NotFound(channel.to_string()))
    }

    pub fn is_shutting_down(&self) -> bool {
        self.lock().shutting_down
    }

    /// The atomic part of a start: the channel, the global and the per-graph slots are checked
    /// and taken under one lock.
    pub(super) fn reserve(
        &self,
        info: WorkerInfo,
        limits: Limits,
        log: Arc<LogSink>,
    ) -> Result<Reserved, StartError> {
        let mut slots = self.lock();
        if slots.shutting_down {
            return Err(StartError::ShuttingDown);
        }
        if slots.by_channel.contains_key(&info.channel) {
            return Err(StartError::ChannelExists(info.channel));
        }
        if slots.by_channel.len() >= limits.workers_max {
            return Err(StartError::WorkersLimit {
                max: limits.workers_max,
            });
        }
        if let Some(max) = limits.graph_max {
            let n = slots
                .by_channel
                .values()
                .filter(|s| s.info.graph == info.graph)
                .count();
            if n >= max {
                return Err(StartError::GraphLimit {
                    graph: info.graph,
                    max,
                });
            }
        }
        slots.next_generation += 1;
        let generation = slots.next_generation;
        let pings = Arc::new(PingClock::default());
        self.announce(|| WorkerChange::Started(info.clone()));
        slots.by_channel.insert(
            info.channel.clone(),
            Slot {
                generation,
                tx: None,
                pings: pings.clone(),
                log,
                info,
            },
        );
        Ok(Reserved { generation, pings })
    }

    /// Gives a reserved slot its task's sender; false when the slot is gone or agentd is
    /// shutting down (nothing may be launched then).
    pub(super) fn attach(
        &self,
        channel: &str,
        generation: u64,
        tx: mpsc::UnboundedSender<Command>,
    ) -> bool {
        let mut slots = self.lock();
        if slots.shutting_down {
            return false;
        }
        match slots
            .by_channel
            .get_mut(channel)
            .filter(|s| s.generation == generation)
        {
            Some(slot) => {
                slot.tx = Some(tx);
                true
            }
            None => false,
        }
    }

    /// Updates the description of the worker `generation` of `channel`, if it is still that one.
    pub(super) fn update(&self, channel: &str, generation: u64, f: impl FnOnce(&mut WorkerInfo)) {
        let mut slots = self.lock();
        let Some(slot) = slots
            .by_channel
            .get_mut(channel)
            .filter(|s| s.generation == generation)
        else {
            return;
        };
        let before = slot.info.clone();
        f(&mut slot.info);
        let info = &slot.info;
        if *info != before {
            self.announce(|| {
                if info.restarts > before.restarts {
                    WorkerChange::Restarted(info.clone())
                } else {
                    WorkerChange::Changed(info.clone())
                }
            });
        }
    }

    /// Forgets the worker `generation` of `channel`; a newer worker of the channel is untouched.
    pub(super) fn release(&self, channel: &str, generation: u64) {
        let mut slots = self.lock();
        if slots
            .by_channel
            .get(channel)
            .is_some_and(|s| s.generation == generation)
        {
            if let Some(slot) = slots.by_channel.remove(channel) {
                self.announce(|| WorkerChange::Gone(slot.info));
            }
        }
    }

    /// Records a ping of `channel`; its timeout on success.
    pub(super) fn ping(&self, channel: &str) -> Result<Timeout, ChannelError> {
        let mut slots = self.lock();
        let slot = slots
            .by_channel
            .get_mut(channel)
            .ok_or_else(|| ChannelError::NotFound(channel.to_string()))?;
        if slot.info.state == WorkerState::Stopping {
            return Err(ChannelError::NotFound(channel.to_string()));
        }
        slot.info.last_ping = SystemTime::now();
        slot.pings.touch();
        let info = &slot.info;
        self.announce(|| WorkerChange::Changed(info.clone()));
        Ok(info.timeout)
    }

    /// The command sender of the task that runs `channel`'s worker.
    pub(super) fn sender(
        &self,
        channel: &str,
    ) -> Result<mpsc::UnboundedSender<Command>, ChannelError> {
        let slots = self.lock();
        let slot = slots
            .by_channel
            .get(channel)
            .ok_or_else(|| ChannelError::NotFound(channel.to_string()))?;
        // A slot without a sender is reserved and not yet launched: nothing runs to command.
        slot.tx
            .clone()
            .ok_or_else(|| ChannelError::NotFound(channel.to_string()))
    }

    /// Every worker, ordered by channel.
    pub(super) fn list(&self) -> Vec<WorkerInfo> {
        sorted(&self.lock())
    }

    pub(super) fn get(&self, channel: &str) -> Option<WorkerInfo> {
        self.lock().by_channel.get(channel).map(|s| s.info.clone())
    }

    /// Refuses every later reservation and launch; returns the senders of the running tasks.
    pub(super) fn close(&self) -> Vec<(String, mpsc::UnboundedSender<Command>)> {
        let mut slots = self.lock();
        slots.shutting_down = true;
        slots
            .by_channel
            .iter()
            .filter_map(|(channel, s)| Some((channel.clone(), s.tx.clone()?)))
            .collect()
    }

    /// Like [`close`](Self::close), returning the pids (process groups) and cgroups of the live
    /// workers.
    pub(super) fn close_for_kill(&self) -> Vec<(u32, Option<PathBuf>)> {
        let mut slots = self.lock();
        slots.shutting_down = true;
        slots
            .by_channel
            .values()
            .filter_map(|s| Some((s.info.pid?, s.info.cgroup.clone())))
            .collect()
    }

    /// Every worker process now running, for the sampler.
    pub(super) fn targets(&self) -> Vec<Target> {
        self.lock()
            .by_channel
            .iter()
            .filter_map(|(channel, s)| {
                Some(Target {
                    channel: channel.clone(),
                    generation: s.generation,
                    pid: s.info.pid?,
                    cgroup: s.info.cgroup.clone(),
                    memory_max: s.info.memory_max.filter(|m| !m.by_kernel).map(|m| m.bytes),
                    tx: s.tx.clone(),
                })
            })
            .collect()
    }

    /// Records samples, each only if its process is still the worker's current one.
    pub(super) fn record(&self, samples: Vec<Sample>) {
        let mut slots = self.lock();
        for x in samples {
            if let Some(slot) = slots.by_channel.get_mut(&x.channel) {
                if slot.generation == x.generation && slot.info.pid == Some(x.pid) {
                    slot.info.memory_bytes = Some(x.memory_bytes);
                    slot.info.cpu_seconds = Some(x.cpu_seconds);
                }
            }
        }
    }
}

/// Every worker's description, ordered by channel.
fn sorted(slots: &Slots) -> Vec<WorkerInfo> {
    let mut v: Vec<WorkerInfo> = slots.by_channel.values().map(|s| s.info.clone()).collect();
    v.sort_by(|a, b| a.channel.cmp(&b.channel));
    v
}
