//! Events: persisted ones (stored in `events`, replayable by cursor) and ephemeral ones
//! (typing, stream chunks: never stored). Both go out on the live bus after commit.

use serde_json::{json, Value};

use super::db::iso;
use super::error::StoreError;
use super::sql::{args, Db};
use super::{Store, W};
use crate::ids::new_id;

/// One event as it goes out on the bus and the SSE stream.
#[derive(Debug, Clone)]
pub struct Event {
    /// Position in the `events` table; `None` for ephemeral events.
    pub seq: Option<i64>,
    pub id: String,
    /// `chat.created`, `message.created`, `message.streaming.chunk`, ...
    pub kind: String,
    pub timestamp: String,
    pub payload: Value,
}

impl Event {
    /// `{"id","type","timestamp","payload"}`.
    pub fn envelope(&self) -> Value {
        json!({ "id": self.id, "type": self.kind, "timestamp": self.timestamp, "payload": self.payload })
    }

    pub fn is_ephemeral(&self) -> bool {
        self.seq.is_none()
    }
}

impl W<'_> {
    /// Stores a persisted event in this transaction; it is published after commit.
    pub fn emit(&mut self, kind: &str, payload: Value) -> Result<(), StoreError> {
        let id = new_id();
        let seq: i64 = self.c.one(
            "INSERT INTO events (id, type, payload, created_at) VALUES (?1, ?2, ?3, ?4) RETURNING seq",
            args![id.as_str(), kind, payload.to_string(), self.now],
        )?;
        self.events.push(Event {
            seq: Some(seq),
            id,
            kind: kind.to_string(),
            timestamp: iso(self.now),
            payload,
        });
        Ok(())
    }

    /// Queues an ephemeral event (never stored) for publication after commit.
    pub fn ephemeral(&mut self, kind: &str, payload: Value) {
        self.events.push(Event {
            seq: None,
            id: new_id(),
            kind: kind.to_string(),
            timestamp: iso(self.now),
            payload,
        });
    }
}

impl Store {
    /// Where a replay starts and ends: the seq of the event `cursor` (a validation error on
    /// `cursor` when there is no such event; `None` without a cursor), and the newest seq.
    pub async fn replay_bounds(
        &self,
        cursor: Option<String>,
    ) -> Result<(Option<i64>, i64), StoreError> {
        self.read(move |c, _, _| {
            let after = match &cursor {
                Some(id) => Some(seq_of(c, id)?.ok_or_else(|| {
                    StoreError::field("cursor", "cursor event id was not found.")
                })?),
                None => None,
            };
            Ok((after, head(c)?))
        })
        .await
    }

    /// Persisted events with `after < seq <= upto`, oldest first, at most `limit`.
    pub async fn events_page(
        &self,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        self.read(move |c, _, _| page(c, after, upto, limit)).await
    }
}

/// The `seq` of a persisted event id, if it exists.
fn seq_of(c: &dyn Db, id: &str) -> Result<Option<i64>, StoreError> {
    c.opt("SELECT seq FROM events WHERE id = ?1", args![id])
}

/// Newest persisted seq (0 when none).
fn head(c: &dyn Db) -> Result<i64, StoreError> {
    c.one("SELECT COALESCE(MAX(seq), 0) FROM events", args![])
}

/// Persisted events with `after < seq <= upto`, oldest first, at most `limit`.
fn page(c: &dyn Db, after: i64, upto: i64, limit: i64) -> Result<Vec<Event>, StoreError> {
    c.all_map(
        "SELECT seq, id, type, payload, created_at FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
        args![after, upto, limit],
        event_from_row,
    )
}

/// An `events` row (`seq, id, type, payload, created_at`) as an [`Event`].
pub(crate) fn event_from_row(r: &super::sql::Row) -> Result<Event, StoreError> {
    let payload: String = r.get(3)?;
    Ok(Event {
        seq: Some(r.get(0)?),
        id: r.get(1)?,
        kind: r.get(2)?,
        timestamp: iso(r.get(4)?),
        payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
    })
}
