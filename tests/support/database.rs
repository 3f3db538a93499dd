//! The database a [`TestApp`](super::TestApp) runs on: SQLite in its temp dir (the default) or,
//! with `AGENTD_TEST_DATABASE_URL=postgres://...`, a schema of its own in that PostgreSQL
//! database, made fresh for the test and dropped when the test is done with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use agentd::store::sql::postgres::PgTarget;
use agentd::store::sql::Db;

/// The variable that runs the tests on PostgreSQL.
pub const TEST_DATABASE_URL: &str = "AGENTD_TEST_DATABASE_URL";
/// Prefix of every test schema (`.ci/run` drops those a killed test run left).
pub const SCHEMA_PREFIX: &str = "agentd_t_";

/// The PostgreSQL URL the tests run on, if any.
pub fn postgres_url() -> Option<String> {
    std::env::var(TEST_DATABASE_URL)
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// True when the tests run on PostgreSQL.
pub fn on_postgres() -> bool {
    postgres_url().is_some()
}

/// A fresh PostgreSQL schema, dropped (with everything in it) when the last clone goes.
#[derive(Clone)]
pub struct TestSchema(Arc<Schema>);

struct Schema {
    base_url: String,
    name: String,
}

impl TestSchema {
    /// A new schema in the database of [`TEST_DATABASE_URL`]; `None` when the tests run on
    /// SQLite.
    pub fn create() -> Option<Result<TestSchema, String>> {
        let base_url = postgres_url()?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "{SCHEMA_PREFIX}{}_{}_{nanos:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let sql = format!("CREATE SCHEMA {name}");
        Some(admin(&base_url, sql).map(|()| TestSchema(Arc::new(Schema { base_url, name }))))
    }

    /// The `DATABASE_URL` that puts a server in this schema.
    pub fn url(&self) -> String {
        let base = &self.0.base_url;
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-csearch_path%3D{}", self.0.name)
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        if let Err(e) = admin(&self.base_url, sql) {
            eprintln!("cannot drop test schema {}: {e}", self.name);
        }
    }
}

/// Runs statements (results ignored) on a connection of their own to the database of
/// [`TEST_DATABASE_URL`], as the test's database administrator would.
pub fn admin_sql(sql: &str) -> Result<(), String> {
    let url = postgres_url().ok_or_else(|| format!("{TEST_DATABASE_URL} is not set"))?;
    admin(&url, sql.to_string())
}

/// Runs one statement on its own connection, on a thread of its own: the sync client must not
/// block inside the test's async runtime.
fn admin(url: &str, sql: String) -> Result<(), String> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let conn = PgTarget::parse(&url)?
            .connect()
            .map_err(|e| format!("{TEST_DATABASE_URL}: {e}"))?;
        conn.batch(&sql).map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| "the database thread panicked".to_string())?
}
