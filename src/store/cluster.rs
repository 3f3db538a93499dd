//! Nodes sharing one PostgreSQL schema: what one node's commits tell the others.
//!
//! Each group commit that made work claimable or wrote events sends `NOTIFY`s on the schema's
//! channel inside its transaction, so they are delivered at commit, in commit order, and never
//! for a rolled-back write. Every node `LISTEN`s on a connection of its own (a thread: the sync
//! client blocks) and, for notes of other nodes, wakes its waiting claims or puts their events
//! on its own live bus. Nothing polls: a claim waiting on one node wakes when another commits.

use std::sync::{Arc, Weak};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use serde_json::{json, Value};

use super::conversations::ConvEvent;
use super::events::{event_from_row, Event};
use super::sql::postgres::{row_of, PgTarget};
use super::sql::{args, Db, DbResult};
use super::{Inner, StoreError};

/// PostgreSQL refuses notification payloads from 8000 bytes on; an event larger than this
/// travels by its `seq` and is read from the table.
const PAYLOAD_MAX: usize = 7900;
/// Longest a channel name may be (an identifier: `NAMEDATALEN - 1`).
const CHANNEL_MAX: usize = 63;
/// How often the listener looks whether the store closed.
const LISTEN_TICK: Duration = Duration::from_millis(500);
/// Wait before listening again after the connection broke.
const RECONNECT: Duration = Duration::from_secs(1);

/// This node, and the channel of its schema.
#[derive(Debug)]
pub(crate) struct Channel {
    /// Random per process: a node ignores its own notes (it published them already).
    node: String,
    name: String,
}

impl Channel {
    /// The channel of `schema`, for a new node.
    pub fn new(schema: &str) -> Channel {
        let mut name = format!("agentd:{schema}");
        while name.len() > CHANNEL_MAX {
            name.pop();
        }
        Channel {
            node: crate::ids::new_id(),
            name,
        }
    }

    /// Sends, in the open transaction, what the others must learn from it: its events (of the
    /// chat API and of the conversations feed), and whether waiting claims should look again.
    pub fn announce(
        &self,
        tx: &dyn Db,
        events: &[Event],
        conv_events: &[ConvEvent],
        claims: bool,
    ) -> Result<(), StoreError> {
        for e in events {
            if let Some(note) = self.event_note(e) {
                tx.query("SELECT pg_notify(?1, ?2)", args![self.name, note])?;
            }
        }
        for e in conv_events {
            tx.query(
                "SELECT pg_notify(?1, ?2)",
                args![self.name, self.conv_note(e)],
            )?;
        }
        if claims {
            let note = json!({ "node": self.node, "claims": true }).to_string();
            tx.query("SELECT pg_notify(?1, ?2)", args![self.name, note])?;
        }
        Ok(())
    }

    /// An event as a note: whole when it fits, else (persisted) by its `seq`. An ephemeral event
    /// too large to send (a huge stream chunk) reaches only this node's subscribers.
    fn event_note(&self, e: &Event) -> Option<String> {
        let whole = json!({
            "node": self.node,
            "event": { "seq": e.seq, "id": e.id, "type": e.kind, "timestamp": e.timestamp, "payload": e.payload },
        })
        .to_string();
        if whole.len() <= PAYLOAD_MAX {
            return Some(whole);
        }
        match e.seq {
            Some(seq) => Some(json!({ "node": self.node, "seq": seq }).to_string()),
            None => {
                tracing::warn!(kind = %e.kind, bytes = whole.len(), "an ephemeral event too large for NOTIFY stays on this node");
                None
            }
        }
    }
}

impl Channel {
    /// A conversations feed event as a note: whole when it fits, else by its `seq` (feed events
    /// are always persisted).
    fn conv_note(&self, e: &ConvEvent) -> String {
        let whole = json!({
            "node": self.node,
            "conv": {
                "seq": e.seq, "id": e.id, "type": e.kind, "conversationId": e.conversation_id,
                "payload": e.payload, "createdAt": e.created_at,
            },
        })
        .to_string();
        if whole.len() <= PAYLOAD_MAX {
            whole
        } else {
            json!({ "node": self.node, "conv_seq": e.seq }).to_string()
        }
    }
}

/// Starts the listener thread; it ends when the store closes or is gone.
pub(crate) fn spawn_listener(
    target: PgTarget,
    channel: Arc<Channel>,
    inner: Weak<Inner>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("agentd-pg-listen".into())
        .spawn(move || listen(&target, &channel, &inner))
        .map(|_| ())
}

