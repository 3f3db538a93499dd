//! Prewarmed workers: per graph with `runtime.prewarm: N`, N worker processes started ahead of
//! any `/start`, waiting for a channel ([`crate::contract::prewarm`] is the handover a worker
//! implements). A `/start` of that graph takes one ([`Pools::take`]): its file is written where
//! the waiting worker already looks, the worker's channel goes to it on stdin, and from there on
//! its task treats it exactly as a cold start (the same wait for `READY=1`, records, logs, stop
//! and kill). The pool then starts a replacement in the background.
//!
//! Each pool has one filler task (keeps N waiting, with the restart backoff after failures) and
//! one small task per waiting worker that notices its death. The waiting worker itself is in the
//! pool's list, so a `/start` takes it from there without waiting on another task; the
//! replacement is started once the taken worker is ready (or its start failed), so that starting
//! a process does not compete with the handover for the machine. A pool belongs to the graph as
//! it was written: when hot reload changes the graph (or removes it, or its `prewarm`),
//! the pool's workers are stopped and a new pool starts. A worker that answers `READY=1` or
//! nothing instead of `PREWARM=1` does not implement the handover: the graph is started cold.
//!
//! Waiting workers are not channels: they are not in `/list`, and count neither against
//! `WORKERS_MAX` nor the graph's `max_workers` (the graph's author chose N); they are in the
//! record of live groups, so that a `kill -9` of agentd leaves none behind.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};

use super::child::ExitWatch;
use super::errors::StartError;
use super::logs::{self, LogSink};
use super::plan::{self, Plan};
use super::spawn::{self, Proc};
use super::stop::{self, describe};
use super::Inner;
use crate::catalog::{Catalog, Graph};

/// Longest wait for a retired worker's output pipes to drain.
const PUMP_WAIT: Duration = Duration::from_secs(1);

/// A waiting worker handed to a `/start`: its process and where its file must be written.
pub(super) struct Warm {
    pub proc: Proc,
    pub property_path: PathBuf,
    /// Starts the replacement when dropped: kept until the taken worker is ready (or failed).
    pub refill: Refill,
}

/// Wakes the pool's filler when dropped.
pub(super) struct Refill(Arc<Pool>);

impl Drop for Refill {
    fn drop(&mut self) {
        self.0.wake.notify_one();
    }
}

/// Every graph's pool.
#[derive(Default)]
pub(super) struct Pools {
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    closed: AtomicBool,
}

/// One graph's waiting workers.
pub(super) struct Pool {
    /// The graph as it was when the pool was made.
    graph: Arc<Graph>,
    idle: Mutex<VecDeque<Idle>>,
    /// Wakes the filler: a taken worker is ready (or failed), or a waiting one died.
    wake: Notify,
    /// Set once the pool is retired.
    closing: watch::Sender<bool>,
    /// Failures in a row (a worker that died waiting or never got ready); the filler backs off.
    failures: AtomicU32,
    filler: Mutex<Option<JoinHandle<()>>>,
    /// Where waiting workers' output and agentd's notes about them go.
    log: Arc<LogSink>,
}

