//! The writer thread: the one owner of the write connection, with group commit.
//!
//! Writes are queued as jobs. The thread takes every job that is waiting (up to [`GROUP_MAX`]),
//! runs each in its own savepoint inside one `BEGIN IMMEDIATE` transaction (a job that fails is
//! rolled back alone; a job alone in its group needs none), commits once, publishes the group's events in order, and only then answers
//! each job's caller. So an answer still means "committed", and under load one commit (and one
//! wake-up of this thread) serves many writes instead of one each.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::db;
use super::error::StoreError;
use super::events::Event;
use super::sql::{Db, DbError, DbErrorKind, Dialect};
use super::W;
use crate::catalog::watch::CatalogHandle;
use crate::settings::Settings;

/// Most jobs in one transaction: bounds how long a group holds the write lock.
const GROUP_MAX: usize = 64;

/// What a job does once its group's commit is known: answer its caller.
pub(crate) type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Run once a job's fate is known: `true` when committed, `false` when rolled back.
pub(crate) type After = Box<dyn FnOnce(bool) + Send>;

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
    /// The database file, to notice it being deleted or replaced while it is open.
    pub file: Option<FileWatch>,
    /// On a shared PostgreSQL schema: where commits are announced to the other nodes.
    pub cluster: Option<Arc<super::cluster::Channel>>,
    /// The streaming messages' text held in memory.
    pub tails: Arc<super::tails::Tails>,
}

/// How often the writer checks that its database file is still the one it opened.
const FILE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The database file as it was opened: SQLite keeps writing to a deleted file's inode, so every
/// later write would be lost at the next start. Checked at most once a second, before a group.
pub(crate) struct FileWatch {
    path: PathBuf,
    identity: (u64, u64),
    checked: Option<Instant>,
    gone: Option<DbError>,
}

impl FileWatch {
    /// The identity (device, inode) of `path` now; `None` when it cannot be read.
    pub fn new(path: &Path) -> Option<FileWatch> {
        Some(FileWatch {
            path: path.to_path_buf(),
            identity: identity(path)?,
            checked: None,
            gone: None,
        })
    }

