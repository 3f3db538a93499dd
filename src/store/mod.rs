//! Everything that touches the database: chats, messages, requests, the dispatch queue and its
//! scheduler, the event log and live bus, and the front doors' own tables.
//!
//! Every operation is a method on [`Store`] returning [`StoreError`]; nothing here knows about
//! HTTP. The domain logic is written once against the [`sql::Db`] interface: SQLite at
//! `DATA_DIR/agentd.db` by default, or PostgreSQL with `DATABASE_URL` (see `sql::postgres`).
//! Writes go to one thread that owns the write connection and commits queued writes in groups
//! (`writer`); reads run on blocking threads over a small pool of read connections. A write's
//! future resolves only after its commit.

mod chat_keys;
mod chats;
mod cluster;
pub mod conversations;
mod cursor;
mod db;
pub mod dispatch;
mod error;
pub mod events;
mod idempotency;
mod messages;
mod migrate;
pub mod nodes;
mod pool;
pub mod requests;
mod retention;
pub mod sql;
mod streaming;
mod tails;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{broadcast, Notify};

use crate::catalog::watch::CatalogHandle;
use crate::catalog::Catalog;
use crate::settings::{Database, Settings};
use sql::Db;

pub use chat_keys::{HistoryItem, KeyedChat, Unread};
pub use chats::{ChatFilter, NewChat, DEFAULT_MODEL, MODELS, TITLE_MAX_CHARS};
pub use conversations::ConvEvent;
pub use db::iso;
pub use error::{Storage, StoreError};
pub use events::Event;
pub use messages::NewMessage;
pub use retention::Pruned;

/// Handle to the store and its dispatch engine; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// Queue of the writer thread.
    writer: std::sync::mpsc::Sender<writer::Msg>,
    readers: Arc<pool::ReadPool>,
    settings: Arc<Settings>,
    catalog: CatalogHandle,
    events: broadcast::Sender<Arc<Event>>,
    /// Wakes the dispatch scheduler (new inputs, typing, lease ends).
    scheduler: Notify,
    /// When the scheduler plans to wake (epoch ms); [`dispatch::scheduler::IN_PASS`] while a pass runs.
    next_wake: std::sync::atomic::AtomicI64,
    /// Wakes waiting claims (a batch may be claimable).
    claims: Notify,
    closed: std::sync::atomic::AtomicBool,
    started: Instant,
    /// Live events of the conversations front door (persisted in `fd_events` first).
    conv_events: broadcast::Sender<Arc<ConvEvent>>,
    /// Worker ids known to be dead (their process is gone), with when that was learnt. A claim of
    /// theirs still waiting on a half-closed connection must not take work.
    gone: Mutex<std::collections::HashMap<String, Instant>>,
    dialect: sql::Dialect,
    /// The text of streaming messages not yet written (see [`tails`]).
    tails: Arc<tails::Tails>,
}

/// How long a dead worker id is remembered; far longer than any claim can wait in practice.
const GONE_MEMORY: std::time::Duration = std::time::Duration::from_secs(3600);

impl Inner {
    pub(crate) fn is_gone(&self, worker_id: &str) -> bool {
        self.gone
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(worker_id)
    }
}

/// What a write closure sees: the open transaction, the time, and what to publish after commit.
pub(crate) struct W<'a> {
    pub c: &'a dyn Db,
    pub now: i64,
    pub settings: &'a Settings,
    pub catalog: Arc<Catalog>,
    events: Vec<Event>,
    /// Feed events of the conversations front door to announce to other nodes (PostgreSQL only:
    /// on SQLite there are none).
    conv_events: Vec<ConvEvent>,
    wake_at: Option<i64>,
    kick_claims: bool,
    /// Set when the job failed because the storage cannot be written (see [`writer`]).
    storage_failure: Option<sql::DbError>,
    /// The streaming messages' text held in memory.
    pub tails: &'a Arc<tails::Tails>,
    /// What to do once the job's fate is known: committed (`true`) or rolled back.
    after: Vec<writer::After>,
}

impl W<'_> {
    /// Ask the scheduler to recompute its deadlines after commit.
    pub fn kick_scheduler(&mut self) {
        self.wake_at = Some(i64::MIN);
    }

    /// Make sure the scheduler is awake by `at` (epoch ms).
    pub fn wake_by(&mut self, at: i64) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    /// Has a conversations feed event written in this job announced to other nodes at commit.
    pub fn announce_conv(&mut self, e: &ConvEvent) {
        if self.c.dialect() == sql::Dialect::Postgres {
            self.conv_events.push(e.clone());
        }
    }

    /// Serializes, until commit, every transaction that locks `name` (other nodes' included);
    /// nothing on SQLite, whose one writer serializes everything.
    pub fn lock_name(&mut self, name: &str) -> Result<(), StoreError> {
        if self.c.dialect() == sql::Dialect::Postgres {
            // Keyed by schema too: deployments (and tests) in other schemas of the same
            // database do not wait for each other.
            self.c.query(
                "SELECT pg_advisory_xact_lock(hashtext(current_schema()), hashtext(?1))",
                sql::args![name],
            )?;
        }
        Ok(())
    }

    /// Wake waiting claims after commit.
    pub fn kick_claims(&mut self) {
        self.kick_claims = true;
    }

    /// Runs `f` once this job is committed (`true`) or rolled back (`false`), on the writer
    /// thread, before any caller of the group is answered.
    pub fn after(&mut self, f: impl FnOnce(bool) + Send + 'static) {
        self.after.push(Box::new(f));
    }
}

