//! The conversations front door's tables (`fd_*`): conversations, participants, bots switched on
//! per conversation, messages with read receipts, delivery logs of bot invocations, and the feed
//! of events (stored first, then published on the store's conversation bus).

use crate::store::sql::{args, Db, Row};

use serde_json::{json, Value};

mod reads;

pub use reads::MessagePage;

use super::db::iso;
use super::error::StoreError;
use super::{Store, W};
use crate::ids::new_id;

/// One event of the conversations feed (also what the per-conversation stream sends).
#[derive(Debug, Clone)]
pub struct ConvEvent {
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub conversation_id: String,
    pub payload: Value,
    pub created_at: i64,
}

impl ConvEvent {
    /// From a row of `SELECT seq, id, type, conversation_id, payload, created_at FROM fd_events`.
    pub(crate) fn from_row(r: &Row) -> Result<ConvEvent, StoreError> {
        let payload: String = r.get(4)?;
        Ok(ConvEvent {
            seq: r.get(0)?,
            id: r.get(1)?,
            kind: r.get(2)?,
            conversation_id: r.get(3)?,
            payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
            created_at: r.get(5)?,
        })
    }

    /// `{"id","seq","type","conversationId","payload","createdAt"}`.
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "seq": self.seq,
            "type": self.kind,
            "conversationId": self.conversation_id,
            "payload": self.payload,
            "createdAt": iso(self.created_at),
        })
    }
}

/// A message to add to a conversation.
#[derive(Debug, Clone)]
pub struct NewConvMessage {
    pub conversation: String,
    pub from: String,
    pub to: Option<String>,
    /// `text`, `image`, `file` or `ping`.
    pub kind: String,
    pub content: String,
    /// Attachments as given (references, never stored bytes).
    pub attachments: Value,
}

/// A participant's message as stored, and the bots it was queued for.
#[derive(Debug, Clone)]
pub struct PostedMessage {
    pub message: Value,
    /// `(bot, delivery log id)` for every enabled bot that is to answer.
    pub deliveries: Vec<(String, String)>,
}

/// Records a feed event inside the open transaction; the caller publishes it after commit (on
/// a shared PostgreSQL schema the commit also announces it to the other nodes).
fn record(w: &mut W, kind: &str, conv: &str, payload: Value) -> Result<ConvEvent, StoreError> {
    let id = new_id();
    let seq: i64 = w.c.one(
        "INSERT INTO fd_events (id, type, conversation_id, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5) RETURNING seq",
        args![id, kind, conv, payload.to_string(), w.now],
    )?;
    let ev = ConvEvent {
        seq,
        id,
        kind: kind.to_string(),
        conversation_id: conv.to_string(),
        payload,
        created_at: w.now,
    };
    w.announce_conv(&ev);
    Ok(ev)
}

fn message_json(
    m: &NewConvMessage,
    automated: bool,
    id: &str,
    created: i64,
    read_by: Value,
) -> Value {
    json!({
        "id": id,
        "messageId": id,
        "conversationId": m.conversation,
        "from": m.from,
        "to": m.to,
        "type": m.kind,
        "content": m.content,
        "attachments": m.attachments,
        "isAutomated": automated,
        "createdAt": iso(created),
        "readBy": read_by,
    })
}

/// Stores a message and its feed event; returns the message and the event to publish.
fn insert_message(
    w: &mut W,
    m: &NewConvMessage,
    automated: bool,
) -> Result<(Value, ConvEvent), StoreError> {
    let (c, now) = (w.c, w.now);
    let id = new_id();
    c.execute("INSERT INTO fd_messages (id, conversation_id, sender, recipient, type, content, attachments, is_automated, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)", args![
        id,
        m.conversation,
        m.from,
        m.to,
        m.kind,
        m.content,
        m.attachments.to_string(),
        automated as i64,
        now
    ])?;
    c.execute(
        "UPDATE fd_conversations SET updated_at = ?2 WHERE id = ?1",
        args![m.conversation, now],
    )?;
    let msg = message_json(m, automated, &id, now, json!([]));
    let ev = record(w, "message.created", &m.conversation, msg.clone())?;
    Ok((msg, ev))
}