    /// `Err` once the file is no longer the one that was opened (and from then on).
    fn check(&mut self) -> Result<(), DbError> {
        if let Some(e) = &self.gone {
            return Err(e.clone());
        }
        if self
            .checked
            .is_some_and(|at| at.elapsed() < FILE_CHECK_EVERY)
        {
            return Ok(());
        }
        self.checked = Some(Instant::now());
        if identity(&self.path) == Some(self.identity) {
            return Ok(());
        }
        let e = DbError {
            kind: DbErrorKind::Unreachable,
            message: format!(
                "the database file {} was deleted or replaced while agentd ran; writes are refused until agentd restarts",
                self.path.display()
            ),
        };
        tracing::error!("{}", e.message);
        self.gone = Some(e.clone());
        Err(e)
    }
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Starts the writer thread; it ends when every sender is gone.
pub(crate) fn spawn(conn: Box<dyn Db + Send>, ctx: Context) -> std::io::Result<mpsc::Sender<Msg>> {
    let (tx, rx) = mpsc::channel::<Msg>();
    std::thread::Builder::new()
        .name("agentd-sqlite-writer".into())
        .spawn(move || run(conn, rx, ctx))?;
    Ok(tx)
}

fn run(conn: Box<dyn Db + Send>, rx: mpsc::Receiver<Msg>, mut ctx: Context) {
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
                    commit_group(&*conn, std::mem::take(&mut group), &mut ctx);
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
        commit_group(&*conn, group, &mut ctx);
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
/// fails half-way on a busy database. PostgreSQL takes the schema's writer lock: one group at a
/// time across the nodes, so commits (and event `seq`s) have one order, and two nodes' groups
/// cannot deadlock on each other's rows.
fn begin_sql(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "BEGIN IMMEDIATE",
        Dialect::Postgres => {
            "BEGIN; SELECT pg_advisory_xact_lock(hashtext(current_schema()), hashtext('agentd.writer'))"
        }
    }
}

/// Runs a group in one transaction. Failures keep their [`DbError`] (so a full disk reaches
/// the client as such) and never end the thread: the next group simply tries again, which is
/// how writing resumes by itself once space is freed.
fn commit_group(tx: &dyn Db, group: Vec<Job>, ctx: &mut Context) {
    if group.is_empty() {
        return;
    }
    let began = std::time::Instant::now();
    commit_jobs(tx, group, ctx);
    crate::observe::group_committed(began.elapsed());
}

fn commit_jobs(tx: &dyn Db, group: Vec<Job>, ctx: &mut Context) {
    let opened = match ctx.file.as_mut() {
        Some(file) => file.check(),
        None => Ok(()),
    }
    .and_then(|()| tx.batch(begin_sql(tx.dialect())));
    if let Err(e) = opened {
        // Half-begun (PostgreSQL: the lock failed after BEGIN): the next group starts clean.
        let _ = tx.batch("ROLLBACK");
        for job in group {
            job(Err(StoreError::Database(e.clone())));
        }
        return;
    }
    let catalog = ctx.catalog.current();
    let mut events = Vec::new();
    let mut conv_events = Vec::new();
    let mut dones: Vec<Done> = Vec::with_capacity(group.len());
    let mut broken: Option<DbError> = None;
    let mut kick_claims = false;
    let mut afters: Vec<After> = Vec::new();
    // A job alone in its group needs no savepoint: if it fails, rolling back the transaction
    // undoes exactly it (and SQLite keeps no copy of the pages it changes for a savepoint).
    let alone = group.len() == 1;
    let savepoint = |sql: &str| if alone { Ok(()) } else { tx.batch(sql) };
    let mut alone_failed = false;
    for job in group {
        if let Some(reason) = &broken {
            job(Err(StoreError::Database(reason.clone())));
            continue;
        }
        if let Err(e) = savepoint("SAVEPOINT job") {
            job(Err(StoreError::Database(e.clone())));
            broken = Some(e);
            continue;
        }
        let mut w = W {
            c: tx,
            now: db::now_ms(),
            settings: &ctx.settings,
            catalog: catalog.clone(),
            events: Vec::new(),
            conv_events: Vec::new(),
            wake_at: None,
            kick_claims: false,
            storage_failure: None,
            tails: &ctx.tails,
            after: Vec::new(),
        };
        let done = job(Ok(&mut w));
        let job_events = std::mem::take(&mut w.events);
        let job_conv_events = std::mem::take(&mut w.conv_events);
        let job_afters = std::mem::take(&mut w.after);
        // SQLite may have rolled back the whole transaction on a full disk: end the group with
        // that error rather than with the "no such savepoint" that would follow.
        let storage_failure = w.storage_failure.take();
        let end = match done {
            Some(d) => {
                dones.push(d);
                events.extend(job_events);
                conv_events.extend(job_conv_events);
                afters.extend(job_afters);
                kick_claims |= w.kick_claims;
                savepoint("RELEASE job")
            }
            None => {
                for a in job_afters {
                    a(false);
                }
                alone_failed = alone;
                savepoint("ROLLBACK TO job; RELEASE job")
            }
        };
        if let Some(e) = storage_failure {
            broken = Some(e);
        } else if let Err(e) = end {
            broken = Some(e);
        }
    }
    if alone_failed && broken.is_none() {
        // The one job failed and has answered its caller: nothing of the group is kept.
        if let Err(e) = tx.batch("ROLLBACK") {
            tracing::warn!(error = %e, "rollback failed");
        }
        return;
    }
    if let (None, Some(cluster)) = (&broken, &ctx.cluster) {
        if let Err(e) = cluster.announce(tx, &events, &conv_events, kick_claims) {
            broken = Some(match e {
                StoreError::Database(d) => d,
                other => DbError::other(other.to_string()),
            });
        }
    }
    let committed = match broken {
        Some(reason) => {
            if let Err(e) = tx.batch("ROLLBACK") {
                tracing::warn!(error = %e, "rollback failed");
            }
            Err(reason)
        }
        // A failed COMMIT (busy, disk full) may leave the transaction open; end it.
        None => tx.batch("COMMIT").inspect_err(|_| {
            let _ = tx.batch("ROLLBACK");
        }),
    };
    let ok = committed.is_ok();
    for a in afters {
        a(ok);
    }
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
                d(Err(StoreError::Database(reason.clone())));
            }
        }
    }
}
