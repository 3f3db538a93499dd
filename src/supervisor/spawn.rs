//! Starting one process of a worker: its notify socket, its cgroup (where workers get one), its
//! command (argv, working directory, the environment of [`crate::contract::env`], a process group
//! of its own, its cgroup joined before exec, death with agentd), the record of its group and
//! cgroup, and the pumps of its output.
//!
//! Every spawn ([`child::spawn`], no fork of agentd) happens on one thread that lives as long as
//! agentd: `PR_SET_PDEATHSIG` fires when the *thread* that made the child exits, not the process
//! (prctl(2)). Tokio may retire the thread a task runs on (`block_in_place`, blocking-pool
//! threads), which would kill healthy workers; spawning from a dedicated, never-ending thread
//! ties the signal to agentd's life only.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::sync::{mpsc, Arc, OnceLock};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cgroup::{Cgroup, Enforced};
use super::child::{self, Child, RawChild, Spec};
use super::errors::StartError;
use super::logs;
use super::notify::NotifySocket;
use super::plan::Plan;
use super::reap;
use super::records::{self, Record};
use super::stop::{self, Hold};
use super::Inner;
use crate::contract::env;

/// One spawned process of the worker.
pub(super) struct Proc {
    pub child: Child,
    /// Also the process group id: the child leads its own group.
    pub pid: u32,
    /// Its process group and cgroup.
    pub hold: Hold,
    /// The limits its cgroup enforces (none without one).
    pub enforced: Enforced,
    pub worker_id: String,
    pub notify: NotifySocket,
    pub pumps: Vec<JoinHandle<()>>,
    /// Where the pumps send its output.
    pub route: Arc<logs::Route>,
    pub started: Instant,
    /// The records change that recorded this process's group.
    pub recorded: u64,
}

/// What one process needs before it is spawned: its worker id, its notify socket and its
/// cgroup. A start makes them while the channel's chat is read ([`Parts::make`]), so that its
/// spawn does not wait for them; a restart or a prewarmed worker makes them at its spawn.
pub(super) struct Parts {
    worker_id: String,
    notify: NotifySocket,
    cgroup: Option<Cgroup>,
    enforced: Enforced,
    /// The cgroup's `cgroup.procs`, which the child joins before it execs.
    procs: Option<File>,
}

impl Parts {
    /// A new worker id, its notify socket (watched by agentd's main runtime, where the worker's
    /// task runs, whatever thread this is) and its cgroup with the limits of the graph
    /// (`runtime.memory_max`, `runtime.pids_max`); `channel` names the worker in warnings.
    pub fn make(
        inner: &Inner,
        channel: &str,
        memory_max: Option<u64>,
        pids_max: Option<u64>,
    ) -> io::Result<Parts> {
        let worker_id = crate::ids::worker_id();
        let notify = {
            let _main = inner.rt.enter();
            NotifySocket::bind(&format!("agentd-{}-{worker_id}", std::process::id()))?
        };
        let (cgroup, enforced) = make_cgroup(inner, channel, memory_max, pids_max, &worker_id);
        let procs = match cgroup.as_ref().map(Cgroup::procs_file).transpose() {
            Ok(f) => f,
            Err(e) => {
                discard(cgroup.as_ref());
                return Err(e);
            }
        };
        Ok(Parts {
            worker_id,
            notify,
            cgroup,
            enforced,
            procs,
        })
    }

    /// Gives back what was made for a process that will not be spawned (its cgroup).
    pub fn discard(self) {
        discard(self.cgroup.as_ref());
    }
}

/// A process handed to the spawner thread and not yet watched. A start hands over its first
/// process from the thread that answers it ([`Forking::start`]), so the spawn does not wait
/// for the worker's task to be scheduled first; the task then [`finish`](Forking::finish)es.
pub(super) struct Forking {
    /// What was made for the process (its `cgroup.procs` handed to the spawner with it).
    parts: Parts,
    spawned: oneshot::Receiver<io::Result<RawChild>>,
}

impl Forking {
    /// Hands the process of `parts` to the spawner thread (from any thread).
    pub fn start(inner: &Inner, plan: &Plan, mut parts: Parts) -> io::Result<Forking> {
        let procs = parts.procs.take();
        let cmd = command(
            inner,
            plan,
            &parts.worker_id,
            &parts.notify.env_value(),
            procs,
        );
        match ask_spawner(cmd) {
            Ok(spawned) => Ok(Forking { parts, spawned }),
            Err(e) => {
                parts.discard();
                Err(e)
            }
        }
    }

    /// Waits until the process has exec'd, then watches it (on the current runtime), records
    /// its group and starts pumping its output.
    pub async fn finish(self, inner: &Inner, plan: &Plan) -> Result<Proc, StartError> {
        let Forking { parts, spawned } = self;
        let Parts {
            worker_id,
            notify,
            cgroup,
            enforced,
            ..
        } = parts;
        let mut child = match watch(spawned).await {
            Ok(c) => c,
            Err(source) => {
                discard(cgroup.as_ref());
                return Err(StartError::Spawn {
                    program: plan.argv.first().cloned().unwrap_or_default(),
                    source,
                });
            }
        };
        let pid = child.id();
        let recorded = inner.records.add(Record {
            channel: plan.channel.clone(),
            worker_id: worker_id.clone(),
            pgid: pid as i32,
            start_time: records::start_time(pid as i32).unwrap_or(0),
            cgroup: cgroup.as_ref().map(|c| c.dir().to_path_buf()),
        });
        let route = logs::Route::new(plan.log.clone());
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(logs::pump(out, route.clone())));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(logs::pump(err, route.clone())));
        }
        Ok(Proc {
            child,
            pid,
            hold: Hold {
                pgid: pid as i32,
                cgroup,
            },
            enforced,
            worker_id,
            notify,
            pumps,
            route,
            started: Instant::now(),
            recorded,
        })
    }
}