fn enabled_bots(c: &dyn Db, conv: &str) -> Result<Vec<String>, StoreError> {
    c.all(
        "SELECT bot FROM fd_bots WHERE conversation_id = ?1 AND enabled = 1 ORDER BY bot",
        args![conv],
    )
}

fn exists(c: &dyn Db, conv: &str) -> Result<bool, StoreError> {
    c.exists("SELECT 1 FROM fd_conversations WHERE id = ?1", args![conv])
}

impl Store {
    /// Creates a conversation; returns `{"id","title","createdAt"}`.
    pub async fn create_conversation(
        &self,
        title: String,
        participants: Vec<String>,
        metadata: Value,
    ) -> Result<Value, StoreError> {
        let (conv, ev) = self
            .write(move |w| {
                let id = new_id();
                w.c.execute("INSERT INTO fd_conversations (id, title, metadata, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)", args![id, title, metadata.to_string(), w.now])?;
                for p in &participants {
                    w.c.execute("INSERT INTO fd_participants (conversation_id, participant) VALUES (?1, ?2)", args![id, p])?;
                }
                let ev = record(w, "conversation.created", &id, json!({"title": title, "participants": participants}))?;
                Ok((json!({"id": id, "title": title, "createdAt": iso(w.now)}), ev))
            })
            .await?;
        self.publish_conv(vec![ev]);
        Ok(conv)
    }

    /// Switches a bot on or off in a conversation; returns the bots now enabled.
    pub async fn set_conversation_bot(
        &self,
        conv: &str,
        bot: &str,
        enabled: bool,
    ) -> Result<Vec<String>, StoreError> {
        let (conv, bot) = (conv.to_string(), bot.to_string());
        let (bots, ev) = self
            .write(move |w| {
                w.c.execute("INSERT INTO fd_bots (conversation_id, bot, enabled, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (conversation_id, bot) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at", args![conv, bot, enabled as i64, w.now])?;
                let bots = enabled_bots(w.c, &conv)?;
                let ev = record(w, "bot.updated", &conv, json!({"bot": bot, "enabled": enabled}))?;
                Ok((bots, ev))
            })
            .await?;
        self.publish_conv(vec![ev]);
        Ok(bots)
    }

