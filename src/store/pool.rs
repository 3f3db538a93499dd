//! The read connections: a few database connections shared by every read, each used by one
//! blocking thread at a time. (SQLite's WAL lets them read while the writer thread writes.)
//!
//! Hand-written (a semaphore over a stack of connections) rather than r2d2 or deadpool: the pool
//! never grows, never reconnects and never checks health, so those crates would add dependencies
//! and a second runtime model for nothing.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use super::db;
use super::error::StoreError;
use super::sql::Db;

/// A connection of the pool.
pub type Conn = Box<dyn Db + Send>;

/// One read connection per core, at least 2 (so a long replay does not stall every other read)
/// and at most 4 (readers mostly wait on the disk cache, not the CPU).
pub fn default_size() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 4)
}

/// A fixed set of read connections.
pub struct ReadPool {
    idle: Mutex<Vec<Conn>>,
    /// One permit per idle connection: a holder is sure to find one.
    permits: Arc<Semaphore>,
    /// The connections are to a file on this machine (SQLite): a read of a few rows takes
    /// microseconds, which [`now`](Self::now) may spend on the caller's thread.
    local: bool,
}

/// A connection taken from the pool; goes back on drop, even if the read panicked.
struct Lease<'a> {
    pool: &'a ReadPool,
    conn: Option<Conn>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(c);
        }
    }
}

impl ReadPool {
    /// Opens `size` connections to the (already migrated) SQLite database at `path`.
    pub fn open_sqlite(path: &Path, size: usize) -> rusqlite::Result<ReadPool> {
        let conns = (0..size.max(1))
            .map(|_| db::open(path).map(|c| Box::new(c) as Conn))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ReadPool {
            local: true,
            ..ReadPool::of(conns)
        })
    }

    /// A pool of these connections (to a database server: no read runs on the caller's thread).
    pub fn of(conns: Vec<Conn>) -> ReadPool {
        ReadPool {
            permits: Arc::new(Semaphore::new(conns.len())),
            idle: Mutex::new(conns),
            local: false,
        }
    }

    /// Whether the connections are to a local file (SQLite).
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// Runs `f` on the calling thread when the connections are local and one is free now;
    /// otherwise gives `f` back (to [`run`](Self::run)). Only for a read of a few rows by an
    /// index: it holds up the calling (async) thread for tens of microseconds, about what
    /// handing the read to a blocking thread and waking up again for its answer would take.
    pub fn now<T, F>(&self, f: F) -> Result<T, F>
    where
        F: FnOnce(&dyn Db) -> T,
    {
        if !self.local {
            return Err(f);
        }
        let Ok(permit) = self.permits.try_acquire() else {
            return Err(f);
        };
        let conn = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let lease = Lease { pool: self, conn };
        let out = match &lease.conn {
            Some(c) => Ok(f(&**c)),
            None => Err(f),
        };
        // As in `run`: the connection goes back before its permit.
        drop(lease);
        drop(permit);
        out
    }

    /// Waits for a free connection, then runs `f` on it on a blocking thread.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Db) -> T + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Internal("the read pool is closed".into()))?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let lease = Lease { pool: &pool, conn };
            let out = match &lease.conn {
                Some(c) => Ok(f(&**c)),
                None => Err(StoreError::Internal("no idle read connection".into())),
            };
            // The connection goes back before its permit, so the next holder finds it.
            drop(lease);
            drop(permit);
            out
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::time::Duration;

    /// A pool of `size` connections to a new database in a temp dir (kept while the dir lives).
    fn sqlite_pool(size: usize) -> (tempfile::TempDir, Arc<ReadPool>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        db::open(&path).unwrap();
        let pool = Arc::new(ReadPool::open_sqlite(&path, size).unwrap());
        (dir, pool)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_run_side_by_side() {
        let (_dir, pool) = sqlite_pool(2);
        // Each read waits for the other inside its connection: only a pool that lets both run
        // at once gets past the barrier.
        let barrier = Arc::new(Barrier::new(2));
        let read = |b: Arc<Barrier>| {
            let pool = pool.clone();
            async move {
                pool.run(move |c| {
                    b.wait();
                    c.one::<i64>("SELECT 1", &[]).unwrap()
                })
                .await
                .unwrap()
            }
        };
        let both = futures_util::future::join(read(barrier.clone()), read(barrier));
        let got = tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .unwrap();
        assert_eq!(got, (1, 1));
        // Both connections went back.
        assert_eq!(pool.idle.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_panicking_read_gives_its_connection_back() {
        let (_dir, pool) = sqlite_pool(1);
        let r = pool.run(|_| -> i64 { panic!("boom") }).await;
        assert!(matches!(r, Err(StoreError::Internal(_))));
        let r = pool.run(|c| c.one::<i64>("SELECT 2", &[]).unwrap()).await;
        assert_eq!(r.unwrap(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_now_runs_here_only_on_a_free_local_connection() {
        let (dir, pool) = sqlite_pool(1);
        let here = std::thread::current().id();
        let got = pool.now(|c| {
            (
                std::thread::current().id(),
                c.one::<i64>("SELECT 3", &[]).unwrap(),
            )
        });
        assert_eq!(got.ok(), Some((here, 3)));
        assert_eq!(
            pool.idle.lock().unwrap().len(),
            1,
            "the connection went back"
        );
        // Its one connection busy (a read on a blocking thread holds it): the read is given back.
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let busy = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run(move |_| {
                    held_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                })
                .await
            }
        });
        held_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(pool.now(|_| ()).is_err());
        go_tx.send(()).unwrap();
        busy.await.unwrap().unwrap();
        // Connections to a server are never used on the caller's thread.
        let conn = db::open(&dir.path().join("t.db")).unwrap();
        let remote = ReadPool::of(vec![Box::new(conn) as Conn]);
        assert!(remote.now(|_| ()).is_err());
    }
}