/// A waiting worker.
struct Idle {
    proc: Proc,
    property_path: PathBuf,
    /// Notices the worker's death; aborted by whoever takes the worker out of the list.
    watch: JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// True when a pool made for `a` serves `b`: the same file and the same graph object.
fn same_graph(a: &Graph, b: &Graph) -> bool {
    a.source == b.source && a.value == b.value
}

/// Keeps the pools in step with the catalog for the life of the supervisor.
pub(super) fn start(inner: &Arc<Inner>) {
    let mut rx = inner.catalog.subscribe();
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        loop {
            let catalog = rx.borrow_and_update().clone();
            let Some(inner) = weak.upgrade() else { return };
            inner.prewarm.reconcile(&inner, &catalog);
            drop(inner);
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}

impl Pools {
    /// Starts a pool for each graph that asks for one and has none for its current version;
    /// retires the others.
    fn reconcile(&self, inner: &Arc<Inner>, catalog: &Catalog) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let mut pools = lock(&self.pools);
        let mut retired = Vec::new();
        pools.retain(|name, pool| {
            let keep = catalog
                .get(name)
                .is_some_and(|g| g.runtime.prewarm > 0 && same_graph(g, &pool.graph));
            if !keep {
                retired.push(pool.clone());
            }
            keep
        });
        for g in catalog.graphs().iter().filter(|g| g.runtime.prewarm > 0) {
            if pools.contains_key(&g.name) {
                continue;
            }
            let pool = Arc::new(Pool {
                graph: g.clone(),
                idle: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
                closing: watch::Sender::new(false),
                failures: AtomicU32::new(0),
                filler: Mutex::new(None),
                log: Plan::prewarm_log_sink(&inner.settings, &g.name),
            });
            let filler = tokio::spawn(fill(inner.clone(), pool.clone()));
            *lock(&pool.filler) = Some(filler);
            pools.insert(g.name.clone(), pool);
        }
        drop(pools);
        for pool in retired {
            tracing::info!(graph = %pool.graph.name, "graph changed: replacing its prewarmed workers");
            let inner = inner.clone();
            tokio::spawn(async move { pool.close(&inner).await });
        }
    }

    /// A waiting worker of `graph` (as it is now), if one is ready to be taken. Its replacement
    /// is started once the returned [`Warm`] (its `refill`) is dropped.
    pub fn take(&self, inner: &Arc<Inner>, graph: &Graph) -> Option<Warm> {
        let pool = lock(&self.pools).get(&graph.name).cloned()?;
        if !same_graph(&pool.graph, graph) {
            return None;
        }
        loop {
            let Some(mut idle) = lock(&pool.idle).pop_front() else {
                pool.wake.notify_one();
                return None;
            };
            idle.watch.abort();
            match idle.proc.child.try_wait() {
                Ok(None) => {
                    pool.failures.store(0, Ordering::SeqCst);
                    return Some(Warm {
                        proc: idle.proc,
                        property_path: idle.property_path,
                        refill: Refill(pool.clone()),
                    });
                }
                // It died just now, before its watch noticed.
                died => {
                    let died = died.ok().flatten();
                    inner
                        .rt
                        .spawn(buried(inner.clone(), pool.clone(), idle.proc, died));
                }
            }
        }
    }

    /// How many workers wait for `graph` now.
    pub fn waiting(&self, graph: &str) -> usize {
        lock(&self.pools)
            .get(graph)
            .map_or(0, |p| lock(&p.idle).len())
    }

    /// Stops every waiting worker and starts no more (shutdown).
    pub async fn close(&self, inner: &Inner) {
        self.closed.store(true, Ordering::SeqCst);
        let pools: Vec<Arc<Pool>> = lock(&self.pools).drain().map(|(_, p)| p).collect();
        futures_util::future::join_all(pools.iter().map(|p| p.close(inner))).await;
    }

    /// Kills every waiting worker at once (a second signal at shutdown).
    pub fn kill_all_now(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for pool in lock(&self.pools).values() {
            let _ = pool.closing.send(true);
            for idle in lock(&pool.idle).iter() {
                idle.proc.hold.kill_now();
            }
        }
    }
}

impl Pool {
    fn is_closed(&self) -> bool {
        *self.closing.borrow()
    }

    /// Retires the pool: the filler ends, every waiting worker is stopped.
    async fn close(&self, inner: &Inner) {
        let _ = self.closing.send(true);
        self.wake.notify_one();
        let filler = lock(&self.filler).take();
        if let Some(f) = filler {
            let _ = f.await;
        }
        let idle: Vec<Idle> = lock(&self.idle).drain(..).collect();
        let stops = idle.into_iter().map(|i| {
            i.watch.abort();
            retire(inner, self, i.proc, "no longer needed")
        });
        futures_util::future::join_all(stops).await;
    }

