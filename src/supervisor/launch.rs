//! The second half of a start: prepare (take a prewarmed worker, write the reservation's property
//! file), hand the reservation to a new task that owns the worker, and answer once the worker is
//! ready (or gone).

use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::errors::StartError;
use super::logs;
use super::registry::timeout_secs;
use super::reservation::{Prepared, Reservation, StartSpec};
use super::spawn::{Forking, Parts};
use super::{prewarm, task, Supervisor};

/// A worker that is up (`/start`'s `data`; its schema is in the OpenAPI document).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

impl Supervisor {
    /// The part of a start that needs no chat, done ahead so that it can run while the chat is
    /// looked up: takes a waiting worker of the graph (if it keeps some) or makes the first
    /// process's notify socket and cgroup, and writes the per-worker file.
    /// [`launch`](Self::launch) does it when it was not done; a reservation dropped unlaunched
    /// gives it all back.
    pub async fn prepare(&self, res: &mut Reservation) -> Result<(), StartError> {
        if res.prepared.is_none() {
            res.prepared = Some(self.prepare_parts(res).await?);
        }
        Ok(())
    }

    async fn prepare_parts(&self, res: &Reservation) -> Result<Prepared, StartError> {
        let began = std::time::Instant::now();
        let inner = &self.inner;
        // A prewarmed worker already looks for its file at a path of its own.
        let warm = match res.graph.runtime.prewarm {
            0 => None,
            _ => inner.prewarm.take(inner, &res.graph),
        };
        let property_path = match &warm {
            Some(w) => w.property_path.clone(),
            None => inner.run_dir.join(format!(
                "property-{}-{}.json",
                logs::safe_stem(&res.spec.channel),
                res.generation
            )),
        };
        if let Err(source) = write_private(&property_path, &res.doc).await {
            prewarm::discard(inner, warm);
            crate::observe::worker_started(&res.graph.name, false, began.elapsed());
            return Err(StartError::PropertyFile {
                path: property_path.display().to_string(),
                source,
            });
        }
        // The first process's socket and cgroup too, while the chat is read; if they cannot be
        // made here, the spawn makes them (and says why it cannot).
        let parts = match warm {
            Some(_) => None,
            None => {
                let rt = &res.graph.runtime;
                Parts::make(inner, &res.spec.channel, rt.memory_max, rt.pids_max).ok()
            }
        };
        Ok(Prepared {
            warm,
            parts,
            property_path,
            began,
        })
    }

    /// Spawns the worker (or hands the prepared prewarmed one its channel) and answers once it
    /// is ready (or gone); [`prepare`](Self::prepare)s first when that was not done.
    pub async fn launch(&self, mut res: Reservation) -> Result<StartedWorker, StartError> {
        let prepared = match res.prepared.take() {
            Some(p) => p,
            None => self.prepare_parts(&res).await?,
        };
        let (began, graph) = (prepared.began, res.graph.name.clone());
        let out = self.launch_inner(res, prepared).await;
        crate::observe::worker_started(&graph, out.is_ok(), began.elapsed());
        out
    }

    async fn launch_inner(
        &self,
        mut res: Reservation,
        prepared: Prepared,
    ) -> Result<StartedWorker, StartError> {
        let inner = self.inner.clone();
        let channel = res.spec.channel.clone();
        // With several nodes, the channel is this node's before anything is spawned; a refusal
        // drops the reservation (its slot, and what was prepared for it).
        let ownership = inner.ownership.get().cloned();
        if let Some(o) = &ownership {
            if let Err(e) = o.claim(res.generation, &res.spec, &res.graph.name).await {
                res.prepared = Some(prepared);
                return Err(e);
            }
        }
        let give_back = |generation: u64| {
            let released = ownership.as_ref().map(|o| o.released(&channel, generation));
            async move {
                if let Some(r) = released {
                    r.await;
                }
            }
        };
        let Prepared {
            warm,
            parts,
            property_path,
            ..
        } = prepared;

        let (tx, rx) = mpsc::unbounded_channel();
        if !inner.registry.attach(&channel, res.generation, tx) {
            if !inner.settings.keep_property_files {
                let _ = std::fs::remove_file(&property_path);
            }
            prewarm::discard(&inner, warm);
            if let Some(parts) = parts {
                parts.discard();
            }
            give_back(res.generation).await;
            return Err(StartError::ShuttingDown);
        }
        // From here the task owns the slot: dropping the reservation no longer releases it.
        res.launched = true;

        let plan = res.plan(&inner.settings, property_path);
        // The first process goes to the spawner thread from here, without waiting for the
        // task to be scheduled (if it cannot, the task spawns it and says why not).
        let forking = parts.and_then(|p| Forking::start(&inner, &plan, p).ok());
        let (ready_tx, ready_rx) = oneshot::channel();
        // A prewarmed worker is handed its channel here: it works on it while its task starts.
        // Its pool starts a replacement once the worker is ready (or its start failed), so that
        // the new process does not compete with this one for the machine meanwhile.
        let (warm, _refill) = match warm {
            Some(w) => (Some(task::hand_over(&plan, w.proc)), Some(w.refill)),
            None => (None, None),
        };
        inner
            .rt
            .spawn(task::run(inner.clone(), plan, rx, ready_tx, warm, forking));
        let (pid, worker_id) = ready_rx
            .await
            .unwrap_or(Err(StartError::StoppedDuringStart))?;
        Ok(StartedWorker {
            channel_name: channel,
            graph_name: res.graph.name.clone(),
            pid,
            worker_id,
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
}

/// Largest file written on the calling thread: a write this small takes tens of microseconds,
/// less than a trip to the blocking pool and back, which a start would wait for.
const INLINE_WRITE_MAX: usize = 64 * 1024;

/// Writes `doc` to a new file readable only by agentd's user. Not synced: the child reads it at
/// once, and it never has to outlive the machine (nor does the child). A large file is written
/// on the blocking pool.
async fn write_private(path: &Path, doc: &Value) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(doc).map_err(std::io::Error::other)?;
    if bytes.len() <= INLINE_WRITE_MAX {
        return write_file(path, &bytes);
    }
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || write_file(&path, &bytes))
        .await
        .map_err(std::io::Error::other)?
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}
