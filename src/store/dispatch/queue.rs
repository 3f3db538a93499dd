//! What the dispatch queue holds right now: how many inputs and batches wait in each open state,
//! and since when. Read in one snapshot, through the partial indexes of the open states, so it
//! stays cheap however many completed batches the table keeps.

use rusqlite::{params, Connection};

use super::super::error::StoreError;
use super::super::{db, Store};

/// How many items are in one state, and when the oldest of them was created (epoch ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    pub count: u64,
    pub oldest_at: Option<i64>,
}

/// The open states of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueState {
    /// When it was read (epoch ms).
    pub at: i64,
    /// User messages (and resolutions) not yet sealed into a batch: in a batching window.
    pub inputs_pending: Bucket,
    /// Sealed batches waiting for a claim...
    pub batches_pending: Bucket,
    /// ...of which this many wait out a retry delay.
    pub batches_delayed: u64,
    /// Batches a worker holds a lease on.
    pub batches_leased: Bucket,
}

fn bucket(c: &Connection, sql: &str) -> rusqlite::Result<Bucket> {
    c.prepare_cached(sql)?.query_row([], |r| {
        Ok(Bucket {
            count: r.get::<_, i64>(0)?.max(0) as u64,
            oldest_at: r.get(1)?,
        })
    })
}

impl Store {
    /// Counts and oldest creation time of the queue's open states.
    pub async fn queue_state(&self) -> Result<QueueState, StoreError> {
        self.read(|c, _, _| {
            // One read transaction: the three counts describe one moment.
            let tx = c.unchecked_transaction()?;
            let at = db::now_ms();
            let inputs_pending = bucket(
                &tx,
                "SELECT COUNT(*), MIN(created_at) FROM dispatch_inputs WHERE state = 'pending'",
            )?;
            let batches_pending = bucket(
                &tx,
                "SELECT COUNT(*), MIN(created_at) FROM dispatch_batches WHERE status = 'pending'",
            )?;
            let batches_delayed: i64 = tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM dispatch_batches WHERE status = 'pending' AND available_at > ?1",
                )?
                .query_row(params![at], |r| r.get(0))?;
            let batches_leased = bucket(
                &tx,
                "SELECT COUNT(*), MIN(created_at) FROM dispatch_batches WHERE status = 'leased'",
            )?;
            Ok(QueueState {
                at,
                inputs_pending,
                batches_pending,
                batches_delayed: batches_delayed.max(0) as u64,
                batches_leased,
            })
        })
        .await
    }
}
