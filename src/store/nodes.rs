//! Nodes sharing one PostgreSQL database, and which node runs each channel's worker: the SQL of
//! `nodes` and `channel_owners`. The node task that calls it (heartbeats, takeovers) is
//! `crate::cluster`'s. Used only on PostgreSQL: one SQLite node has nobody to share with.

use super::sql::{args, Db};
use super::{Store, StoreError};

/// A start taking a channel for this node.
#[derive(Debug, Clone)]
pub struct OwnerClaim {
    pub channel: String,
    pub node_id: String,
    /// Names this start of the channel (see the table's `claim_id`).
    pub claim_id: String,
    pub graph: String,
    /// The validated start request, as JSON text.
    pub start_request: String,
    pub lease_ms: i64,
}

/// What a node's heartbeat says and renews.
#[derive(Debug, Clone)]
pub struct NodeBeat {
    pub id: String,
    pub address: String,
    pub capacity: i64,
    pub workers: i64,
    pub started_at: i64,
    pub lease_ms: i64,
    /// The channels this node runs now: their leases are renewed.
    pub channels: Vec<String>,
    /// When `channels` was read: a claim newer than that is renewed too (its start is on).
    pub since: i64,
    /// Rows of workers gone for good whose removal failed before (`(channel, claim_id)`).
    pub released: Vec<(String, String)>,
}

/// A channel whose owner's lease ran out, now claimed by this node to start again.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub channel: String,
    /// The worker of the dead owner (its dispatch leases go back at once).
    pub worker_id: Option<String>,
    pub graph: String,
    pub start_request: String,
    pub restarts: i64,
}

/// A live node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    pub id: String,
    pub address: String,
}

/// A channel with a live owner, as the whole cluster sees it.
#[derive(Debug, Clone)]
pub struct OwnedChannel {
    pub channel: String,
    pub node_id: String,
    pub worker_id: Option<String>,
    pub graph: String,
    pub restarts: i64,
    pub started_at: i64,
    pub chat_id: Option<String>,
}

/// The database's clock in epoch ms. Leases and heartbeats are set and compared on it, never on a
/// node's own clock: nodes on machines whose clocks disagree still agree on whose lease ran out.
/// (`started_at` stays on the node's clock: only the node that wrote it compares it.)
const DB_NOW: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

impl Store {
    /// Takes `claim.channel` for `claim.node_id` unless another node holds it under a live
    /// lease; false when it does. One statement: two nodes claiming at once, one wins.
    pub async fn claim_channel(&self, claim: OwnerClaim) -> Result<bool, StoreError> {
        self.write(move |w| {
            let rows = w.c.query(
                &format!("INSERT INTO channel_owners (channel, node_id, claim_id, worker_id, graph, start_request, lease_until, restarts, started_at) \
                 VALUES (?1, ?2, ?3, NULL, ?4, ?5, {DB_NOW} + ?6, 0, ?7) \
                 ON CONFLICT (channel) DO UPDATE SET node_id = excluded.node_id, claim_id = excluded.claim_id, \
                   worker_id = NULL, graph = excluded.graph, start_request = excluded.start_request, \
                   lease_until = excluded.lease_until, started_at = excluded.started_at, \
                   restarts = CASE WHEN channel_owners.node_id = excluded.node_id AND channel_owners.claim_id IS NULL \
                                   THEN channel_owners.restarts ELSE 0 END \
                 WHERE channel_owners.lease_until < {DB_NOW} OR channel_owners.node_id = ?2 \
                 RETURNING channel"),
                args![claim.channel, claim.node_id, claim.claim_id, claim.graph, claim.start_request, claim.lease_ms, w.now],
            )?;
            Ok(!rows.is_empty())
        })
        .await
    }

    /// Records the worker process now running a claimed channel.
    pub async fn owner_worker(
        &self,
        channel: &str,
        claim_id: &str,
        worker_id: &str,
    ) -> Result<(), StoreError> {
        let (c, k, id) = (
            channel.to_string(),
            claim_id.to_string(),
            worker_id.to_string(),
        );
        self.write(move |w| {
            w.c.execute(
                "UPDATE channel_owners SET worker_id = ?3 WHERE channel = ?1 AND claim_id = ?2",
                args![c, k, id],
            )?;
            Ok(())
        })
        .await
    }

