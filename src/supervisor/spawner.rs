//! Spawns worker processes from one thread that lives as long as agentd.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process
//! (prctl(2)). Tokio may retire the thread a task runs on (`block_in_place`, blocking-pool
//! threads), which would kill healthy workers; forking from a dedicated, never-ending thread
//! ties the signal to agentd's life only.

use std::io;
use std::sync::mpsc;
use std::sync::OnceLock;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

type Job = (Command, oneshot::Sender<io::Result<Child>>);

static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();

/// Starts the spawner thread inside `rt`, agentd's main runtime (idempotent).
pub fn init(rt: tokio::runtime::Handle) {
    start(rt);
}

fn start(handle: tokio::runtime::Handle) -> &'static mpsc::Sender<Job> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("agentd-spawner".into())
            .spawn(move || {
                // The child's SIGCHLD handling and pipes belong to agentd's runtime.
                let _guard = handle.enter();
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("cannot start the spawner thread: {e}"));
        tx
    })
}

/// Spawns `cmd` on the spawner thread.
pub async fn spawn(cmd: Command) -> io::Result<Child> {
    let sender = match SPAWNER.get() {
        Some(s) => s,
        None => start(tokio::runtime::Handle::current()),
    };
    let (reply, rx) = oneshot::channel();
    sender
        .send((cmd, reply))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}
