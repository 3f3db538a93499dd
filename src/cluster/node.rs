//! The node task: a heartbeat every third of the lease (the node's row, and the leases of the
//! channels it runs, renewed in one transaction), the takeover of channels whose lease ran out,
//! and the fence: a node that could not renew for 0.8 × the lease stops its own workers before
//! anyone else may start them.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{request, Cluster};
use crate::store::nodes::{NodeBeat, Orphan};
use crate::store::StoreError;
use crate::supervisor::StartError;

/// The share of the lease after which a node that cannot renew stops its workers.
const FENCE_AT: f64 = 0.8;
/// Takeovers of one channel (its `restarts`) after which a failed start drops it instead of
/// handing it to another node.
const TAKEOVER_TRIES: i64 = 5;
/// How many leases a node leaves a channel alone after failing to start it in a takeover.
const FAILED_HOLD_LEASES: u32 = 10;

/// Runs the heartbeat, takeover and fence loops until the supervisor shuts down.
pub(super) async fn run(cluster: Cluster) {
    let lease = cluster.inner.lease;
    tokio::spawn(fence(cluster.clone()));
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut failing = false;
    loop {
        tick.tick().await;
        if cluster.inner.supervisor.is_shutting_down() {
            return;
        }
        // A heartbeat stuck on a dead connection must not stall takeovers and fencing forever.
        let beat = tokio::time::timeout(lease, cluster.heartbeat()).await;
        match beat {
            Ok(Ok(())) if failing => {
                failing = false;
                tracing::info!("cluster: heartbeats get through again");
            }
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cluster: heartbeat failed; this node's leases are not renewed");
            }
            Err(_) if !failing => {
                failing = true;
                tracing::warn!("cluster: heartbeat timed out; this node's leases are not renewed");
            }
            _ => {}
        }
        if !failing && !cluster.is_fenced() {
            if let Err(e) = cluster.take_over().await {
                tracing::warn!(error = %e, "cluster: cannot look for channels of dead nodes");
            }
        }
    }
}

/// Stops every worker of this node while it cannot renew its leases.
async fn fence(cluster: Cluster) {
    let inner = &cluster.inner;
    let limit = inner.lease.mul_f64(FENCE_AT);
    let every = (inner.lease / 10).max(Duration::from_millis(20));
    // Fencing begins by FENCE_AT plus one check of the lease; its workers must be gone before the
    // lease runs out, whatever WORKER_STOP_GRACE_MS says: past this, they are killed.
    let kill_within = inner.lease / 20;
    loop {
        tokio::time::sleep(every).await;
        if inner.supervisor.is_shutting_down() {
            return;
        }
        let since = inner
            .renewed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        if since < limit {
            continue;
        }
        if !inner.fenced.swap(true, Ordering::SeqCst) {
            tracing::error!(
                node = %inner.node_id,
                since_ms = since.as_millis() as u64,
                lease_ms = inner.lease.as_millis() as u64,
                "cluster: FENCED: this node cannot renew its leases in the database; stopping all \
                 its workers (other nodes start their channels once the leases run out) and \
                 refusing starts until it can renew again"
            );
        }
        if !inner.supervisor.list().is_empty() {
            let n = inner
                .supervisor
                .stop_all("fenced: the node's leases cannot be renewed", kill_within)
                .await;
            tracing::error!(workers = n, "cluster: fenced node stopped its workers");
        }
    }
}