    /// The channel's worker is gone for good: its row goes (only that start's).
    pub async fn release_channel(&self, channel: &str, claim_id: &str) -> Result<(), StoreError> {
        let (c, k) = (channel.to_string(), claim_id.to_string());
        self.write(move |w| {
            w.c.execute(
                "DELETE FROM channel_owners WHERE channel = ?1 AND claim_id = ?2",
                args![c, k],
            )?;
            Ok(())
        })
        .await
    }

    /// A worker stopped by a graceful shutdown: its channel's lease ends now, for a live node
    /// to start it again.
    pub async fn hand_over(&self, channel: &str, claim_id: &str) -> Result<(), StoreError> {
        let (c, k) = (channel.to_string(), claim_id.to_string());
        self.write(move |w| {
            w.c.execute(
                "UPDATE channel_owners SET lease_until = 0 WHERE channel = ?1 AND claim_id = ?2",
                args![c, k],
            )?;
            Ok(())
        })
        .await
    }

    /// One heartbeat, in one transaction: rows of gone workers removed, the node's row
    /// written, and the leases of the channels it runs renewed.
    pub async fn node_heartbeat(&self, beat: NodeBeat) -> Result<(), StoreError> {
        self.write(move |w| {
            for (channel, claim) in &beat.released {
                w.c.execute(
                    "DELETE FROM channel_owners WHERE channel = ?1 AND claim_id = ?2",
                    args![channel, claim],
                )?;
            }
            let channels = serde_json::to_string(&beat.channels)
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            w.c.execute(
                &format!("WITH n AS (INSERT INTO nodes (id, address, capacity, workers, heartbeat_at, started_at) \
                   VALUES (?1, ?2, ?3, ?4, {DB_NOW}, ?5) \
                   ON CONFLICT (id) DO UPDATE SET address = excluded.address, capacity = excluded.capacity, \
                     workers = excluded.workers, heartbeat_at = excluded.heartbeat_at RETURNING id) \
                 UPDATE channel_owners SET lease_until = {DB_NOW} + ?6 \
                 WHERE node_id = ?1 AND (started_at >= ?7 \
                   OR channel IN (SELECT json_array_elements_text(CAST(?8 AS json))))"),
                args![
                    beat.id,
                    beat.address,
                    beat.capacity,
                    beat.workers,
                    beat.started_at,
                    beat.lease_ms,
                    beat.since,
                    channels
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// The node leaves (a graceful shutdown): it is no longer placed on.
    pub async fn node_leave(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |w| {
            w.c.execute("DELETE FROM nodes WHERE id = ?1", args![id])?;
            Ok(())
        })
        .await
    }

    /// Claims, for `node`, up to `limit` channels whose lease ran out (their owner is dead or
    /// cut off), counting a restart for each; one node wins each channel. `running` are the
    /// channels `node` runs itself (never taken from itself).
    pub async fn take_expired(
        &self,
        node: &str,
        limit: usize,
        lease_ms: i64,
        running: Vec<String>,
    ) -> Result<Vec<Orphan>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let node = node.to_string();
        self.write(move |w| {
            let running = serde_json::to_string(&running)
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let sql = format!(
                "UPDATE channel_owners SET node_id = ?1, claim_id = NULL, lease_until = {DB_NOW} + ?2, \
                   restarts = restarts + 1, started_at = ?3 \
                 WHERE channel IN (SELECT channel FROM channel_owners WHERE lease_until < {DB_NOW} \
                   AND NOT (node_id = ?1 AND channel IN (SELECT json_array_elements_text(CAST(?5 AS json)))) \
                   ORDER BY lease_until LIMIT ?4{}) \
                 RETURNING channel, worker_id, graph, start_request, restarts",
                w.c.dialect().skip_locked()
            );
            w.c.all_map(
                &sql,
                args![node, lease_ms, w.now, limit, running],
                |r| {
                    Ok(Orphan {
                        channel: r.get(0)?,
                        worker_id: r.get(1)?,
                        graph: r.get(2)?,
                        start_request: r.get(3)?,
                        restarts: r.get(4)?,
                    })
                },
            )
        })
        .await
    }

    /// A taken-over channel this node cannot start now (no room): its lease ends at once, so
    /// another node can take it.
    pub async fn hand_back(&self, channel: &str, node: &str) -> Result<(), StoreError> {
        let (c, n) = (channel.to_string(), node.to_string());
        self.write(move |w| {
            w.c.execute(
                "UPDATE channel_owners SET lease_until = 0 \
                 WHERE channel = ?1 AND node_id = ?2 AND claim_id IS NULL",
                args![c, n],
            )?;
            Ok(())
        })
        .await
    }

    /// A taken-over channel whose start failed here (which removed its row): its row again, with
    /// a lease already ended, so another node takes it. Nothing when the channel was started
    /// meanwhile.
    pub async fn requeue_orphan(&self, o: &Orphan, node: &str) -> Result<(), StoreError> {
        let (o, n) = (o.clone(), node.to_string());
        self.write(move |w| {
            w.c.execute(
                "INSERT INTO channel_owners (channel, node_id, claim_id, worker_id, graph, start_request, lease_until, restarts, started_at) \
                 VALUES (?1, ?2, NULL, NULL, ?3, ?4, 0, ?5, ?6) ON CONFLICT (channel) DO NOTHING",
                args![o.channel, n, o.graph, o.start_request, o.restarts, w.now],
            )?;
            Ok(())
        })
        .await
    }

    /// A taken-over channel that cannot start anywhere (its request is refused here): its row
    /// goes.
    pub async fn drop_orphan(&self, channel: &str, node: &str) -> Result<(), StoreError> {
        let (c, n) = (channel.to_string(), node.to_string());
        self.write(move |w| {
            w.c.execute(
                "DELETE FROM channel_owners WHERE channel = ?1 AND node_id = ?2 AND claim_id IS NULL",
                args![c, n],
            )?;
            Ok(())
        })
        .await
    }

    /// The node that holds `channel` under a live lease, and its address.
    pub async fn channel_owner(&self, channel: &str) -> Result<Option<NodeRef>, StoreError> {
        let c = channel.to_string();
        self.read(move |db: &dyn Db, _, _| {
            db.opt_map(
                &format!("SELECT o.node_id, n.address FROM channel_owners o JOIN nodes n ON n.id = o.node_id \
                 WHERE o.channel = ?1 AND o.lease_until >= {DB_NOW}"),
                args![c],
                |r| Ok(NodeRef { id: r.get(0)?, address: r.get(1)? }),
            )
        })
        .await
    }

    /// The live node (heartbeat within `lease_ms`) with the most free capacity (capacity less
    /// the channels it holds); `prefer` wins a tie.
    pub async fn place(&self, prefer: &str, lease_ms: i64) -> Result<Option<NodeRef>, StoreError> {
        let prefer = prefer.to_string();
        self.read(move |db: &dyn Db, _, _| {
            db.opt_map(
                &format!("SELECT n.id, n.address FROM nodes n WHERE n.heartbeat_at >= {DB_NOW} - ?1 \
                 ORDER BY n.capacity - (SELECT COUNT(*) FROM channel_owners o \
                                        WHERE o.node_id = n.id AND o.lease_until >= {DB_NOW}) DESC, \
                          CASE WHEN n.id = ?2 THEN 0 ELSE 1 END, n.id LIMIT 1"),
                args![lease_ms, prefer],
                |r| {
                    Ok(NodeRef {
                        id: r.get(0)?,
                        address: r.get(1)?,
                    })
                },
            )
        })
        .await
    }

    /// Every channel with a live owner, ordered by channel.
    pub async fn owned_channels(&self) -> Result<Vec<OwnedChannel>, StoreError> {
        self.read(move |db: &dyn Db, _, _| {
            let chat = db.dialect().json_text("start_request", "chat_id");
            db.all_map(
                &format!(
                    "SELECT channel, node_id, worker_id, graph, restarts, started_at, {chat} \
                     FROM channel_owners WHERE lease_until >= {DB_NOW} ORDER BY channel"
                ),
                args![],
                |r| {
                    Ok(OwnedChannel {
                        channel: r.get(0)?,
                        node_id: r.get(1)?,
                        worker_id: r.get(2)?,
                        graph: r.get(3)?,
                        restarts: r.get(4)?,
                        started_at: r.get(5)?,
                        chat_id: r.get(6)?,
                    })
                },
            )
        })
        .await
    }
}
