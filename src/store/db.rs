//! SQLite connection setup, and the store's clock.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

/// WAL pages between automatic checkpoints (16 MiB of 4 KiB pages; SQLite's default is 1,000).
/// A checkpoint copies the WAL's pages into the database file and syncs both, on the writer's
/// thread: at four times the default interval a page written by many commits in a row (a busy
/// chat's index pages) is copied and synced once instead of four times. The WAL file keeps its
/// largest size between checkpoints (at most this much, plus one group's pages).
pub const WAL_CHECKPOINT_PAGES: i64 = 4096;

/// Opens a connection: WAL (an acknowledged commit survives a kill -9 of the process),
/// synchronous NORMAL, foreign keys, a busy timeout, and a larger statement cache.
///
/// Temporary storage is in memory: the writer runs each job of a group in its own savepoint,
/// and SQLite keeps a savepoint's undo pages in a temporary file otherwise, which it created
/// and deleted once per group (an open, unlink and close on every commit under load). The WAL
/// is checkpointed into the database file every [`WAL_CHECKPOINT_PAGES`] pages.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

/// Current time in epoch milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// ISO-8601 UTC with milliseconds, like `2026-11-21T12:51:32.295Z`.
pub fn iso(ms: i64) -> String {
    // The RFC 3339 writer rather than `format`, which parses its pattern on every call (a few
    // times per message read or written).
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_is_utc_with_milliseconds() {
        assert_eq!(super::iso(1_763_729_492_295), "2025-11-21T12:51:32.295Z");
        assert_eq!(super::iso(0), "1970-01-01T00:00:00.000Z");
    }
}