/// True while the store is open.
fn open(inner: &Weak<Inner>) -> bool {
    inner
        .upgrade()
        .is_some_and(|i| !i.closed.load(std::sync::atomic::Ordering::SeqCst))
}

fn listen(target: &PgTarget, channel: &Channel, inner: &Weak<Inner>) {
    let mut warned = false;
    while open(inner) {
        let mut client = match subscribe(target, channel) {
            Ok(c) => c,
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "cluster: cannot LISTEN; other nodes' commits are not seen until it can");
                    warned = true;
                }
                std::thread::sleep(RECONNECT);
                continue;
            }
        };
        if warned {
            tracing::info!("cluster: listening again");
            warned = false;
        }
        // Whatever was committed while nobody listened: let waiting claims look.
        if let Some(i) = inner.upgrade() {
            i.claims.notify_waiters();
        }
        while open(inner) {
            let next = client.notifications().timeout_iter(LISTEN_TICK).next();
            match next {
                Ok(Some(n)) => {
                    let payload = n.payload().to_string();
                    if let Some(i) = inner.upgrade() {
                        receive(&mut client, &i, channel, &payload);
                    }
                }
                Ok(None) if client.is_closed() => break,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cluster: the LISTEN connection broke");
                    break;
                }
            }
        }
    }
}

/// A connection listening on the channel.
fn subscribe(target: &PgTarget, channel: &Channel) -> DbResult<postgres::Client> {
    let mut client = target.client()?;
    client.batch_execute(&format!("LISTEN \"{}\"", channel.name.replace('"', "\"\"")))?;
    Ok(client)
}

/// Acts on one note of another node.
fn receive(client: &mut postgres::Client, inner: &Inner, channel: &Channel, payload: &str) {
    let Ok(note) = serde_json::from_str::<Value>(payload) else {
        return;
    };
    if note["node"].as_str() == Some(channel.node.as_str()) {
        return;
    }
    if note["claims"] == true {
        inner.claims.notify_waiters();
    }
    let event = if let Some(e) = note.get("event") {
        Some(Event {
            seq: e["seq"].as_i64(),
            id: e["id"].as_str().unwrap_or_default().to_string(),
            kind: e["type"].as_str().unwrap_or_default().to_string(),
            timestamp: e["timestamp"].as_str().unwrap_or_default().to_string(),
            payload: e["payload"].clone(),
        })
    } else if let Some(seq) = note["seq"].as_i64() {
        match read_event(client, seq) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(seq, error = %e, "cluster: cannot read an event of another node");
                None
            }
        }
    } else {
        None
    };
    if let Some(e) = event {
        let _ = inner.events.send(Arc::new(e));
    }
    let conv = if let Some(e) = note.get("conv") {
        Some(ConvEvent {
            seq: e["seq"].as_i64().unwrap_or_default(),
            id: e["id"].as_str().unwrap_or_default().to_string(),
            kind: e["type"].as_str().unwrap_or_default().to_string(),
            conversation_id: e["conversationId"].as_str().unwrap_or_default().to_string(),
            payload: e["payload"].clone(),
            created_at: e["createdAt"].as_i64().unwrap_or_default(),
        })
    } else if let Some(seq) = note["conv_seq"].as_i64() {
        match read_conv_event(client, seq) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(seq, error = %e, "cluster: cannot read a feed event of another node");
                None
            }
        }
    } else {
        None
    };
    if let Some(e) = conv {
        let _ = inner.conv_events.send(Arc::new(e));
    }
}

/// The persisted feed event `seq` of the conversations front door.
fn read_conv_event(
    client: &mut postgres::Client,
    seq: i64,
) -> Result<Option<ConvEvent>, StoreError> {
    let row = client
        .query_opt(
            "SELECT seq, id, type, conversation_id, payload, created_at FROM fd_events WHERE seq = $1",
            &[&seq],
        )
        .map_err(super::sql::DbError::from)?;
    match row {
        Some(r) => Ok(Some(ConvEvent::from_row(&row_of(&r)?)?)),
        None => Ok(None),
    }
}

/// The persisted event `seq`.
fn read_event(client: &mut postgres::Client, seq: i64) -> Result<Option<Event>, StoreError> {
    let row = client
        .query_opt(
            "SELECT seq, id, type, payload, created_at FROM events WHERE seq = $1",
            &[&seq],
        )
        .map_err(super::sql::DbError::from)?;
    match row {
        Some(r) => Ok(Some(event_from_row(&row_of(&r)?)?)),
        None => Ok(None),
    }
}
