//! SQLite connection setup, and the store's clock.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

/// Opens a connection: WAL (an acknowledged commit survives a kill -9 of the process),
/// synchronous NORMAL, foreign keys, a busy timeout, and a larger statement cache.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
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
