//! What the dispatch queue holds right now: how many inputs and batches wait in each open state,
//! and since when. Read in one snapshot, through the partial indexes of the open states, so it
//! stays cheap however many completed batches the table keeps.

use super::super::error::StoreError;
use super::super::sql::{args, DbError, Row};
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

/// One statement, so the counts describe one moment on every engine.
const SQL: &str = "SELECT \
    (SELECT COUNT(*) FROM dispatch_inputs WHERE state = 'pending'), \
    (SELECT MIN(created_at) FROM dispatch_inputs WHERE state = 'pending'), \
    (SELECT COUNT(*) FROM dispatch_batches WHERE status = 'pending'), \
    (SELECT MIN(created_at) FROM dispatch_batches WHERE status = 'pending'), \
    (SELECT COUNT(*) FROM dispatch_batches WHERE status = 'pending' AND available_at > ?1), \
    (SELECT COUNT(*) FROM dispatch_batches WHERE status = 'leased'), \
    (SELECT MIN(created_at) FROM dispatch_batches WHERE status = 'leased')";

fn count(r: &Row, i: usize) -> Result<u64, StoreError> {
    Ok(r.get::<i64>(i)?.max(0) as u64)
}

fn bucket(r: &Row, i: usize) -> Result<Bucket, StoreError> {
    Ok(Bucket {
        count: count(r, i)?,
        oldest_at: r.get(i + 1)?,
    })
}

impl Store {
    /// Counts and oldest creation time of the queue's open states.
    pub async fn queue_state(&self) -> Result<QueueState, StoreError> {
        self.read(|c, _, _| {
            let at = db::now_ms();
            c.opt_map(SQL, args![at], |r| {
                Ok(QueueState {
                    at,
                    inputs_pending: bucket(r, 0)?,
                    batches_pending: bucket(r, 2)?,
                    batches_delayed: count(r, 4)?,
                    batches_leased: bucket(r, 5)?,
                })
            })?
            .ok_or_else(|| StoreError::Database(DbError::other("no row from the queue's counts")))
        })
        .await
    }
}
