//! The supervisor: starts, pings, stops and reaps agent worker processes (issue 2).
//!
//! Each worker is owned by one tokio task ([`worker`]) that holds its `Child`; stop, ping, exit,
//! the inactivity deadline and the watchdog are branches of one `select!` there. Everyone else
//! talks to it through the registry below, which holds only descriptions and a command sender.
//! The channel, `WORKERS_MAX` and per-graph slots are reserved under one lock before anything is
//! spawned.

pub mod document;
pub mod errors;
pub mod logs;
pub mod placeholder;
pub mod records;
mod spawner;
mod stop;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::catalog::watch::CatalogHandle;
use crate::catalog::{Graph, Ready, Timeout};
use crate::settings::Settings;

pub use errors::{ChannelError, StartError};
pub use stop::StopOutcome;

/// Longest accepted channel name, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 128;

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What to start: TEN's `/start` body, already typed, plus what agentd's own callers add.
#[derive(Debug, Clone, Default)]
pub struct StartSpec {
    pub channel: String,
    pub graph: String,
    pub request_id: Option<String>,
    /// Per node name, a JSON Merge Patch for that node's `property`.
    pub properties: Option<Map<String, Value>>,
    pub user_uid: Option<u32>,
    pub bot_uid: Option<u32>,
    pub token: Option<String>,
    /// `None` or `Some(0)`: the default; positive: seconds; `-1`: never.
    pub timeout: Option<i64>,
    /// Given to the child as `AGENTD_CHAT_ID`.
    pub chat_id: Option<String>,
    /// More environment for the child (cannot override agentd's own `AGENTD_*`/notify variables).
    pub extra_env: Vec<(String, String)>,
}

/// A worker that is up.
#[derive(Debug, Clone, Serialize)]
pub struct StartedWorker {
    pub channel_name: String,
    pub graph_name: String,
    pub pid: u32,
    pub worker_id: String,
    /// Seconds of inactivity before the worker is stopped; `-1` means never.
    pub timeout: i64,
    pub chat_id: Option<String>,
    pub request_id: Option<String>,
}

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
#[derive(Debug, Clone)]
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

/// A message to a worker's owning task.
#[derive(Debug)]
enum Command {
    Stop(oneshot::Sender<StopOutcome>),
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
    generation: u64,
    tx: Option<mpsc::UnboundedSender<Command>>,
    pings: Arc<PingClock>,
    info: WorkerInfo,
}

#[derive(Default)]
struct Registry {
    slots: HashMap<String, Slot>,
    next_generation: u64,
    shutting_down: bool,
}

pub(crate) struct Inner {
    settings: Arc<Settings>,
    catalog: CatalogHandle,
    base_url: String,
    registry: Mutex<Registry>,
    records: Arc<records::Records>,
    /// Per-worker property files.
    run_dir: PathBuf,
    /// agentd's main runtime: worker tasks run there, not on the HTTP workers' runtimes.
    rt: tokio::runtime::Handle,
    /// Told the `AGENTD_WORKER_ID` of every worker process once it and its group are gone.
    gone_hook: std::sync::OnceLock<GoneHook>,
    /// Worker ids of the previous agentd's workers, all gone by the start-up sweep.
    leftovers: Mutex<Vec<String>>,
}

/// See [`Supervisor::on_worker_gone`].
pub(crate) type GoneHook = Box<dyn Fn(&str) + Send + Sync>;

