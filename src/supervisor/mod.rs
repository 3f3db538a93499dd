//! The supervisor, as a service: starts, pings, stops and reaps agent worker processes, one
//! channel each. It knows nothing of HTTP; [`routes`] and the wire form of [`errors`] sit on top.
//!
//! A start is [`reserve`] (validate: the start [`fields`], which keys the request may override
//! ([`overrides`]), the per-worker [`document`]; then take the channel and worker slots under
//! one lock) and [`launch`] (write the property file, hand over to a task). Each worker is owned by one tokio
//! task ([`task`]) that holds its `Child`: stop, ping, exit, the inactivity deadline and the
//! watchdog are branches of one `select!` there. Everyone else talks to it through the
//! [`registry`], which holds only descriptions and a command sender.
//!
//! Each worker process and everything it starts is held by its process group and, where the
//! machine allows, a cgroup of its own ([`cgroup`]); [`stop`] kills and reaps through both,
//! [`reap`] collects the orphans agentd inherits, and [`usage`] samples every worker's memory and
//! CPU (and enforces `runtime.memory_max` where the kernel cannot).

pub mod cgroup;
mod child;
pub mod document;
pub mod errors;
pub mod fields;
mod launch;
pub mod logs;
mod notify;
pub mod overrides;
mod ownership;
mod plan;
mod prewarm;
mod reap;
pub mod records;
mod registry;
mod reservation;
mod reserve;
mod spawn;
mod stop;
mod task;
mod usage;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::sync::{broadcast, oneshot};

use crate::catalog::watch::CatalogHandle;
use crate::catalog::Timeout;
use crate::settings::{CgroupMode, Settings};
use cgroup::{Cgroup, Tree};

pub use errors::{ChannelError, StartError};
pub use launch::StartedWorker;
pub use logs::{LogLines, RECENT_LINES};
pub use ownership::{Claimed, Ownership, Released};
pub use registry::{timeout_secs, MemoryMax, WorkerChange, WorkerInfo, WorkerState};
pub use reservation::{Reservation, StartSpec};
pub use reserve::{check_channel, MAX_CHANNEL_BYTES};
pub use stop::StopOutcome;

use registry::{Command, Registry};

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How worker processes are held, so that everything a worker starts dies with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Containment {
    /// A cgroup per worker process: a descendant that leaves the process group is still in it.
    Cgroup,
    /// The worker's process group only.
    ProcessGroup,
}

impl Containment {
    pub fn as_str(self) -> &'static str {
        match self {
            Containment::Cgroup => "cgroup",
            Containment::ProcessGroup => "process-group",
        }
    }
}

/// How this agentd contains its workers (for `/health`).
#[derive(Debug, Clone, Serialize)]
pub struct ContainmentReport {
    pub mode: Containment,
    /// The subtree where workers' cgroups are made.
    pub cgroup: Option<PathBuf>,
    /// Why there are no cgroups (process-group mode).
    pub reason: Option<String>,
    /// `runtime.memory_max` is enforced by the kernel (`memory.max`), else by agentd's sampler.
    pub memory_max_by_kernel: bool,
    /// `runtime.pids_max` is enforced (by the kernel's `pids.max`); else it is not enforced.
    pub pids_max_enforced: bool,
}

/// What every handle and task of the supervisor shares.
pub(crate) struct Inner {
    settings: Arc<Settings>,
    catalog: CatalogHandle,
    base_url: String,
    registry: Registry,
    records: Arc<records::Records>,
    /// Per-worker property files.
    run_dir: PathBuf,
    /// agentd's main runtime: worker tasks run there, not on the HTTP workers' runtimes.
    rt: tokio::runtime::Handle,
    /// Told the `AGENTD_WORKER_ID` of every worker process once it and its group are gone.
    gone_hook: OnceLock<GoneHook>,
    /// Which node runs each channel, when several share the database.
    ownership: OnceLock<Arc<dyn Ownership>>,
    /// Worker ids of the previous agentd's workers, all gone by the start-up sweep.
    leftovers: Mutex<Vec<String>>,
    /// Where workers' cgroups are made; `None` in process-group mode.
    tree: Option<Tree>,
    containment: ContainmentReport,
    /// Workers started ahead of their channel, per graph with `runtime.prewarm`.
    prewarm: prewarm::Pools,
}

/// See [`Supervisor::on_worker_gone`].
pub(crate) type GoneHook = Box<dyn Fn(&str) + Send + Sync>;