    /// Waits until the pool is retired.
    async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// How warming one worker failed.
enum WarmError {
    /// It could not be started or died: try again after the backoff.
    Failed(String),
    /// It does not implement the handover: the graph is started cold from now on.
    Unsupported(String),
    /// The pool was retired meanwhile.
    Closed,
}

impl From<StartError> for WarmError {
    fn from(e: StartError) -> Self {
        WarmError::Failed(e.to_string())
    }
}

/// Keeps the pool at the graph's `prewarm` waiting workers until it is retired.
async fn fill(inner: Arc<Inner>, pool: Arc<Pool>) {
    let want = pool.graph.runtime.prewarm as usize;
    loop {
        if pool.is_closed() {
            return;
        }
        if lock(&pool.idle).len() >= want {
            tokio::select! {
                _ = pool.wake.notified() => {}
                _ = pool.closed() => return,
            }
            continue;
        }
        let failures = pool.failures.load(Ordering::SeqCst);
        if failures > 0 {
            tokio::select! {
                _ = sleep(plan::backoff(failures)) => {}
                _ = pool.closed() => return,
            }
        }
        match warm_one(&inner, &pool).await {
            Ok((proc, property_path)) => {
                let pid = proc.pid;
                let exit = proc.child.exit_watch();
                let worker_id = proc.worker_id.clone();
                // Listed before its watch can look for it (to take it out when it dies).
                {
                    let mut idle = lock(&pool.idle);
                    let watch =
                        tokio::spawn(watch_idle(inner.clone(), pool.clone(), worker_id, exit));
                    idle.push_back(Idle {
                        proc,
                        property_path,
                        watch,
                    });
                }
                tracing::info!(graph = %pool.graph.name, pid, "prewarmed worker waiting");
                pool.log
                    .note(&format!("prewarmed worker {pid} waiting"))
                    .await;
            }
            Err(WarmError::Closed) => return,
            Err(WarmError::Unsupported(why)) => {
                tracing::warn!(
                    graph = %pool.graph.name,
                    "runtime.prewarm: the worker does not implement the prewarm handover ({why}); \
                     this graph's workers are started cold"
                );
                pool.log
                    .note(&format!("prewarm off: the worker {why}"))
                    .await;
                pool.closed().await;
                return;
            }
            Err(WarmError::Failed(why)) => {
                let n = pool.failures.fetch_add(1, Ordering::SeqCst) + 1;
                tracing::warn!(graph = %pool.graph.name, failures = n, "prewarming a worker failed: {why}");
                pool.log.note(&format!("prewarm failed: {why}")).await;
            }
        }
    }
}

/// Starts one worker and waits for its `PREWARM=1`; the worker and where its file goes.
async fn warm_one(inner: &Arc<Inner>, pool: &Pool) -> Result<(Proc, PathBuf), WarmError> {
    let property_path = inner.run_dir.join(format!(
        "prewarm-{}-{}.json",
        logs::safe_stem(&pool.graph.name),
        crate::ids::worker_id()
    ));
    let plan = Plan::prewarm(
        &inner.settings,
        &pool.graph,
        property_path.clone(),
        pool.log.clone(),
    );
    let mut proc = spawn::spawn(inner, &plan, None).await?;
    let pgid = proc.pid;
    let until = Instant::now() + plan.start_timeout();
    let outcome = loop {
        tokio::select! {
            biased;
            st = proc.child.wait() => {
                let why = match st {
                    Ok(st) => format!("exited before it was waiting ({})", describe(&st)),
                    Err(e) => format!("cannot be waited for: {e}"),
                };
                stop::reap(&proc.hold, Vec::new()).await;
                finish(inner, pool, &mut proc, &why).await;
                return Err(WarmError::Failed(why));
            }
            r = proc.notify.next(pgid) => match r {
                Ok(n) if n.prewarm => break Ok(()),
                Ok(n) if n.ready => break Err(WarmError::Unsupported("said READY=1 without a channel".into())),
                Ok(_) => {}
                Err(e) => break Err(WarmError::Failed(format!("notify socket failed: {e}"))),
            },
            _ = sleep_until(until) => break Err(WarmError::Unsupported("did not say PREWARM=1 in time".into())),
            _ = pool.closed() => break Err(WarmError::Closed),
        }
    };
    match outcome {
        Ok(()) if !pool.is_closed() => Ok((proc, property_path)),
        Ok(()) => {
            retire(inner, pool, proc, "no longer needed").await;
            Err(WarmError::Closed)
        }
        Err(e) => {
            retire(inner, pool, proc, "not used").await;
            Err(e)
        }
    }
}

/// Watches a waiting worker until it dies (then takes it out of the list and replaces it); a
/// `/start` that takes the worker, or the pool's retirement, aborts this first.
async fn watch_idle(inner: Arc<Inner>, pool: Arc<Pool>, worker_id: String, mut exit: ExitWatch) {
    loop {
        exit.changed().await;
        let gone = {
            let mut idle = lock(&pool.idle);
            let Some(at) = idle.iter().position(|i| i.proc.worker_id == worker_id) else {
                return;
            };
            match idle[at].proc.child.try_wait() {
                Ok(None) => None,
                Ok(st) => idle.remove(at).map(|i| (i.proc, st)),
                Err(_) => idle.remove(at).map(|i| (i.proc, None)),
            }
        };
        match gone {
            Some((proc, died)) => return buried(inner, pool, proc, died).await,
            // Not this worker's exit (a SIGCHLD of another process): look again later, so that
            // a watch that keeps saying "changed" cannot spin.
            None => sleep(Duration::from_millis(50)).await,
        }
    }
}

/// After a waiting worker died (`died`: its status, if it could be collected): its group is
/// killed and reaped, and the filler replaces it after the backoff.
async fn buried(inner: Arc<Inner>, pool: Arc<Pool>, mut proc: Proc, died: Option<ExitStatus>) {
    let why = match died {
        Some(st) => format!("exited while waiting ({})", describe(&st)),
        None => "cannot be waited for".to_string(),
    };
    tracing::warn!(graph = %pool.graph.name, pid = proc.pid, "prewarmed worker {why}");
    proc.hold.kill_now();
    let _ = proc.child.wait().await;
    stop::reap(&proc.hold, Vec::new()).await;
    finish(&inner, &pool, &mut proc, &why).await;
    pool.failures.fetch_add(1, Ordering::SeqCst);
    pool.wake.notify_one();
}

/// Stops a worker that will not be used, and everything it started.
async fn retire(inner: &Inner, pool: &Pool, mut proc: Proc, why: &str) {
    // Its stdin closes with it: a worker that implements the handover exits on its own.
    drop(proc.child.stdin.take());
    let out = stop::stop(
        &mut proc.child,
        &proc.hold,
        inner.settings.worker_stop_grace,
    )
    .await;
    finish(inner, pool, &mut proc, &format!("{why} ({})", out.how)).await;
}

/// After a waiting worker and its group are gone: its record goes, its output drains.
async fn finish(inner: &Inner, pool: &Pool, proc: &mut Proc, why: &str) {
    inner.records.remove(&proc.worker_id);
    for p in proc.pumps.drain(..) {
        let _ = tokio::time::timeout(PUMP_WAIT, p).await;
    }
    pool.log
        .note(&format!("prewarmed worker {} {why}", proc.pid))
        .await;
}

/// Stops a taken worker that a `/start` could not use after all (in the background); its
/// replacement is started.
pub(super) fn discard(inner: &Arc<Inner>, warm: Option<Warm>) {
    let Some(mut warm) = warm else { return };
    drop(warm.refill);
    let inner = inner.clone();
    inner.rt.clone().spawn(async move {
        drop(warm.proc.child.stdin.take());
        let grace = inner.settings.worker_stop_grace;
        let out = stop::stop(&mut warm.proc.child, &warm.proc.hold, grace).await;
        inner.records.remove(&warm.proc.worker_id);
        tracing::info!(
            pid = warm.proc.pid,
            how = out.how,
            "prewarmed worker not used: stopped"
        );
    });
}
