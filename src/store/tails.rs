//! The text of streaming messages held in memory between writes ("tails").
//!
//! A chunk is published on the live bus at once, but its text reaches the database only with the
//! message's completion or cancellation, or with the next flush, at most `STREAM_FLUSH_MS` after
//! the chunk: so a crash loses at most that much of an unfinished stream, and a stream of many
//! chunks costs one write per interval instead of one per chunk. Reads of a streaming message
//! merge its tail, so they show everything streamed so far.
//!
//! Who may change what: the writer thread alone creates a tail, starts closing it and flushes it,
//! so those steps are ordered with the message's state in the database; a chunk for a message
//! whose tail is open is appended here directly, without the writer. A chunk that finds no open
//! tail (after a restart, or while a completion is being committed) goes through the writer,
//! which decides on the message's state in its transaction.
//!
//! Only on SQLite: on a PostgreSQL schema shared by several nodes the next chunk may reach
//! another node, so there every chunk is written as it comes (as with `STREAM_FLUSH_MS=0`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;

use super::db::iso;

/// The streaming messages whose text is (partly) in memory.
pub(crate) struct Tails {
    /// `None`: every chunk is written as it comes.
    flush_every: Option<Duration>,
    map: Mutex<HashMap<String, Tail>>,
    /// Wakes the flusher: a tail has text the database does not have yet.
    dirty: Notify,
}

struct Tail {
    /// The message resource as stored when the tail opened (its text and time are filled in
    /// from `text` and `updated_at` when it is shown).
    message: Value,
    /// Everything streamed so far.
    text: String,
    /// When the last chunk came (epoch ms).
    updated_at: i64,
    /// How many bytes of `text` the database has (with `updated_at` as of that write).
    flushed: usize,
    /// A completion or cancellation is being committed: chunks go through the writer.
    closing: bool,
}

impl Tail {
    fn shown(&self) -> Value {
        let mut m = self.message.clone();
        show_text(&mut m, &self.text, self.updated_at);
        m
    }
}

/// Puts the streamed text so far into message `m`. Before its first chunk a message keeps the
/// `content_partial` it was stored with (null for a new one), as when chunks went to the
/// database as they came (a chunk's text is never empty).
fn show_text(m: &mut Value, text: &str, updated_at: i64) {
    if !text.is_empty() {
        m["content_partial"] = Value::String(text.to_string());
    }
    m["updated_at"] = Value::String(iso(updated_at));
}

/// One tail's text to write, taken by [`Tails::dirty`].
pub(crate) struct Flush {
    pub id: String,
    pub text: String,
    pub updated_at: i64,
}

impl Tails {
    /// Tails flushed every `flush_every`; `None` keeps nothing in memory.
    pub fn new(flush_every: Option<Duration>) -> Tails {
        Tails {
            flush_every: flush_every.filter(|d| !d.is_zero()),
            map: Mutex::new(HashMap::new()),
            dirty: Notify::new(),
        }
    }

    /// True when chunks are held in memory.
    pub fn enabled(&self) -> bool {
        self.flush_every.is_some()
    }

    /// How long a chunk may stay only in memory.
    pub fn flush_every(&self) -> Option<Duration> {
        self.flush_every
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tail>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the tail of streaming message `m` (the resource as stored), with `delta` appended
    /// when given (then `on_append` runs, under the lock, so chunks are published in the order
    /// their text was appended). Writer thread only. Returns the message as shown.
    pub fn open(
        &self,
        m: &Value,
        delta: Option<&str>,
        now: i64,
        on_append: impl FnOnce(),
    ) -> Option<Value> {
        if !self.enabled() {
            return None;
        }
        let id = m["id"].as_str()?.to_string();
        let stored = m["content_partial"].as_str().unwrap_or("").to_string();
        let mut tail = Tail {
            message: m.clone(),
            flushed: stored.len(),
            text: stored,
            updated_at: chrono::DateTime::parse_from_rfc3339(
                m["updated_at"].as_str().unwrap_or(""),
            )
            .map_or(now, |t| t.timestamp_millis()),
            closing: false,
        };
        let mut map = self.lock();
        if let Some(d) = delta {
            tail.text.push_str(d);
            tail.updated_at = now;
            on_append();
            self.dirty.notify_one();
        }
        let shown = tail.shown();
        map.insert(id, tail);
        Some(shown)
    }

    /// Appends a chunk to the open tail of message `id`; `on_append(chat_id)` publishes it,
    /// under the lock. `None` when there is no open tail: the writer must decide.
    pub fn append(
        &self,
        id: &str,
        delta: &str,
        now: i64,
        on_append: impl FnOnce(&Value),
    ) -> Option<Value> {
        let mut map = self.lock();
        let tail = map.get_mut(id).filter(|t| !t.closing)?;
        tail.text.push_str(delta);
        tail.updated_at = tail.updated_at.max(now);
        on_append(&tail.message["chat_id"]);
        let shown = tail.shown();
        drop(map);
        self.dirty.notify_one();
        Some(shown)
    }

    /// Starts ending message `id`'s stream: chunks now go through the writer. Its text so far,
    /// if it has a tail. Writer thread only; [`Tails::closed`] follows once the end is committed
    /// or rolled back.
    pub fn close(&self, id: &str) -> Option<String> {
        let mut map = self.lock();
        let tail = map.get_mut(id)?;
        tail.closing = true;
        Some(tail.text.clone())
    }

    /// The end of message `id`'s stream was committed (the tail goes), or rolled back (it stays
    /// open).
    pub fn closed(&self, id: &str, committed: bool) {
        let mut map = self.lock();
        if committed {
            map.remove(id);
        } else if let Some(t) = map.get_mut(id) {
            t.closing = false;
        }
    }

    /// Forgets a tail whose message was not stored after all (its transaction rolled back) or
    /// is gone.
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The tails with text the database lacks, to write now.
    pub fn dirty(&self) -> Vec<Flush> {
        self.lock()
            .iter()
            .filter(|(_, t)| !t.closing && t.flushed < t.text.len())
            .map(|(id, t)| Flush {
                id: id.clone(),
                text: t.text.clone(),
                updated_at: t.updated_at,
            })
            .collect()
    }

    /// `f` was written and committed.
    pub fn flushed(&self, f: &Flush) {
        if let Some(t) = self.lock().get_mut(&f.id) {
            t.flushed = t.flushed.max(f.text.len());
        }
    }

    /// Waits until some tail has unwritten text.
    pub async fn wait_dirty(&self) {
        self.dirty.notified().await
    }

    /// Wakes [`Tails::wait_dirty`] (at shutdown).
    pub fn wake(&self) {
        self.dirty.notify_one();
    }

    /// When message `id` last got a chunk, if it has a tail.
    pub fn updated_at(&self, id: &str) -> Option<i64> {
        self.lock().get(id).map(|t| t.updated_at)
    }

    /// Message `m` (a resource read from the database) with its streamed text so far.
    pub fn overlay(&self, m: &mut Value) {
        if m["stream_state"] != "streaming" || !self.enabled() {
            return;
        }
        let map = self.lock();
        if let Some(t) = m["id"].as_str().and_then(|id| map.get(id)) {
            show_text(m, &t.text, t.updated_at);
        }
    }

    /// The streamed text so far of message `id`, if it has a tail.
    pub fn text(&self, id: &str) -> Option<String> {
        if !self.enabled() {
            return None;
        }
        self.lock().get(id).map(|t| t.text.clone())
    }
}
