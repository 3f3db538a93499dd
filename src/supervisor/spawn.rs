//! Starting one process of a worker: its notify socket, its cgroup (where workers get one), its
//! command (argv, working directory, the environment of [`crate::contract::env`], a process group
//! of its own, its cgroup joined before exec, death with agentd), the record of its group and
//! cgroup, and the pumps of its output.
//!
//! Every fork happens on one thread that lives as long as agentd: `PR_SET_PDEATHSIG` fires when
//! the *thread* that forked the child exits, not the process (prctl(2)). Tokio may retire the
//! thread a task runs on (`block_in_place`, blocking-pool threads), which would kill healthy
//! workers; forking from a dedicated, never-ending thread ties the signal to agentd's life only.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::{mpsc, OnceLock};

use nix::sys::signal::Signal;
use nix::unistd::{getppid, Pid};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cgroup::{self, Cgroup, Enforced};
use super::errors::StartError;
use super::logs;
use super::notify::NotifySocket;
use super::plan::Plan;
use super::reap;
use super::records::{self, Record};
use super::stop::Hold;
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
    pub started: Instant,
    /// The records change that recorded this process's group.
    pub recorded: u64,
}

/// Binds a notify socket, forks the worker, records its group and starts pumping its output.
pub(super) async fn spawn(inner: &Inner, plan: &Plan) -> Result<Proc, StartError> {
    let program = plan.argv.first().cloned().unwrap_or_default();
    let spawn_err = |source| StartError::Spawn {
        program: program.clone(),
        source,
    };
    let worker_id = crate::ids::worker_id();
    let notify = NotifySocket::bind(&format!("agentd-{}-{worker_id}", std::process::id()))
        .map_err(spawn_err)?;
    let (cgroup, enforced) = make_cgroup(inner, plan, &worker_id);
    let procs = match cgroup.as_ref().map(Cgroup::procs_file).transpose() {
        Ok(f) => f,
        Err(e) => {
            discard(cgroup.as_ref());
            return Err(spawn_err(e));
        }
    };
    let cmd = command(inner, plan, &worker_id, &notify.env_value(), procs);
    let mut child = match fork(cmd).await {
        Ok(c) => c,
        Err(e) => {
            discard(cgroup.as_ref());
            return Err(spawn_err(e));
        }
    };
    let pid = child.id().unwrap_or(0);
    let recorded = inner.records.add(Record {
        channel: plan.channel.clone(),
        worker_id: worker_id.clone(),
        pgid: pid as i32,
        start_time: records::start_time(pid as i32).unwrap_or(0),
        cgroup: cgroup.as_ref().map(|c| c.dir().to_path_buf()),
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
        hold: Hold {
            pgid: pid as i32,
            cgroup,
        },
        enforced,
        worker_id,
        notify,
        pumps,
        started: Instant::now(),
        recorded,
    })
}

/// The cgroup of a new worker process, with the graph's limits; none where workers get none.
/// A cgroup that cannot be made leaves this one process in its process group only.
fn make_cgroup(inner: &Inner, plan: &Plan, worker_id: &str) -> (Option<Cgroup>, Enforced) {
    let Some(tree) = &inner.tree else {
        return (None, Enforced::default());
    };
    match tree.create(worker_id, plan.memory_max, plan.pids_max) {
        Ok((cg, enforced)) => (Some(cg), enforced),
        Err(e) => {
            tracing::warn!(
                channel = %plan.channel, dir = %tree.dir().display(),
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

/// The worker's command: argv, working directory and environment, in a process group of its
/// own and in the cgroup whose `cgroup.procs` is `procs` (if any), killed when agentd dies.
fn command(
    inner: &Inner,
    plan: &Plan,
    worker_id: &str,
    notify_socket: &str,
    procs: Option<File>,
) -> Command {
    let mut cmd = Command::new(plan.argv.first().map(String::as_str).unwrap_or_default());
    cmd.args(plan.argv.iter().skip(1));
    if let Some(dir) = &plan.cwd {
        cmd.current_dir(dir);
    }
    cmd.env_remove(env::WATCHDOG_PID);
    for (k, v) in plan.extra_env.iter().filter(|(k, _)| !env::is_own(k)) {
        cmd.env(k, v);
    }
    let settings = &inner.settings;
    cmd.env(env::CHANNEL, &plan.channel)
        .env(env::GRAPH, &plan.graph)
        .env(env::AGENT_ID, &plan.graph)
        .env(env::WORKER_ID, worker_id)
        .env(env::SERVER_URL, &inner.base_url)
        .env(env::API_URL, env::api_url(&inner.base_url))
        .env(env::NOTIFY_SOCKET, notify_socket)
        .env(env::WORKER_TOKEN, settings.worker_token.as_str());
    // Unset ones are removed, so nothing leaks in from agentd's own environment.
    let optional = [
        (env::REQUEST_ID, plan.request_id.clone()),
        (env::API_KEY, settings.api_key.clone()),
        (env::CHAT_ID, plan.chat_id.clone()),
        (
            env::WATCHDOG_USEC,
            plan.watchdog.map(|w| (w.as_micros() as u64).to_string()),
        ),
    ];
    for (name, value) in optional {
        match value {
            Some(v) => cmd.env(name, v),
            None => cmd.env_remove(name),
        };
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let parent = Pid::this();
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid and write
    // syscalls and errno reads); nothing allocates. `procs` lives in the closure, so its
    // descriptor is open in the child; it is close-on-exec, so the worker never sees it.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // agentd died between fork and prctl: do not run as an orphan.
            if getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            // Into the cgroup before exec, so nothing the worker starts can be outside it.
            if let Some(f) = &procs {
                if !cgroup::join(f.as_raw_fd()) {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

impl Drop for Proc {
    fn drop(&mut self) {
        reap::forget(self.pid);
    }
}

type Job = (Command, oneshot::Sender<io::Result<Child>>);

static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();

/// Starts the spawner thread inside `rt`, agentd's main runtime (idempotent).
pub(super) fn init(rt: tokio::runtime::Handle) {
    spawner(rt);
}

fn spawner(handle: tokio::runtime::Handle) -> &'static mpsc::Sender<Job> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("agentd-spawner".into())
            .spawn(move || {
                // The child's SIGCHLD handling and pipes belong to agentd's runtime.
                let _guard = handle.enter();
                for (mut cmd, reply) in rx {
                    let spawned = reap::spawning(|| {
                        let child = cmd.spawn()?;
                        let pid = child.id().unwrap_or(0);
                        Ok((child, pid))
                    });
                    // The closure holds the cgroup's `cgroup.procs`: close it now.
                    drop(cmd);
                    let _ = reply.send(spawned);
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("cannot start the spawner thread: {e}"));
        tx
    })
}

/// Forks `cmd` on the spawner thread.
async fn fork(cmd: Command) -> io::Result<Child> {
    let sender = match SPAWNER.get() {
        Some(s) => s,
        None => spawner(tokio::runtime::Handle::current()),
    };
    let (reply, rx) = oneshot::channel();
    sender
        .send((cmd, reply))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}
