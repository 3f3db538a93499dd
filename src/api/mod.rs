//! The Opengram-compatible chat and dispatch API under `/api/v1` (issue 3), stored in SQLite.
//!
//! Layout: [`Store`] is the service layer (every operation is a method on it, callable from Rust
//! without HTTP, e.g. by the chat front doors); `routes/*` are thin HTTP handlers over it;
//! `dispatch/` is the work queue and its deadline scheduler; `events` is the persisted +
//! ephemeral event bus behind `GET /events/stream`.
//!
//! SQLite work stays off the async runtime, over two connections: the writer connection is owned
//! by one thread that commits queued writes in groups (`writer`), the reader connection is used
//! on blocking threads. An API answer of 2xx is only sent after the commit.

mod access;
mod chats;
mod db;
pub mod dispatch;
mod error;
pub mod events;
mod messages;
pub mod requests;
mod routes;
mod validate;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::web;
use rusqlite::Connection;
use tokio::sync::{broadcast, Notify};

use crate::catalog::watch::CatalogHandle;
use crate::catalog::Catalog;
use crate::settings::Settings;

pub use chats::{ChatFilter, NewChat};
pub use db::iso;
pub use error::{ApiError, StoreError};
pub use events::Event;
pub use messages::NewMessage;

/// Live events buffered per subscriber before a slow one is dropped (lagged).
const EVENT_BUS_CAPACITY: usize = 1024;

/// Handle to the SQLite-backed store and its dispatch engine; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// Queue of the writer thread.
    writer: std::sync::mpsc::Sender<writer::Msg>,
    reader: Mutex<Connection>,
    settings: Arc<Settings>,
    catalog: CatalogHandle,
    events: broadcast::Sender<Arc<Event>>,
    /// Wakes the dispatch scheduler (new inputs, typing, lease ends).
    scheduler: Notify,
    /// When the scheduler plans to wake (epoch ms); `i64::MIN` while a pass runs.
    next_wake: std::sync::atomic::AtomicI64,
    /// Wakes waiting claims (a batch may be claimable).
    claims: Notify,
    closed: std::sync::atomic::AtomicBool,
    rate: access::RateLimiter,
    started: Instant,
    /// Worker ids known to be dead (their process is gone), with when that was learnt. A claim of
    /// theirs still waiting on a half-closed connection must not take work.
    gone: Mutex<std::collections::HashMap<String, Instant>>,
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
    pub c: &'a Connection,
    pub now: i64,
    pub settings: &'a Settings,
    pub catalog: Arc<Catalog>,
    events: Vec<Event>,
    wake_at: Option<i64>,
    kick_claims: bool,
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

    /// Wake waiting claims after commit.
    pub fn kick_claims(&mut self) {
        self.kick_claims = true;
    }
}

impl Store {
    /// Opens (and migrates) the database at `path` and starts the dispatch scheduler.
    pub async fn open(
        path: &Path,
        settings: Arc<Settings>,
        catalog: CatalogHandle,
    ) -> Result<Store, StoreError> {
        let path = path.to_path_buf();
        let (writer, reader) = tokio::task::spawn_blocking(move || {
            let mut w = db::open(&path)?;
            db::migrate(&mut w)?;
            let r = db::open(&path)?;
            Ok::<_, rusqlite::Error>((w, r))
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
        let (events, _) = broadcast::channel(EVENT_BUS_CAPACITY);
        let writer = writer::spawn(
            writer,
            writer::Context {
                settings: settings.clone(),
                catalog: catalog.clone(),
                events: events.clone(),
            },
        )
        .map_err(|e| ApiError::Internal(format!("cannot start the writer thread: {e}")))?;
        let rate = access::RateLimiter::new(
            settings.write_rate_limit_max,
            settings.write_rate_limit_window_ms,
        );
        let store = Store {
            inner: Arc::new(Inner {
                writer,
                reader: Mutex::new(reader),
                settings,
                catalog,
                events,
                scheduler: Notify::new(),
                next_wake: std::sync::atomic::AtomicI64::new(i64::MIN),
                claims: Notify::new(),
                closed: std::sync::atomic::AtomicBool::new(false),
                rate,
                started: Instant::now(),
                gone: Mutex::new(std::collections::HashMap::new()),
            }),
        };
        // Expired leases and due batches from before a restart are handled by the first pass.
        tokio::spawn(dispatch::scheduler::run(store.clone()));
        Ok(store)
    }

    /// Stops the scheduler and checkpoints the WAL.
    pub async fn close(&self) {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.scheduler.notify_one();
        self.inner.claims.notify_waiters();
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
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut W) -> Result<T, ApiError> + Send + 'static,
    {
        type Outcome<T> = Result<(T, Option<i64>, bool), ApiError>;
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
                    Some(Box::new(move |committed: Result<(), ApiError>| {
                        let _ = tx.send(committed.map(|()| (v, kicks.0, kicks.1)));
                    }))
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    None
                }
            }
        });
        self.send(writer::Msg::Job(job))?;
        let (value, kick_s, kick_c) = rx
            .await
            .map_err(|_| ApiError::Internal("the writer thread is gone".into()))??;
        if let Some(at) = kick_s {
            if at
                < self
                    .inner
                    .next_wake
                    .load(std::sync::atomic::Ordering::SeqCst)
            {
                self.inner.scheduler.notify_one();
            }
        }
        if kick_c {
            self.inner.claims.notify_waiters();
        }
        Ok(value)
    }

    fn send(&self, msg: writer::Msg) -> Result<(), ApiError> {
        self.inner
            .writer
            .send(msg)
            .map_err(|_| ApiError::Internal("the writer thread is gone".into()))
    }

    /// Runs `f` on the reader connection, off the async runtime.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Settings, &Catalog) -> Result<T, ApiError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.reader.lock().unwrap_or_else(|e| e.into_inner());
            let catalog = inner.catalog.current();
            f(&conn, &inner.settings, &catalog)
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
    }

    /// Finds or creates (atomically) the chat bound to a supervisor channel, with
    /// `agent_ids = [agent_id]`; returns the chat id.
    pub async fn chat_for_channel(
        &self,
        channel: &str,
        agent_id: &str,
    ) -> Result<String, StoreError> {
        self.chat_for_key(&format!("channel:{channel}"), agent_id, channel, None)
            .await
    }
}

/// Mounts the API routes (the caller puts them under `/api/v1`); unknown paths get the JSON 404.
pub fn configure(cfg: &mut web::ServiceConfig) {
    routes::configure(cfg);
}

impl Store {
    /// Publishes an ephemeral event (typing) straight to the live bus.
    pub(crate) fn publish_ephemeral(&self, kind: &str, payload: serde_json::Value) {
        let _ = self.inner.events.send(Arc::new(Event {
            seq: None,
            id: db::new_id(),
            kind: kind.to_string(),
            timestamp: db::iso(db::now_ms()),
            payload,
        }));
    }
}