impl Store {
    /// Opens (and migrates) the SQLite database at `path` and starts the dispatch scheduler.
    pub async fn open(
        path: &Path,
        settings: Arc<Settings>,
        catalog: CatalogHandle,
    ) -> Result<Store, StoreError> {
        Store::connect(&Database::Sqlite(path.to_path_buf()), settings, catalog).await
    }

    /// Opens (and migrates) `database` and starts the dispatch scheduler.
    pub async fn connect(
        database: &Database,
        settings: Arc<Settings>,
        catalog: CatalogHandle,
    ) -> Result<Store, StoreError> {
        let database = database.clone();
        // SQLite's file, watched for being deleted or replaced while open.
        let file = match &database {
            Database::Sqlite(path) => Some(path.clone()),
            Database::Postgres(_) => None,
        };
        let (writer, readers, shared) = tokio::task::spawn_blocking(move || match database {
            Database::Sqlite(path) => {
                let mut w = db::open(&path)?;
                migrate::sqlite(&mut w)?;
                let r = pool::ReadPool::open_sqlite(&path, pool::default_size())?;
                Ok::<_, StoreError>((Box::new(w) as Box<dyn Db + Send>, r, None))
            }
            Database::Postgres(url) => {
                let target = sql::postgres::PgTarget::parse(&url).map_err(|e| {
                    StoreError::Database(sql::DbError::other(format!("DATABASE_URL: {e}")))
                })?;
                let w = target.connect()?;
                migrate::postgres(&w)?;
                let schema: String =
                    (&w as &dyn Db).one("SELECT current_schema()", sql::args![])?;
                let readers = (0..pool::default_size())
                    .map(|_| target.connect().map(|c| Box::new(c) as pool::Conn))
                    .collect::<Result<Vec<_>, _>>()?;
                let channel = Arc::new(cluster::Channel::new(&schema));
                Ok((
                    Box::new(w) as Box<dyn Db + Send>,
                    pool::ReadPool::of(readers),
                    Some((target, channel)),
                ))
            }
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))??;
        let dialect = writer.dialect();
        // Chunks are held in memory only where this node is the one writer (see `tails`).
        let tails = Arc::new(tails::Tails::new(match dialect {
            sql::Dialect::Sqlite => Some(settings.stream_flush),
            sql::Dialect::Postgres => None,
        }));
        let capacity = settings.event_bus_capacity;
        let (events, _) = broadcast::channel(capacity);
        let writer = writer::spawn(
            writer,
            writer::Context {
                settings: settings.clone(),
                catalog: catalog.clone(),
                events: events.clone(),
                cluster: shared.as_ref().map(|(_, c)| c.clone()),
                file: file.as_deref().and_then(writer::FileWatch::new),
                tails: tails.clone(),
            },
        )
        .map_err(|e| StoreError::Internal(format!("cannot start the writer thread: {e}")))?;
        let store = Store {
            inner: Arc::new(Inner {
                writer,
                readers: Arc::new(readers),
                settings,
                catalog,
                events,
                scheduler: Notify::new(),
                next_wake: std::sync::atomic::AtomicI64::new(dispatch::scheduler::IN_PASS),
                claims: Notify::new(),
                closed: std::sync::atomic::AtomicBool::new(false),
                started: Instant::now(),
                conv_events: broadcast::channel(capacity).0,
                gone: Mutex::new(std::collections::HashMap::new()),
                dialect,
                tails,
            }),
        };
        if let Some((target, channel)) = shared {
            cluster::spawn_listener(target, channel, Arc::downgrade(&store.inner)).map_err(
                |e| StoreError::Internal(format!("cannot start the listener thread: {e}")),
            )?;
        }
        // Expired leases and due batches from before a restart are handled by the first pass.
        tokio::spawn(dispatch::scheduler::run(store.clone()));
        tokio::spawn(retention::run(store.clone()));
        tokio::spawn(streaming::run_flusher(store.clone()));
        Ok(store)
    }

    /// Which SQL engine the store runs on.
    pub fn dialect(&self) -> sql::Dialect {
        self.inner.dialect
    }