/// Spawns one process of the worker from `parts` (made now when there are none), records its
/// group and starts pumping its output.
pub(super) async fn spawn(
    inner: &Inner,
    plan: &Plan,
    parts: Option<Parts>,
) -> Result<Proc, StartError> {
    let spawn_err = |source| StartError::Spawn {
        program: plan.argv.first().cloned().unwrap_or_default(),
        source,
    };
    let parts = match parts {
        Some(p) => p,
        None => {
            Parts::make(inner, &plan.channel, plan.memory_max, plan.pids_max).map_err(spawn_err)?
        }
    };
    Forking::start(inner, plan, parts)
        .map_err(spawn_err)?
        .finish(inner, plan)
        .await
}

/// The cgroup of a new worker process, with the graph's limits; none where workers get none.
/// A cgroup that cannot be made leaves this one process in its process group only.
fn make_cgroup(
    inner: &Inner,
    channel: &str,
    memory_max: Option<u64>,
    pids_max: Option<u64>,
    worker_id: &str,
) -> (Option<Cgroup>, Enforced) {
    let Some(tree) = &inner.tree else {
        return (None, Enforced::default());
    };
    match tree.create(worker_id, memory_max, pids_max) {
        Ok((cg, enforced)) => (Some(cg), enforced),
        Err(e) => {
            tracing::warn!(
                channel, dir = %tree.dir().display(),
                "cannot make a cgroup for the worker ({e}); it runs in its process group only"
            );
            (None, Enforced::default())
        }
    }
}

/// Removes the cgroup of a process that did not start.
fn discard(cgroup: Option<&Cgroup>) {
    if let Some(cg) = cgroup {
        let _ = cg.remove();
    }
}

/// The worker's command: argv, working directory and environment, in the cgroup whose
/// `cgroup.procs` is `procs` (if any). The process group and the death with agentd are
/// [`child::spawn`]'s.
fn command(
    inner: &Inner,
    plan: &Plan,
    worker_id: &str,
    notify_socket: &str,
    procs: Option<File>,
) -> Spec {
    let mut env: Vec<(OsString, Option<OsString>)> = vec![(env::WATCHDOG_PID.into(), None)];
    let mut set = |k: &str, v: Option<&str>| env.push((k.into(), v.map(Into::into)));
    for (k, v) in plan.extra_env.iter().filter(|(k, _)| !env::is_own(k)) {
        set(k, Some(v));
    }
    let settings = &inner.settings;
    // A prewarmed worker learns its channel when one takes it (see super::prewarm).
    let channel = (!plan.prewarm).then_some(plan.channel.as_str());
    set(env::CHANNEL, channel);
    set(env::PREWARM, plan.prewarm.then_some("1"));
    set(env::GRAPH, Some(&plan.graph));
    set(env::AGENT_ID, Some(&plan.graph));
    set(env::WORKER_ID, Some(worker_id));
    set(env::SERVER_URL, Some(&inner.base_url));
    set(env::API_URL, Some(&env::api_url(&inner.base_url)));
    set(env::NOTIFY_SOCKET, Some(notify_socket));
    set(env::WORKER_TOKEN, Some(settings.worker_token.as_str()));
    // Unset ones are removed, so nothing leaks in from agentd's own environment.
    let watchdog = plan.watchdog.map(|w| (w.as_micros() as u64).to_string());
    set(env::REQUEST_ID, plan.request_id.as_deref());
    set(env::API_KEY, settings.api_key.as_deref());
    set(env::CHAT_ID, plan.chat_id.as_deref());
    set(env::WATCHDOG_USEC, watchdog.as_deref());
    Spec {
        argv: plan.argv.clone(),
        cwd: plan.cwd.clone(),
        env,
        stdin_pipe: plan.prewarm,
        procs,
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        reap::forget(self.pid);
    }
}

type Job = (Spec, oneshot::Sender<io::Result<RawChild>>);

static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();

/// Starts the spawner thread (idempotent).
pub(super) fn init() {
    spawner();
}

fn spawner() -> &'static mpsc::Sender<Job> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("agentd-spawner".into())
            .spawn(move || {
                for (spec, reply) in rx {
                    let spawned = reap::spawning(|| {
                        let raw = child::spawn(spec)?;
                        let pid = raw.pid();
                        Ok((raw, pid))
                    });
                    if let Err(Ok(raw)) = reply.send(spawned) {
                        // Nobody waits for it any more (its start was dropped): it must not
                        // run unwatched. The reaper collects it once it is forgotten.
                        stop::kill_group(raw.pid() as i32, nix::sys::signal::Signal::SIGKILL);
                        reap::forget(raw.pid());
                    }
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("cannot start the spawner thread: {e}"));
        tx
    })
}

/// Hands `spec` to the spawner thread; its answer comes on the receiver.
fn ask_spawner(spec: Spec) -> io::Result<oneshot::Receiver<io::Result<RawChild>>> {
    let (reply, rx) = oneshot::channel();
    spawner()
        .send((spec, reply))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    Ok(rx)
}

/// The process the spawner thread started, watched on the current runtime.
async fn watch(spawned: oneshot::Receiver<io::Result<RawChild>>) -> io::Result<Child> {
    let raw = spawned
        .await
        .map_err(|_| io::Error::other("the spawner thread is gone"))??;
    let pid = raw.pid();
    Child::new(raw).inspect_err(|_| {
        // Cannot be watched: kill it; the reaper collects it once it is forgotten.
        stop::kill_group(pid as i32, nix::sys::signal::Signal::SIGKILL);
        reap::forget(pid);
    })
}
