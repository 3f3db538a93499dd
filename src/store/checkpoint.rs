//! SQLite's WAL checkpoints, off the writer thread.
//!
//! By default the connection that commits runs a checkpoint every 1,000 WAL pages: it copies
//! the pages into the database file and syncs both files, and every write queued behind it waits
//! for those syncs. The writer connection has that turned off; this thread, on its own
//! connection, checkpoints passively (never blocking a writer or a reader) every
//! [`CHECKPOINT_EVERY`]. Durability is the same: a commit is in the WAL either way.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::db;

/// How often the WAL is copied into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Starts the checkpoint thread on its own connection to `path`; it ends when the returned
/// sender is dropped.
pub(crate) fn spawn(path: &Path) -> std::io::Result<mpsc::Sender<()>> {
    let conn = db::open(path).map_err(std::io::Error::other)?;
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("agentd-sqlite-checkpoint".into())
        .spawn(move || loop {
            match rx.recv_timeout(CHECKPOINT_EVERY) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // The store is gone, or asked to stop (its own checkpoint follows).
                _ => return,
            }
            let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            if let Err(e) = done {
                tracing::debug!(error = %e, "background checkpoint failed; trying again");
            }
        })?;
    Ok(tx)
}