impl Inner {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the map half-edited (single inserts and
        // removes), so a poisoned lock is still usable.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Updates the description of the worker `generation` of `channel`, if it is still that one.
    fn update(&self, channel: &str, generation: u64, f: impl FnOnce(&mut WorkerInfo)) {
        if let Some(slot) = self.registry().slots.get_mut(channel) {
            if slot.generation == generation {
                f(&mut slot.info);
            }
        }
    }

    /// Forgets the worker `generation` of `channel`; a newer worker of the channel is untouched.
    fn release(&self, channel: &str, generation: u64) {
        let mut reg = self.registry();
        if reg
            .slots
            .get(channel)
            .is_some_and(|s| s.generation == generation)
        {
            reg.slots.remove(channel);
        }
    }
}

/// Cheap handle to the supervisor.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

/// A reserved channel and worker slot, ready to be launched. Dropping it releases the slot.
pub struct Reservation {
    inner: Arc<Inner>,
    generation: u64,
    pings: Arc<PingClock>,
    spec: StartSpec,
    graph: Arc<Graph>,
    doc: Value,
    timeout: Timeout,
    launched: bool,
}

impl Reservation {
    /// Sets the chat id given to the child as `AGENTD_CHAT_ID`.
    pub fn set_chat_id(&mut self, chat_id: String) {
        self.inner.update(&self.spec.channel, self.generation, |i| {
            i.chat_id = Some(chat_id.clone())
        });
        self.spec.chat_id = Some(chat_id);
    }

    pub fn channel(&self) -> &str {
        &self.spec.channel
    }