    /// Stores a participant's message. When `to_bots`, every enabled bot but the sender gets a
    /// queued delivery log, returned so the caller can invoke them.
    pub async fn post_conversation_message(
        &self,
        m: NewConvMessage,
        to_bots: bool,
    ) -> Result<PostedMessage, StoreError> {
        let (posted, events) = self
            .write(move |w| {
                let (msg, ev) = insert_message(w, &m, false)?;
                let mut events = vec![ev];
                let mut deliveries: Vec<(String, String)> = Vec::new();
                if to_bots {
                    for bot in enabled_bots(w.c, &m.conversation)?.into_iter().filter(|b| *b != m.from) {
                        let log_id = new_id();
                        w.c.execute("INSERT INTO fd_delivery (id, conversation_id, message_id, bot, status, detail, created_at, updated_at)
                             VALUES (?1, ?2, ?3, ?4, 'queued', NULL, ?5, ?5)", args![log_id, m.conversation, msg["id"].as_str(), bot, w.now])?;
                        events.push(record(w, "delivery.updated", &m.conversation, json!({"id": log_id, "bot": bot, "messageId": msg["id"], "status": "queued"}))?);
                        deliveries.push((bot, log_id));
                    }
                }
                Ok((PostedMessage { message: msg, deliveries }, events))
            })
            .await?;
        self.publish_conv(events);
        Ok(posted)
    }

    /// Records the status of a bot delivery. An answer that already arrived is not downgraded by
    /// a late status.
    pub async fn update_delivery(
        &self,
        log_id: &str,
        status: &'static str,
        detail: Option<String>,
    ) -> Result<(), StoreError> {
        let log_id = log_id.to_string();
        let ev = self
            .write(move |w| {
                let row: Option<(String, String, String)> = w
                    .c
                    .opt("SELECT conversation_id, bot, message_id FROM fd_delivery WHERE id = ?1", args![log_id])?;
                let Some((conv, bot, message_id)) = row else { return Ok(None) };
                w.c.execute("UPDATE fd_delivery SET status = ?2, detail = ?3, updated_at = ?4
                     WHERE id = ?1 AND status <> 'delivered'", args![log_id, status, detail, w.now])?;
                Ok(Some(record(w, "delivery.updated", &conv, json!({"id": log_id, "bot": bot, "messageId": message_id, "status": status, "detail": detail}))?))
            })
            .await?;
        self.publish_conv(ev.into_iter().collect());
        Ok(())
    }

    /// Copies a bot's answer into its conversation (if it still exists) as an automated message,
    /// and marks the oldest open delivery of that bot there as delivered.
    pub async fn add_bot_answer(
        &self,
        conv: &str,
        bot: &str,
        text: String,
        agent_message_id: &str,
    ) -> Result<(), StoreError> {
        let (conv, bot, agent_message_id) = (
            conv.to_string(),
            bot.to_string(),
            agent_message_id.to_string(),
        );
        let events = self
            .write(move |w| {
                if !exists(w.c, &conv)? {
                    return Ok(Vec::new());
                }
                let m = NewConvMessage {
                    conversation: conv.clone(),
                    from: bot.clone(),
                    to: None,
                    kind: "text".into(),
                    content: text,
                    attachments: json!([]),
                };
                let (msg, ev) = insert_message(w, &m, true)?;
                let mut events = vec![ev];
                let open: Option<(String, String)> = w
                    .c
                    .opt("SELECT id, message_id FROM fd_delivery WHERE conversation_id = ?1 AND bot = ?2 AND status <> 'delivered'
                         ORDER BY seq LIMIT 1", args![conv, bot])?;
                if let Some((log_id, asked)) = open {
                    w.c.execute("UPDATE fd_delivery SET status = 'delivered', detail = NULL, reply_id = ?2, updated_at = ?3 WHERE id = ?1", args![log_id, msg["id"].as_str(), w.now])?;
                    events.push(record(w, "delivery.updated", &conv, json!({"id": log_id, "bot": bot, "messageId": asked, "status": "delivered", "replyId": msg["id"], "agentMessageId": agent_message_id}))?);
                }
                Ok(events)
            })
            .await?;
        self.publish_conv(events);
        Ok(())
    }

    /// Marks as read by `participant` the messages of others in a conversation (all, or only
    /// `ids` when not empty); returns how many were newly marked.
    pub async fn mark_conversation_read(
        &self,
        conv: &str,
        participant: String,
        ids: Vec<String>,
    ) -> Result<usize, StoreError> {
        let conv = conv.to_string();
        let (marked, ev) = self
            .write(move |w| {
                let mut marked = 0;
                let all: Vec<String> = w
                    .c
                    .all("SELECT id FROM fd_messages WHERE conversation_id = ?1 AND sender <> ?2", args![conv, participant])?;
                for id in all.iter().filter(|id| ids.is_empty() || ids.contains(id)) {
                    marked += w
                        .c
                        .execute("INSERT INTO fd_reads (message_id, participant, read_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING", args![id, participant, w.now])?;
                }
                let ev = record(w, "read.updated", &conv, json!({"participant": participant, "marked": marked}))?;
                Ok((marked, ev))
            })
            .await?;
        self.publish_conv(vec![ev]);
        Ok(marked)
    }
}
