//! Several agentd nodes on one PostgreSQL database: each node registers itself, owns the
//! channels whose workers it runs under a lease it renews, restarts the channels of a node whose
//! lease ran out, and stops its own workers when it cannot renew (fencing). The SQL is the
//! store's (`store::nodes`); the routes that forward to the owner are `http::supervisor`'s.
//!
//! Only with `DATABASE_URL=postgres://…`: on SQLite there is no [`Cluster`] and a start, ping or
//! stop does no database work of this kind.

mod forward;
mod node;
mod request;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::settings::Settings;
use crate::store::nodes::{NodeRef, OwnedChannel, OwnerClaim};
use crate::store::Store;
use crate::supervisor::{Claimed, Ownership, Released, StartError, StartSpec, Supervisor};

pub use forward::{Forwarded, FORWARDED_HEADER};

/// This node among those sharing the database; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    address: String,
    /// Random per process: with the registry's generation, names each start's claim.
    incarnation: String,
    lease: Duration,
    capacity: usize,
    started_at: i64,
    store: Store,
    supervisor: Supervisor,
    /// Set while this node cannot renew its leases and has stopped its workers.
    fenced: AtomicBool,
    /// When a heartbeat last got through (the moment it was sent).
    renewed: Mutex<Instant>,
    /// Set once a graceful shutdown begins: the workers it stops are handed over, not ended.
    leaving: AtomicBool,
    /// Channels stopped by the shutdown, handed to other nodes by [`Cluster::leave`].
    handed: Mutex<Vec<(String, String)>>,
    /// Rows of workers gone for good whose removal failed: retried with the next heartbeat.
    unreleased: Mutex<Vec<(String, String)>>,
    /// Taken-over channels whose worker failed to start here, and when: handed to other nodes,
    /// not taken again here for a while.
    failed_here: Mutex<std::collections::HashMap<String, Instant>>,
    client: reqwest::Client,
    /// Longest a forwarded request may take (a start waits for its worker to be ready).
    forward_timeout: Duration,
}

impl Cluster {
    /// Joins the cluster: registers this node, claims channels for its starts (through the
    /// supervisor's [`Ownership`]) and starts the node task. `address` is where other nodes
    /// reach this one when `NODE_ADDRESS` is unset.
    pub async fn join(
        settings: &Settings,
        store: Store,
        supervisor: Supervisor,
        address: String,
    ) -> Result<Cluster, crate::store::StoreError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| crate::store::StoreError::Internal(format!("HTTP client: {e}")))?;
        let cluster = Cluster {
            inner: Arc::new(Inner {
                node_id: settings.node_id.clone(),
                address: settings.node_address.clone().unwrap_or(address),
                incarnation: crate::ids::worker_id(),
                lease: settings.node_lease,
                capacity: settings.workers_max,
                started_at: chrono::Utc::now().timestamp_millis(),
                store,
                supervisor: supervisor.clone(),
                fenced: AtomicBool::new(false),
                leaving: AtomicBool::new(false),
                handed: Mutex::new(Vec::new()),
                renewed: Mutex::new(Instant::now()),
                unreleased: Mutex::new(Vec::new()),
                failed_here: Mutex::new(std::collections::HashMap::new()),
                client,
                forward_timeout: settings.worker_start_timeout
                    + settings.worker_stop_grace
                    + Duration::from_secs(10),
            }),
        };
        // Registered before the first request, so placement sees this node at once.
        cluster.heartbeat().await?;
        supervisor.set_ownership(Arc::new(cluster.clone()));
        tracing::info!(
            node = %cluster.inner.node_id,
            address = %cluster.inner.address,
            lease_ms = cluster.inner.lease.as_millis() as u64,
            "cluster: node registered"
        );
        tokio::spawn(node::run(cluster.clone()));
        Ok(cluster)
    }

    /// This node's id (`NODE_ID`).
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Where other nodes reach this one.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// True while this node cannot renew its leases: its workers are stopped, starts refused.
    pub fn is_fenced(&self) -> bool {
        self.inner.fenced.load(Ordering::SeqCst)
    }

    /// Another live node that holds `channel`, if any.
    pub async fn owner_elsewhere(
        &self,
        channel: &str,
    ) -> Result<Option<NodeRef>, crate::store::StoreError> {
        Ok(self
            .inner
            .store
            .channel_owner(channel)
            .await?
            .filter(|n| n.id != self.inner.node_id))
    }

    /// Where a new channel should start: another live node when it has more free capacity than
    /// this one, else `None` (here).
    pub async fn placement(&self) -> Result<Option<NodeRef>, crate::store::StoreError> {
        let lease = self.inner.lease.as_millis() as i64;
        Ok(self
            .inner
            .store
            .place(&self.inner.node_id, lease)
            .await?
            .filter(|n| n.id != self.inner.node_id))
    }

    /// Every channel with a live owner (this node's too), from the rows.
    pub async fn owned(&self) -> Result<Vec<OwnedChannel>, crate::store::StoreError> {
        self.inner.store.owned_channels().await
    }

    /// The longest a forwarded request may take.
    pub fn forward_timeout(&self) -> Duration {
        self.inner.forward_timeout
    }

    /// A graceful shutdown begins: the channels whose workers it stops go to other nodes.
    pub fn begin_leaving(&self) {
        self.inner.leaving.store(true, Ordering::SeqCst);
    }

    /// After the shutdown stopped the workers: their channels' leases end now (live nodes start
    /// them again at once) and this node leaves the list of nodes.
    pub async fn leave(&self) {
        let handed =
            std::mem::take(&mut *self.inner.handed.lock().unwrap_or_else(|e| e.into_inner()));
        let n = handed.len();
        for (channel, claim) in handed {
            if let Err(e) = self.inner.store.hand_over(&channel, &claim).await {
                tracing::warn!(%channel, error = %e, "cluster: cannot hand the channel over; it moves when its lease runs out");
            }
        }
        if let Err(e) = self.inner.store.node_leave(&self.inner.node_id).await {
            tracing::warn!(error = %e, "cluster: cannot remove this node's row");
        }
        tracing::info!(
            channels = n,
            "cluster: node left; its channels were handed to the others"
        );
    }

    fn claim_id(&self, generation: u64) -> String {
        format!(
            "{}:{}:{generation}",
            self.inner.node_id, self.inner.incarnation
        )
    }
}

