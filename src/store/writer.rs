//! The writer thread: the one owner of the write connection, with group commit.
//!
//! Writes are queued as jobs. The thread takes every job that is waiting (up to [`GROUP_MAX`]),
//! runs each in its own savepoint inside one `BEGIN IMMEDIATE` transaction (a job that fails is
//! rolled back alone), commits once, publishes the group's events in order, and only then answers
//! each job's caller. So an answer still means "committed", and under load one commit (and one
//! wake-up of this thread) serves many writes instead of one each.

use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::db;
use super::error::StoreError;
use super::events::Event;
use super::sql::{Db, Dialect};
use super::W;
use crate::catalog::watch::CatalogHandle;
use crate::settings::Settings;

/// Most jobs in one transaction: bounds how long a group holds the write lock.
const GROUP_MAX: usize = 64;

/// What a job does once its group's commit is known: answer its caller.
pub(crate) type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A queued write. Given `Some(w)` it runs in the open transaction and returns what to do after
/// the commit (`None` when it failed: it has answered its caller already and is rolled back).
/// Given `None` (no transaction could be opened) it answers its caller with that error.
pub(crate) type Job = Box<dyn FnOnce(Result<&mut W, StoreError>) -> Option<Done> + Send>;

pub(crate) enum Msg {
    Job(Job),
    /// Checkpoint the WAL into the database file (at shutdown).
    Checkpoint(tokio::sync::oneshot::Sender<()>),
}

/// What the writer thread needs besides the connection.
pub(crate) struct Context {
    pub settings: Arc<Settings>,
    pub catalog: CatalogHandle,
    pub events: broadcast::Sender<Arc<Event>>,
}

/// Starts the writer thread; it ends when every sender is gone.
pub(crate) fn spawn(conn: Box<dyn Db + Send>, ctx: Context) -> std::io::Result<mpsc::Sender<Msg>> {
    let (tx, rx) = mpsc::channel::<Msg>();
    std::thread::Builder::new()
        .name("agentd-sqlite-writer".into())
        .spawn(move || run(conn, rx, ctx))?;
    Ok(tx)
}

fn run(conn: Box<dyn Db + Send>, rx: mpsc::Receiver<Msg>, ctx: Context) {
    while let Ok(first) = rx.recv() {
        let mut group = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Job(job) => {
                    crate::observe::writes_taken(1);
                    group.push(job)
                }
                Msg::Checkpoint(done) => {
                    commit_group(&*conn, std::mem::take(&mut group), &ctx);
                    if let Some(sql) = checkpoint_sql(conn.dialect()) {
                        if let Err(e) = conn.batch(sql) {
                            tracing::warn!(error = %e, "checkpoint failed");
                        }
                    }
                    let _ = done.send(());
                }
            }
            if group.len() < GROUP_MAX {
                next = rx.try_recv().ok();
            }
        }
        commit_group(&*conn, group, &ctx);
    }
}

/// What makes the database file whole at shutdown (SQLite's WAL); nothing for PostgreSQL.
fn checkpoint_sql(d: Dialect) -> Option<&'static str> {
    match d {
        Dialect::Sqlite => Some("PRAGMA wal_checkpoint(TRUNCATE)"),
        Dialect::Postgres => None,
    }
}

/// Opens the group's transaction: SQLite takes its write lock at once, so no job of the group
/// fails half-way on a busy database.
fn begin_sql(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "BEGIN IMMEDIATE",
        Dialect::Postgres => "BEGIN",
    }
}

fn commit_group(tx: &dyn Db, group: Vec<Job>, ctx: &Context) {
    if group.is_empty() {
        return;
    }
    let began = std::time::Instant::now();
    commit_jobs(tx, group, ctx);
    crate::observe::group_committed(began.elapsed());
}

fn commit_jobs(tx: &dyn Db, group: Vec<Job>, ctx: &Context) {
    match tx.batch(begin_sql(tx.dialect())) {
        Ok(()) => {}
        Err(e) => {
            let msg = e.to_string();
            for job in group {
                job(Err(StoreError::Internal(msg.clone())));
            }
            return;
        }
    };
    let catalog = ctx.catalog.current();
    let mut events = Vec::new();
    let mut dones: Vec<Done> = Vec::with_capacity(group.len());
    let mut broken: Option<String> = None;
    for job in group {
        if let Some(reason) = &broken {
            job(Err(StoreError::Internal(reason.clone())));
            continue;
        }
        if let Err(e) = tx.batch("SAVEPOINT job") {
            broken = Some(e.to_string());
            job(Err(StoreError::Internal(e.to_string())));
            continue;
        }
        let mut w = W {
            c: tx,
            now: db::now_ms(),
            settings: &ctx.settings,
            catalog: catalog.clone(),
            events: Vec::new(),
            wake_at: None,
            kick_claims: false,
        };
        let done = job(Ok(&mut w));
        let job_events = std::mem::take(&mut w.events);
        let end = match done {
            Some(d) => {
                dones.push(d);
                events.extend(job_events);
                tx.batch("RELEASE job")
            }
            None => tx.batch("ROLLBACK TO job; RELEASE job"),
        };
        if let Err(e) = end {
            broken = Some(e.to_string());
        }
    }
    let committed = match broken {
        Some(reason) => {
            if let Err(e) = tx.batch("ROLLBACK") {
                tracing::warn!(error = %e, "rollback failed");
            }
            Err(reason)
        }
        None => tx.batch("COMMIT").map_err(|e| {
            // A failed COMMIT may leave the transaction open (SQLite: busy); end it.
            let _ = tx.batch("ROLLBACK");
            e.to_string()
        }),
    };
    match committed {
        Ok(()) => {
            for e in events {
                let _ = ctx.events.send(Arc::new(e));
            }
            for d in dones {
                d(Ok(()));
            }
        }
        Err(reason) => {
            tracing::error!(error = %reason, "a group of writes was rolled back");
            for d in dones {
                d(Err(StoreError::Internal(reason.clone())));
            }
        }
    }
}