/// Cheap handle to the supervisor.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
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
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(
                "cannot become a child subreaper ({e}): processes a worker leaves behind are \
                 re-parented to init instead of agentd, so agentd cannot reap them and they may \
                 stay zombies of init for a while"
            );
        }
        let (tree, containment) = contain(&settings).await;
        warn_unenforced(&catalog, &containment);
        let records = Arc::new(records::Records::new(&settings.data_dir));
        let leftovers = records.sweep(tree.as_ref()).await?;
        tokio::spawn(records.clone().run_writer());
        tokio::spawn(reap::run());
        let rt = tokio::runtime::Handle::current();
        spawn::init();
        let sample_every = settings.worker_sample_interval;
        let inner = Arc::new(Inner {
            settings,
            catalog,
            base_url,
            registry: Registry::default(),
            records,
            run_dir,
            rt,
            gone_hook: OnceLock::new(),
            ownership: OnceLock::new(),
            leftovers: Mutex::new(leftovers),
            tree,
            containment,
            prewarm: prewarm::Pools::default(),
        });
        usage::start(Arc::downgrade(&inner), sample_every);
        prewarm::start(&inner);
        Ok(Supervisor { inner })
    }

    /// How workers are contained here.
    pub fn containment(&self) -> &ContainmentReport {
        &self.inner.containment
    }

    /// Registers what to do when a worker process is gone for good (exit, stop, crash, kill);
    /// called with its `AGENTD_WORKER_ID`. The chat store uses it to hand the worker's leases back
    /// at once. Only the first registration counts.
    pub fn on_worker_gone(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.inner.gone_hook.set(Box::new(hook));
    }

    /// Makes every start take its channel through `ownership` first, and every worker gone for
    /// good give it back. Only the first registration counts.
    pub fn set_ownership(&self, ownership: Arc<dyn Ownership>) {
        let _ = self.inner.ownership.set(ownership);
    }

    /// Stops every worker (new starts are still taken), in parallel; `by` says why, in the log.
    /// Workers not gone `within` that time (their grace period is longer) are killed.
    pub async fn stop_all(&self, by: &str, within: Duration) -> usize {
        let channels: Vec<String> = self.list().into_iter().map(|w| w.channel).collect();
        let n = channels.len();
        let stops = futures_util::future::join_all(channels.iter().map(|c| self.stop(c, by)));
        tokio::pin!(stops);
        if tokio::time::timeout(within, &mut stops).await.is_err() {
            // Past the time allowed: whatever still runs is killed now (its stop then ends at
            // once); the grace period would outlast what the caller must guarantee.
            for t in self.inner.registry.targets() {
                stop::kill_group(t.pid as i32, Signal::SIGKILL);
                if let Some(dir) = t.cgroup {
                    Cgroup::at(dir).kill_now();
                }
            }
            stops.await;
        }
        n
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
        self.inner.registry.is_shutting_down()
    }

    /// Pushes the inactivity deadline of `channel` back.
    pub fn ping(&self, channel: &str) -> Result<Timeout, ChannelError> {
        check_channel(channel)?;
        // Kept short: a lookup, a timestamp and an atomic store (the worker's timer reads it).
        self.inner.registry.ping(channel)
    }

    /// Stops the worker of `channel` and answers once it is gone, with how it ended. `by` says
    /// who asked, for the log line every stop leaves.
    pub async fn stop(&self, channel: &str, by: &str) -> Result<StopOutcome, ChannelError> {
        check_channel(channel)?;
        let tx = self.inner.registry.sender(channel)?;
        let (reply, rx) = oneshot::channel();
        tx.send(Command::Stop(reply))
            .map_err(|_| ChannelError::NotFound(channel.to_string()))?;
        let outcome = rx
            .await
            .map_err(|_| ChannelError::NotFound(channel.to_string()))?;
        log_stop(channel, by, &outcome);
        Ok(outcome)
    }

    /// Every worker, ordered by channel.
    pub fn list(&self) -> Vec<WorkerInfo> {
        self.inner.registry.list()
    }

    /// The worker of `channel`.
    pub fn get(&self, channel: &str) -> Option<WorkerInfo> {
        self.inner.registry.get(channel)
    }

    /// Every worker now (ordered by channel), and every change from that moment on: workers
    /// started, changed (state, pid, ping), restarted and gone. A receiver that lags has missed
    /// changes and should watch afresh.
    pub fn watch(&self) -> (Vec<WorkerInfo>, broadcast::Receiver<WorkerChange>) {
        self.inner.registry.watch()
    }

    /// The last `n` lines (at most [`RECENT_LINES`]) of the log of `channel`'s worker, agentd's
    /// notes included.
    pub fn log_lines(&self, channel: &str, n: usize) -> Result<Vec<String>, ChannelError> {
        check_channel(channel)?;
        Ok(self.inner.registry.log(channel)?.recent(n))
    }

    /// [`log_lines`](Self::log_lines), then every line written after them until the worker is
    /// gone for good (the receiver closes then).
    pub fn follow_log(
        &self,
        channel: &str,
        n: usize,
    ) -> Result<(Vec<String>, broadcast::Receiver<LogLines>), ChannelError> {
        check_channel(channel)?;
        // The sink is not kept here: the receiver must close when the worker's own holders
        // drop it.
        Ok(self.inner.registry.log(channel)?.follow(n))
    }

    /// How many prewarmed workers of `graph` wait for a channel now.
    pub fn prewarmed(&self, graph: &str) -> usize {
        self.inner.prewarm.waiting(graph)
    }

    /// Refuses new starts, then stops every worker (prewarmed ones too) in parallel with the
    /// grace period.
    pub async fn shutdown(&self) {
        let stops = self
            .inner
            .registry
            .close()
            .into_iter()
            .map(|(channel, tx)| async move {
                let (reply, rx) = oneshot::channel();
                if tx.send(Command::Stop(reply)).is_ok() {
                    if let Ok(outcome) = rx.await {
                        log_stop(&channel, "shutdown", &outcome);
                    }
                }
            });
        let stops = futures_util::future::join_all(stops);
        futures_util::future::join(stops, self.inner.prewarm.close(&self.inner)).await;
        if let Some(tree) = &self.inner.tree {
            tree.remove();
        }
    }

    /// Kills every worker's process group and cgroup at once (their cgroups are removed by the
    /// next start's sweep).
    pub fn kill_all_now(&self) {
        self.inner.prewarm.kill_all_now();
        for (pid, cgroup) in self.inner.registry.close_for_kill() {
            stop::kill_group(pid as i32, Signal::SIGKILL);
            if let Some(dir) = cgroup {
                Cgroup::at(dir).kill_now();
            }
        }
    }
}