impl Ownership for Cluster {
    fn claim(&self, generation: u64, spec: &StartSpec, graph: &str) -> Claimed {
        let this = self.clone();
        let claim = OwnerClaim {
            channel: spec.channel.clone(),
            node_id: self.inner.node_id.clone(),
            claim_id: self.claim_id(generation),
            graph: graph.to_string(),
            start_request: request::to_json(spec, graph).to_string(),
            lease_ms: self.inner.lease.as_millis() as i64,
        };
        Box::pin(async move {
            if this.is_fenced() {
                return Err(StartError::Unavailable(
                    "this node cannot renew its leases in the database (fenced)".into(),
                ));
            }
            let channel = claim.channel.clone();
            match this.inner.store.claim_channel(claim).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(StartError::ChannelExists(channel)),
                Err(e) => Err(StartError::Unavailable(format!(
                    "cannot record this node as the channel's owner: {e}"
                ))),
            }
        })
    }

    fn spawned(&self, channel: &str, generation: u64, worker_id: &str) {
        let (this, channel, claim, worker) = (
            self.clone(),
            channel.to_string(),
            self.claim_id(generation),
            worker_id.to_string(),
        );
        tokio::spawn(async move {
            if let Err(e) = this
                .inner
                .store
                .owner_worker(&channel, &claim, &worker)
                .await
            {
                tracing::warn!(%channel, error = %e, "cluster: cannot record the channel's worker id");
            }
        });
    }

    fn released(&self, channel: &str, generation: u64) -> Released {
        let (this, channel, claim) = (self.clone(), channel.to_string(), self.claim_id(generation));
        Box::pin(async move {
            let inner = &this.inner;
            if this.is_fenced() {
                // Its lease runs out and a live node starts the channel again.
                return;
            }
            if inner.leaving.load(Ordering::SeqCst) {
                inner
                    .handed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((channel, claim));
                return;
            }
            if let Err(e) = inner.store.release_channel(&channel, &claim).await {
                tracing::warn!(%channel, error = %e, "cluster: cannot remove the channel's owner row; retried with the next heartbeat");
                inner
                    .unreleased
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((channel, claim));
            }
        })
    }
}