    /// Stops the scheduler and checkpoints the WAL.
    pub async fn close(&self) {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.scheduler.notify_one();
        self.inner.claims.notify_waiters();
        self.inner.tails.wake();
        // Streamed text still only in memory is written before the WAL is checkpointed.
        if let Err(e) = self.flush_tails().await {
            tracing::warn!(error = %e, "streamed text could not be written at shutdown");
        }
        let (done, checkpointed) = tokio::sync::oneshot::channel();
        if self.send(writer::Msg::Checkpoint(done)).is_ok() {
            let _ = checkpointed.await;
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.inner.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.inner.catalog.current()
    }

    /// Seconds since the store opened (health `uptime`).
    pub fn uptime_secs(&self) -> u64 {
        self.inner.started.elapsed().as_secs()
    }

    /// A worker process is gone (told by the supervisor): its leases go back to the queue at
    /// once, counted as an attempt like an expired lease, and claims still waiting under its id
    /// end without taking anything.
    pub async fn worker_gone(&self, worker_id: &str) {
        {
            let mut gone = self.inner.gone.lock().unwrap_or_else(|e| e.into_inner());
            gone.retain(|_, at| at.elapsed() < GONE_MEMORY);
            gone.insert(worker_id.to_string(), Instant::now());
        }
        let id = worker_id.to_string();
        match self.write(move |w| w.release_leases_of(&id)).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(worker = %worker_id, batches = n, "dispatch: leases of a gone worker released")
            }
            Err(e) => {
                tracing::error!(worker = %worker_id, error = %e, "dispatch: cannot release a gone worker's leases")
            }
        }
        self.inner.claims.notify_waiters();
    }

    /// Subscribes to the live event bus (persisted and ephemeral events, in commit order).
    /// A subscriber that falls more than the bus capacity behind gets `RecvError::Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.events.subscribe()
    }

    /// Runs `f` in a transaction of the writer thread (its own savepoint within a group commit)
    /// and answers once that transaction is committed. Events recorded by `f` are published after
    /// the commit, in commit order; a failing `f` is rolled back alone.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut W) -> Result<T, StoreError> + Send + 'static,
    {
        type Outcome<T> = Result<(T, Option<i64>, bool), StoreError>;
        let (tx, rx) = tokio::sync::oneshot::channel::<Outcome<T>>();
        let job: writer::Job = Box::new(move |w| {
            let w = match w {
                Ok(w) => w,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return None;
                }
            };
            match f(w) {
                Ok(v) => {
                    let kicks = (w.wake_at, w.kick_claims);
                    Some(Box::new(move |committed: Result<(), StoreError>| {
                        let _ = tx.send(committed.map(|()| (v, kicks.0, kicks.1)));
                    }))
                }
                Err(e) => {
                    if let (Some(_), StoreError::Database(d)) = (e.storage(), &e) {
                        w.storage_failure = Some(d.clone());
                    }
                    let _ = tx.send(Err(e));
                    None
                }
            }
        });
        // Counted before it is sent, so the writer never takes a job the gauge has not seen.
        crate::observe::write_queued();
        if let Err(e) = self.send(writer::Msg::Job(job)) {
            crate::observe::writes_taken(1);
            return Err(e);
        }
        let (value, kick_s, kick_c) = rx
            .await
            .map_err(|_| StoreError::Internal("the writer thread is gone".into()))??;
        if let Some(at) = kick_s {
            let planned = self
                .inner
                .next_wake
                .load(std::sync::atomic::Ordering::SeqCst);
            if dispatch::scheduler::must_wake(planned, at) {
                self.inner.scheduler.notify_one();
            }
        }
        if kick_c {
            self.inner.claims.notify_waiters();
        }
        Ok(value)
    }

    fn send(&self, msg: writer::Msg) -> Result<(), StoreError> {
        self.inner
            .writer
            .send(msg)
            .map_err(|_| StoreError::Internal("the writer thread is gone".into()))
    }

    /// Runs `f` on a read connection of the pool, off the async runtime.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Db, &Settings, &Catalog) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        self.inner
            .readers
            .run(move |conn| {
                let catalog = inner.catalog.current();
                f(conn, &inner.settings, &catalog)
            })
            .await?
    }

    /// [`read`](Self::read) for a lookup of a few rows by an index: on SQLite, with a read
    /// connection free, it runs on the calling thread (see [`pool::ReadPool::now`]).
    async fn read_point<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Db, &Settings, &Catalog) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let read = move |conn: &dyn Db| {
            let catalog = inner.catalog.current();
            f(conn, &inner.settings, &catalog)
        };
        match self.inner.readers.now(read) {
            Ok(out) => out,
            Err(read) => self.inner.readers.run(read).await?,
        }
    }

    /// Whether a read can wait on the network (a database server) rather than a local file.
    pub fn reads_wait(&self) -> bool {
        !self.inner.readers.is_local()
    }

    /// Publishes feed events of the conversations front door (already committed).
    fn publish_conv(&self, events: Vec<ConvEvent>) {
        for e in events {
            let _ = self.inner.conv_events.send(Arc::new(e));
        }
    }

    /// Subscribes to the live feed of the conversations front door.
    pub fn subscribe_conversations(&self) -> broadcast::Receiver<Arc<ConvEvent>> {
        self.inner.conv_events.subscribe()
    }
}

impl Store {
    /// Publishes an ephemeral event (typing) straight to the live bus.
    pub(crate) fn publish_ephemeral(&self, kind: &str, payload: serde_json::Value) {
        let _ = self.inner.events.send(Arc::new(Event {
            seq: None,
            id: crate::ids::new_id(),
            kind: kind.to_string(),
            timestamp: db::iso(db::now_ms()),
            payload,
        }));
    }
}