impl Cluster {
    /// One heartbeat; on success the fence (if any) lifts.
    pub(super) async fn heartbeat(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let sent = Instant::now();
        let since = chrono::Utc::now().timestamp_millis();
        let channels: Vec<String> = inner
            .supervisor
            .list()
            .into_iter()
            .map(|w| w.channel)
            .collect();
        let released =
            std::mem::take(&mut *inner.unreleased.lock().unwrap_or_else(|e| e.into_inner()));
        let beat = NodeBeat {
            id: inner.node_id.clone(),
            address: inner.address.clone(),
            capacity: inner.capacity as i64,
            workers: channels.len() as i64,
            started_at: inner.started_at,
            lease_ms: inner.lease.as_millis() as i64,
            channels,
            since,
            released: released.clone(),
        };
        if let Err(e) = inner.store.node_heartbeat(beat).await {
            inner
                .unreleased
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(released);
            return Err(e);
        }
        {
            let mut renewed = inner.renewed.lock().unwrap_or_else(|e| e.into_inner());
            if sent > *renewed {
                *renewed = sent;
            }
        }
        if inner.fenced.swap(false, Ordering::SeqCst) {
            tracing::warn!(node = %inner.node_id, "cluster: leases renewed again: this node takes starts again");
        }
        Ok(())
    }

    /// Claims the channels of dead (or cut off) nodes, as many as this node has room for, and
    /// starts each again here.
    async fn take_over(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let mut running: Vec<String> = inner
            .supervisor
            .list()
            .into_iter()
            .map(|w| w.channel)
            .collect();
        let free = inner.capacity.saturating_sub(running.len());
        // Channels that failed to start here lately are left to the other nodes.
        {
            let mut failed = inner.failed_here.lock().unwrap_or_else(|e| e.into_inner());
            let hold = inner.lease * FAILED_HOLD_LEASES;
            failed.retain(|_, at| at.elapsed() < hold);
            running.extend(failed.keys().cloned());
        }
        let orphans = inner
            .store
            .take_expired(
                &inner.node_id,
                free,
                inner.lease.as_millis() as i64,
                running,
            )
            .await?;
        for o in orphans {
            tokio::spawn(self.clone().restart(o));
        }
        Ok(())
    }

    /// Starts a taken-over channel again, from its start request, with its chat.
    async fn restart(self, o: Orphan) {
        let inner = &self.inner;
        let Some(spec) = request::from_json(&o.start_request) else {
            tracing::error!(channel = %o.channel, "cluster: the channel's start request cannot be read; it is not restarted");
            let _ = inner.store.drop_orphan(&o.channel, &inner.node_id).await;
            return;
        };
        // The dead worker's dispatch leases go back now, for the new worker to claim.
        if let Some(w) = &o.worker_id {
            inner.store.worker_gone(w).await;
        }
        crate::observe::worker_restarted(&o.graph);
        tracing::warn!(
            channel = %o.channel, graph = %o.graph, restarts = o.restarts,
            "cluster: the channel's node stopped renewing its lease: starting it again here"
        );
        match inner.supervisor.start(spec).await {
            Ok(w) => {
                tracing::info!(channel = %o.channel, pid = w.pid, "cluster: channel restarted on this node")
            }
            Err(StartError::ChannelExists(_)) => {}
            Err(
                e @ (StartError::WorkersLimit { .. }
                | StartError::GraphLimit { .. }
                | StartError::ShuttingDown
                | StartError::Unavailable(_)),
            ) => {
                tracing::warn!(channel = %o.channel, error = %e, "cluster: no room to restart the channel here; handed to another node");
                let _ = inner.store.hand_back(&o.channel, &inner.node_id).await;
            }
            // It may start on another node (this one may lack what its graph runs): handed
            // over, up to a bound, then given up.
            Err(e) if o.restarts < TAKEOVER_TRIES => {
                tracing::warn!(channel = %o.channel, error = %e, restarts = o.restarts, "cluster: the channel failed to start here; handed to another node");
                inner
                    .failed_here
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(o.channel.clone(), Instant::now());
                // The failed start removed the row; it goes back with its lease ended.
                if let Err(e) = inner.store.requeue_orphan(&o, &inner.node_id).await {
                    tracing::error!(channel = %o.channel, error = %e, "cluster: the channel could not be handed on");
                }
            }
            Err(e) => {
                tracing::error!(channel = %o.channel, error = %e, restarts = o.restarts, "cluster: the channel cannot be restarted; given up");
                let _ = inner.store.drop_orphan(&o.channel, &inner.node_id).await;
            }
        }
    }
}