/// Finds out how workers can be contained here, and says so in the log.
async fn contain(settings: &Settings) -> (Option<Tree>, ContainmentReport) {
    let detected = match settings.worker_cgroups {
        CgroupMode::Off => Err("WORKER_CGROUPS=off".to_string()),
        CgroupMode::Auto => {
            let data_dir = settings.data_dir.clone();
            tokio::task::spawn_blocking(move || Tree::detect(&data_dir))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
        }
    };
    match detected {
        Ok(mut tree) => {
            tree.listen();
            let c = tree.controllers();
            tracing::info!(
                cgroup = %tree.dir().display(),
                memory_max = if c.memory { "kernel" } else { "agentd's sampler" },
                pids_max = if c.pids { "kernel" } else { "not enforced" },
                "containment: cgroup (each worker in a cgroup of its own)"
            );
            let report = ContainmentReport {
                mode: Containment::Cgroup,
                cgroup: Some(tree.dir().to_path_buf()),
                reason: None,
                memory_max_by_kernel: c.memory,
                pids_max_enforced: c.pids,
            };
            (Some(tree), report)
        }
        Err(why) => {
            let msg = "containment: process-group (a descendant that calls setsid() escapes \
                       stop and the start-up sweep)";
            if settings.worker_cgroups == CgroupMode::Off {
                tracing::info!(reason = %why, "{msg}");
            } else {
                tracing::warn!(reason = %why, "{msg}");
            }
            let report = ContainmentReport {
                mode: Containment::ProcessGroup,
                cgroup: None,
                reason: Some(why),
                memory_max_by_kernel: false,
                pids_max_enforced: false,
            };
            (None, report)
        }
    }
}

/// Says at start-up which graphs ask for a `pids_max` this machine cannot enforce.
fn warn_unenforced(catalog: &CatalogHandle, containment: &ContainmentReport) {
    if containment.pids_max_enforced {
        return;
    }
    for g in catalog.current().graphs() {
        if let Some(max) = g.runtime.pids_max {
            tracing::warn!(
                graph = %g.name, pids_max = max,
                "runtime.pids_max is not enforced here: no pids controller for agentd's cgroups"
            );
        }
    }
}

/// The one log line of a stop someone asked for: who, how it ended, how long it took.
fn log_stop(channel: &str, by: &str, outcome: &StopOutcome) {
    tracing::info!(
        channel,
        by,
        how = outcome.how,
        exit_code = outcome.exit_code,
        signal = outcome.signal,
        took_ms = outcome.took_ms,
        "worker stopped"
    );
}