    pub fn graph_name(&self) -> &str {
        &self.graph.name
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.launched {
            self.inner.release(&self.spec.channel, self.generation);
        }
    }
}

/// Checks a channel name from a request: blank, too long, or with control characters.
pub fn check_channel(channel: &str) -> Result<(), ChannelError> {
    if channel.trim().is_empty() {
        return Err(ChannelError::Blank);
    }
    if channel.len() > MAX_CHANNEL_BYTES {
        return Err(ChannelError::BadParams(format!(
            "channel_name is longer than {MAX_CHANNEL_BYTES} bytes"
        )));
    }
    if channel.chars().any(char::is_control) {
        return Err(ChannelError::BadParams(
            "channel_name contains control characters".into(),
        ));
    }
    Ok(())
}

impl Supervisor {
    /// Creates the supervisor; kills leftover worker groups recorded in `DATA_DIR`.
    pub async fn new(
        settings: Arc<Settings>,
        catalog: CatalogHandle,
        base_url: String,
    ) -> Result<Supervisor, SupervisorError> {
        std::fs::create_dir_all(&settings.data_dir)?;
        let run_dir = settings.data_dir.join("run");
        std::fs::create_dir_all(&run_dir)?;
        if !settings.keep_property_files {
            // Files of workers of a previous agentd that did not get to clean up.
            if let Ok(entries) = std::fs::read_dir(&run_dir) {
                for e in entries.filter_map(Result::ok) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if !settings.log_stdout {
            std::fs::create_dir_all(&settings.log_path)?;
        }
        // Orphaned grandchildren of a worker are re-parented to agentd, so that stopping a
        // worker can reap its whole group and leave no zombies behind.
        // SAFETY: prctl with integer arguments.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        let records = Arc::new(records::Records::new(&settings.data_dir));
        let leftovers = records.sweep().await?;
        tokio::spawn(records.clone().run_writer());
        let rt = tokio::runtime::Handle::current();
        spawner::init(rt.clone());
        Ok(Supervisor {
            inner: Arc::new(Inner {
                settings,
                catalog,
                base_url,
                registry: Mutex::new(Registry::default()),
                records,
                run_dir,
                rt,
                gone_hook: std::sync::OnceLock::new(),
                leftovers: Mutex::new(leftovers),
            }),
        })
    }

    /// Registers what to do when a worker process is gone for good (exit, stop, crash, kill);
    /// called with its `AGENTD_WORKER_ID`. The chat store uses it to hand the worker's leases back
    /// at once. Only the first registration counts.
    pub fn on_worker_gone(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.inner.gone_hook.set(Box::new(hook));
    }

    /// The worker ids of a previous agentd's workers (killed with it or by the start-up sweep),
    /// once: what they held, such as dispatch leases, can be handed back at once.
    pub fn take_leftover_workers(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .inner
                .leftovers
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.registry().shutting_down
    }

    /// Validates `spec` and reserves its channel and worker slots; nothing is spawned yet.
    pub fn reserve(&self, spec: StartSpec) -> Result<Reservation, StartError> {
        let inner = &self.inner;
        let settings = &inner.settings;
        if inner.registry().shutting_down {
            return Err(StartError::ShuttingDown);
        }
        check_channel(&spec.channel).map_err(|e| match e {
            ChannelError::Blank => StartError::BlankChannel,
            other => StartError::BadParams(other.to_string()),
        })?;
        if spec.graph.trim().is_empty() {
            return Err(StartError::BadParams("graph_name is empty".into()));
        }
        let catalog = inner.catalog.current();
        let graph = catalog
            .get(&spec.graph)
            .cloned()
            .ok_or_else(|| StartError::UnknownGraph(spec.graph.clone()))?;
        let timeout = match spec.timeout {
            None | Some(0) => graph
                .runtime
                .timeout
                .unwrap_or(Timeout::Seconds(settings.worker_quit_timeout_secs)),
            Some(-1) => Timeout::Never,
            Some(n) if n > 0 => Timeout::Seconds(n as u64),
            Some(n) => return Err(StartError::BadTimeout(n)),
        };
        if graph.runtime.command.is_none() && settings.worker_command.is_none() {
            let known: Vec<String> = crate::worker::KNOWN_ADDONS
                .iter()
                .map(|s| s.to_string())
                .collect();
            if let Some((node, addon)) = graph
                .addons()
                .into_iter()
                .find(|(_, addon)| !known.contains(addon))
            {
                return Err(StartError::UnknownAddon {
                    graph: graph.name.clone(),
                    node,
                    addon,
                    known,
                });
            }
        }
        let doc = document::build(&catalog, &graph, &spec)?;
        let ours = worker::OWN_ENV;
        let missing: Vec<String> = document::node_properties(&doc, graph.layout)
            .into_iter()
            .flat_map(|p| {
                placeholder::missing(p, |var| {
                    if ours.contains(&var) {
                        return Some(String::new());
                    }
                    spec.extra_env
                        .iter()
                        .rev()
                        .find(|(k, _)| k == var)
                        .map(|(_, v)| v.clone())
                        .or_else(|| std::env::var(var).ok())
                })
            })
            .collect();
        if !missing.is_empty() {
            let mut vars = missing;
            vars.sort();
            vars.dedup();
            return Err(StartError::MissingEnv {
                graph: graph.name.clone(),
                vars,
            });
        }

        // The atomic part: channel, global and per-graph slots under one lock.
        let mut reg = inner.registry();
        if reg.shutting_down {
            return Err(StartError::ShuttingDown);
        }
        if reg.slots.contains_key(&spec.channel) {
            return Err(StartError::ChannelExists(spec.channel.clone()));
        }
        if reg.slots.len() >= settings.workers_max {
            return Err(StartError::WorkersLimit {
                max: settings.workers_max,
            });
        }
        if let Some(max) = graph.runtime.max_workers {
            let n = reg
                .slots
                .values()
                .filter(|s| s.info.graph == graph.name)
                .count();
            if n >= max {
                return Err(StartError::GraphLimit {
                    graph: graph.name.clone(),
                    max,
                });
            }
        }
        reg.next_generation += 1;
        let generation = reg.next_generation;
        let now = SystemTime::now();
        let pings = Arc::new(PingClock::default());
        reg.slots.insert(
            spec.channel.clone(),
            Slot {
                generation,
                tx: None,
                pings: pings.clone(),
                info: WorkerInfo {
                    channel: spec.channel.clone(),
                    graph: graph.name.clone(),
                    pid: None,
                    worker_id: None,
                    state: WorkerState::Starting,
                    created: now,
                    last_ping: now,
                    timeout,
                    restarts: 0,
                    request_id: spec.request_id.clone(),
                    chat_id: spec.chat_id.clone(),
                },
            },
        );
        drop(reg);
        Ok(Reservation {
            inner: self.inner.clone(),
            generation,
            pings,
            spec,
            graph,
            doc,
            timeout,
            launched: false,
        })
    }

    /// Writes the per-worker file, spawns the worker and answers once it is ready (or gone).
    pub async fn launch(&self, mut res: Reservation) -> Result<StartedWorker, StartError> {
        let inner = self.inner.clone();
        let channel = res.spec.channel.clone();
        let stem = logs::safe_stem(&channel);
        let property_path = inner
            .run_dir
            .join(format!("property-{stem}-{}.json", res.generation));
        write_private(&property_path, &res.doc)
            .await
            .map_err(|source| StartError::PropertyFile {
                path: property_path.display().to_string(),
                source,
            })?;

        let (tx, rx) = mpsc::unbounded_channel();
        let registered = {
            let mut reg = inner.registry();
            let shutting = reg.shutting_down;
            match reg
                .slots
                .get_mut(&channel)
                .filter(|s| s.generation == res.generation)
            {
                Some(slot) if !shutting => {
                    slot.tx = Some(tx);
                    true
                }
                _ => false,
            }
        };
        if !registered {
            remove_property_file(&inner.settings, &property_path);
            return Err(StartError::ShuttingDown);
        }
        res.launched = true;

        let plan = plan(&inner.settings, &mut res, property_path);
        let graph = res.graph.clone();
        let (ready_tx, ready_rx) = oneshot::channel();
        inner
            .rt
            .spawn(worker::run(inner.clone(), plan, rx, ready_tx));
        let started = ready_rx
            .await
            .unwrap_or(Err(StartError::StoppedDuringStart))?;
        Ok(StartedWorker {
            channel_name: channel,
            graph_name: graph.name.clone(),
            pid: started.0,
            worker_id: started.1,
            timeout: timeout_secs(res.timeout),
            chat_id: res.spec.chat_id.clone(),
            request_id: res.spec.request_id.clone(),
        })
    }

    /// Reserves and launches in one call.
    pub async fn start(&self, spec: StartSpec) -> Result<StartedWorker, StartError> {
        let res = self.reserve(spec)?;
        self.launch(res).await
    }

    /// Pushes the inactivity deadline of `channel` back.
    pub fn ping(&self, channel: &str) -> Result<Timeout, ChannelError> {
        check_channel(channel)?;
        // Kept short: a lookup, a timestamp and an atomic store (the worker's timer reads it).
        let mut reg = self.inner.registry();
        let slot = reg
            .slots
            .get_mut(channel)
            .ok_or_else(|| ChannelError::NotFound(channel.to_string()))?;
        if slot.info.state == WorkerState::Stopping {
            return Err(ChannelError::NotFound(channel.to_string()));
        }
        slot.info.last_ping = SystemTime::now();
        slot.pings.touch();
        Ok(slot.info.timeout)
    }

    /// Stops the worker of `channel` and answers once it is gone, with how it ended.
    pub async fn stop(&self, channel: &str) -> Result<StopOutcome, ChannelError> {
        check_channel(channel)?;
        let tx = {
            let reg = self.inner.registry();
            let slot = reg
                .slots
                .get(channel)
                .ok_or_else(|| ChannelError::NotFound(channel.to_string()))?;
            slot.tx.clone()
        };
        // A slot without a sender is reserved and not yet launched: nothing runs to stop.
        let tx = tx.ok_or_else(|| ChannelError::NotFound(channel.to_string()))?;
        let (reply, rx) = oneshot::channel();
        tx.send(Command::Stop(reply))
            .map_err(|_| ChannelError::NotFound(channel.to_string()))?;
        rx.await
            .map_err(|_| ChannelError::NotFound(channel.to_string()))
    }

    /// Every worker, ordered by channel.
    pub fn list(&self) -> Vec<WorkerInfo> {
        let mut v: Vec<WorkerInfo> = self
            .inner
            .registry()
            .slots
            .values()
            .map(|s| s.info.clone())
            .collect();
        v.sort_by(|a, b| a.channel.cmp(&b.channel));
        v
    }

    /// The worker of `channel`.
    pub fn get(&self, channel: &str) -> Option<WorkerInfo> {
        self.inner
            .registry()
            .slots
            .get(channel)
            .map(|s| s.info.clone())
    }

    /// Refuses new starts, then stops every worker in parallel with the grace period.
    pub async fn shutdown(&self) {
        let txs: Vec<_> = {
            let mut reg = self.inner.registry();
            reg.shutting_down = true;
            reg.slots.values().filter_map(|s| s.tx.clone()).collect()
        };
        let stops = txs.into_iter().map(|tx| async move {
            let (reply, rx) = oneshot::channel();
            if tx.send(Command::Stop(reply)).is_ok() {
                let _ = rx.await;
            }
        });
        futures_util::future::join_all(stops).await;
    }

    /// Kills every worker's process group at once.
    pub fn kill_all_now(&self) {
        let mut reg = self.inner.registry();
        reg.shutting_down = true;
        for s in reg.slots.values() {
            if let Some(pid) = s.info.pid {
                stop::kill_group(pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// How the worker of a reservation runs: command, readiness, restarts, log.
fn plan(settings: &Settings, res: &mut Reservation, property_path: PathBuf) -> worker::Plan {
    let channel = res.spec.channel.clone();
    let graph = res.graph.clone();
    let builtin = graph.runtime.command.is_none() && settings.worker_command.is_none();
    let mut argv = graph
        .runtime
        .command
        .clone()
        .or_else(|| settings.worker_command.clone())
        .unwrap_or_else(|| {
            let exe = std::env::current_exe()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "agentd".into());
            vec![exe, "worker".into()]
        });
    argv.push("--property".into());
    argv.push(property_path.to_string_lossy().into_owned());
    let ready = graph.runtime.ready.unwrap_or(if builtin {
        Ready::Notify
    } else {
        Ready::Settle
    });
    let log = Arc::new(if settings.log_stdout {
        logs::LogSink::to_stdout(&channel)
    } else {
        logs::LogSink::to_file(
            logs::log_file(&settings.log_path, &channel),
            settings.log_max_bytes,
            settings.log_max_files,
        )
    });
    let cwd = graph
        .source
        .parent()
        .map(PathBuf::from)
        .filter(|p| p.is_dir());
    worker::Plan {
        channel: channel.clone(),
        generation: res.generation,
        graph: graph.name.clone(),
        request_id: res.spec.request_id.clone(),
        chat_id: res.spec.chat_id.clone(),
        extra_env: std::mem::take(&mut res.spec.extra_env),
        argv,
        cwd,
        ready,
        settle: graph
            .runtime
            .settle_ms
            .map(Duration::from_millis)
            .unwrap_or(settings.worker_settle),
        start_timeout: settings.worker_start_timeout,
        timeout: res.timeout,
        restart: graph.runtime.restart,
        max_restarts: graph.runtime.max_restarts,
        watchdog: graph.runtime.watchdog_ms.map(Duration::from_millis),
        property_path,
        log,
        pings: res.pings.clone(),
    }
}

/// Writes `doc` to a new file readable only by agentd's user, in one blocking call. Not synced:
/// the child reads it at once, and it never has to outlive the machine (nor does the child).
async fn write_private(path: &std::path::Path, doc: &Value) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(doc).map_err(std::io::Error::other)?;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?
            .write_all(&bytes)
    })
    .await
    .map_err(std::io::Error::other)?
}

fn remove_property_file(settings: &Settings, path: &std::path::Path) {
    if !settings.keep_property_files {
        let _ = std::fs::remove_file(path);
    }
}
