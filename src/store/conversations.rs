//! The conversations front door's tables (`fd_*`): conversations, participants, bots switched on
//! per conversation, messages with read receipts, delivery logs of bot invocations, and the feed
//! of events (stored first, then published on the store's conversation bus).

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

use super::db::{iso, new_id};
use super::error::StoreError;
use super::Store;

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

/// A page of a conversation's messages, oldest first.
#[derive(Debug, Clone)]
pub struct MessagePage {
    pub messages: Vec<Value>,
    pub has_more: bool,
}

/// Records a feed event inside the open transaction; the caller publishes it after commit.
fn record(
    c: &Connection,
    now: i64,
    kind: &str,
    conv: &str,
    payload: Value,
) -> Result<ConvEvent, StoreError> {
    let id = new_id();
    c.prepare_cached("INSERT INTO fd_events (id, type, conversation_id, payload, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![id, kind, conv, payload.to_string(), now])?;
    Ok(ConvEvent {
        seq: c.last_insert_rowid(),
        id,
        kind: kind.to_string(),
        conversation_id: conv.to_string(),
        payload,
        created_at: now,
    })
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
    c: &Connection,
    now: i64,
    m: &NewConvMessage,
    automated: bool,
) -> Result<(Value, ConvEvent), StoreError> {
    let id = new_id();
    c.prepare_cached(
        "INSERT INTO fd_messages (id, conversation_id, sender, recipient, type, content, attachments, is_automated, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
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
    c.prepare_cached("UPDATE fd_conversations SET updated_at = ?2 WHERE id = ?1")?
        .execute(params![m.conversation, now])?;
    let msg = message_json(m, automated, &id, now, json!([]));
    let ev = record(c, now, "message.created", &m.conversation, msg.clone())?;
    Ok((msg, ev))
}

fn enabled_bots(c: &Connection, conv: &str) -> Result<Vec<String>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT bot FROM fd_bots WHERE conversation_id = ?1 AND enabled = 1 ORDER BY bot",
    )?
    .query_map(params![conv], |r| r.get(0))?
    .collect::<Result<_, _>>()?)
}

fn exists(c: &Connection, conv: &str) -> Result<bool, StoreError> {
    Ok(
        c.prepare_cached("SELECT 1 FROM fd_conversations WHERE id = ?1")?
            .exists(params![conv])?,
    )
}

/// A conversation summary; `participant` adds its unread count.
fn summary(
    c: &Connection,
    id: &str,
    participant: Option<&str>,
) -> Result<Option<Value>, StoreError> {
    let row = c
        .prepare_cached(
            "SELECT title, metadata, created_at, updated_at FROM fd_conversations WHERE id = ?1",
        )?
        .query_row(params![id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()?;
    let Some((title, metadata, created, updated)) = row else {
        return Ok(None);
    };
    let participants: Vec<String> = c
        .prepare_cached("SELECT participant FROM fd_participants WHERE conversation_id = ?1 ORDER BY participant")?
        .query_map(params![id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let bots = enabled_bots(c, id)?;
    let last = c
        .prepare_cached("SELECT id, sender, type, content, created_at FROM fd_messages WHERE conversation_id = ?1 ORDER BY seq DESC LIMIT 1")?
        .query_row(params![id], |r| {
            let content: String = r.get(3)?;
            Ok(json!({
                "id": r.get::<_, String>(0)?,
                "from": r.get::<_, String>(1)?,
                "type": r.get::<_, String>(2)?,
                "preview": content.chars().take(180).collect::<String>(),
                "createdAt": iso(r.get(4)?),
            }))
        })
        .optional()?;
    let metadata: Value = serde_json::from_str(&metadata).unwrap_or(json!({}));
    let mut out = json!({
        "id": id,
        "title": title,
        "participants": participants,
        "metadata": metadata,
        "bots": bots,
        "contractId": metadata.get("contractId"),
        "lastMessage": last,
        "createdAt": iso(created),
        "updatedAt": iso(updated),
    });
    if let Some(p) = participant {
        let unread: i64 = c
            .prepare_cached(
                "SELECT count(*) FROM fd_messages m WHERE m.conversation_id = ?1 AND m.sender <> ?2
                 AND NOT EXISTS (SELECT 1 FROM fd_reads r WHERE r.message_id = m.id AND r.participant = ?2)",
            )?
            .query_row(params![id, p], |r| r.get(0))?;
        out["unreadCount"] = json!(unread);
    }
    Ok(Some(out))
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
                w.c.prepare_cached("INSERT INTO fd_conversations (id, title, metadata, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)")?
                    .execute(params![id, title, metadata.to_string(), w.now])?;
                for p in &participants {
                    w.c.prepare_cached("INSERT INTO fd_participants (conversation_id, participant) VALUES (?1, ?2)")?
                        .execute(params![id, p])?;
                }
                let ev = record(w.c, w.now, "conversation.created", &id, json!({"title": title, "participants": participants}))?;
                Ok((json!({"id": id, "title": title, "createdAt": iso(w.now)}), ev))
            })
            .await?;
        self.publish_conv(vec![ev]);
        Ok(conv)
    }

    /// Conversation summaries, most recently active first: those of `participant` (with their
    /// unread counts), or the latest 500.
    pub async fn conversations(
        &self,
        participant: Option<String>,
    ) -> Result<Vec<Value>, StoreError> {
        self.read(move |c, _, _| {
            let ids: Vec<String> = match &participant {
                Some(p) => c
                    .prepare_cached(
                        "SELECT c.id FROM fd_conversations c JOIN fd_participants p ON p.conversation_id = c.id
                         WHERE p.participant = ?1 ORDER BY c.updated_at DESC, c.seq DESC",
                    )?
                    .query_map(params![p], |r| r.get(0))?
                    .collect::<Result<_, _>>()?,
                None => c
                    .prepare_cached("SELECT id FROM fd_conversations ORDER BY updated_at DESC, seq DESC LIMIT 500")?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?,
            };
            let mut out = Vec::new();
            for id in ids {
                if let Some(s) = summary(c, &id, participant.as_deref())? {
                    out.push(s);
                }
            }
            Ok(out)
        })
        .await
    }

    /// One conversation's summary, or `None`.
    pub async fn conversation(&self, id: &str) -> Result<Option<Value>, StoreError> {
        let id = id.to_string();
        self.read(move |c, _, _| summary(c, &id, None)).await
    }

    /// True when the conversation exists.
    pub async fn conversation_exists(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.read(move |c, _, _| exists(c, &id)).await
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
                w.c.prepare_cached(
                    "INSERT INTO fd_bots (conversation_id, bot, enabled, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (conversation_id, bot) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
                )?
                .execute(params![conv, bot, enabled as i64, w.now])?;
                let bots = enabled_bots(w.c, &conv)?;
                let ev = record(w.c, w.now, "bot.updated", &conv, json!({"bot": bot, "enabled": enabled}))?;
                Ok((bots, ev))
            })
            .await?;
        self.publish_conv(vec![ev]);
        Ok(bots)
    }

    /// Every bot ever set in a conversation: `{"bot","enabled","updatedAt"}`.
    pub async fn conversation_bots(&self, conv: &str) -> Result<Vec<Value>, StoreError> {
        let conv = conv.to_string();
        self.read(move |c, _, _| {
            let rows: Vec<Value> = c
                .prepare_cached("SELECT bot, enabled, updated_at FROM fd_bots WHERE conversation_id = ?1 ORDER BY bot")?
                .query_map(params![conv], |r| {
                    Ok(json!({"bot": r.get::<_, String>(0)?, "enabled": r.get::<_, i64>(1)? == 1, "updatedAt": iso(r.get(2)?)}))
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
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
                let (msg, ev) = insert_message(w.c, w.now, &m, false)?;
                let mut events = vec![ev];
                let mut deliveries: Vec<(String, String)> = Vec::new();
                if to_bots {
                    for bot in enabled_bots(w.c, &m.conversation)?.into_iter().filter(|b| *b != m.from) {
                        let log_id = new_id();
                        w.c.prepare_cached(
                            "INSERT INTO fd_delivery (id, conversation_id, message_id, bot, status, detail, created_at, updated_at)
                             VALUES (?1, ?2, ?3, ?4, 'queued', NULL, ?5, ?5)",
                        )?
                        .execute(params![log_id, m.conversation, msg["id"].as_str(), bot, w.now])?;
                        events.push(record(w.c, w.now, "delivery.updated", &m.conversation, json!({"id": log_id, "bot": bot, "messageId": msg["id"], "status": "queued"}))?);
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
                    .prepare_cached("SELECT conversation_id, bot, message_id FROM fd_delivery WHERE id = ?1")?
                    .query_row(params![log_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                let Some((conv, bot, message_id)) = row else { return Ok(None) };
                w.c.prepare_cached(
                    "UPDATE fd_delivery SET status = ?2, detail = ?3, updated_at = ?4
                     WHERE id = ?1 AND status <> 'delivered'",
                )?
                .execute(params![log_id, status, detail, w.now])?;
                Ok(Some(record(w.c, w.now, "delivery.updated", &conv, json!({"id": log_id, "bot": bot, "messageId": message_id, "status": status, "detail": detail}))?))
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
                let (msg, ev) = insert_message(w.c, w.now, &m, true)?;
                let mut events = vec![ev];
                let open: Option<(String, String)> = w
                    .c
                    .prepare_cached(
                        "SELECT id, message_id FROM fd_delivery WHERE conversation_id = ?1 AND bot = ?2 AND status <> 'delivered'
                         ORDER BY seq LIMIT 1",
                    )?
                    .query_row(params![conv, bot], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if let Some((log_id, asked)) = open {
                    w.c.prepare_cached("UPDATE fd_delivery SET status = 'delivered', detail = NULL, reply_id = ?2, updated_at = ?3 WHERE id = ?1")?
                        .execute(params![log_id, msg["id"].as_str(), w.now])?;
                    events.push(record(w.c, w.now, "delivery.updated", &conv, json!({"id": log_id, "bot": bot, "messageId": asked, "status": "delivered", "replyId": msg["id"], "agentMessageId": agent_message_id}))?);
                }
                Ok(events)
            })
            .await?;
        self.publish_conv(events);
        Ok(())
    }

    /// Up to `limit` messages before the message `before` (or the newest), oldest first, with
    /// their read receipts. `None` when `before` is not a message of this conversation.
    pub async fn conversation_messages(
        &self,
        conv: &str,
        before: Option<String>,
        limit: i64,
    ) -> Result<Option<MessagePage>, StoreError> {
        let conv = conv.to_string();
        self.read(move |c, _, _| {
            let before_seq: i64 = match &before {
                Some(id) => match c
                    .prepare_cached("SELECT seq FROM fd_messages WHERE id = ?1 AND conversation_id = ?2")?
                    .query_row(params![id, conv], |r| r.get(0))
                    .optional()?
                {
                    Some(s) => s,
                    None => return Ok(None),
                },
                None => i64::MAX,
            };
            let mut rows: Vec<Value> = c
                .prepare_cached(
                    "SELECT id, sender, recipient, type, content, attachments, is_automated, created_at FROM fd_messages
                     WHERE conversation_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
                )?
                .query_map(params![conv, before_seq, limit + 1], |r| {
                    let id: String = r.get(0)?;
                    let m = NewConvMessage {
                        conversation: conv.clone(),
                        from: r.get(1)?,
                        to: r.get(2)?,
                        kind: r.get(3)?,
                        content: r.get(4)?,
                        attachments: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or(json!([])),
                    };
                    Ok(message_json(&m, r.get::<_, i64>(6)? == 1, &id, r.get(7)?, json!([])))
                })?
                .collect::<Result<_, _>>()?;
            let has_more = rows.len() as i64 > limit;
            rows.truncate(limit.max(0) as usize);
            rows.reverse();
            let mut reads = c.prepare_cached("SELECT participant, read_at FROM fd_reads WHERE message_id = ?1 ORDER BY read_at")?;
            for m in &mut rows {
                let read_by: Vec<Value> = reads
                    .query_map(params![m["id"].as_str()], |r| {
                        Ok(json!({"participant": r.get::<_, String>(0)?, "readAt": iso(r.get(1)?)}))
                    })?
                    .collect::<Result<_, _>>()?;
                m["readBy"] = Value::Array(read_by);
            }
            Ok(Some(MessagePage { messages: rows, has_more }))
        })
        .await
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
                    .prepare_cached("SELECT id FROM fd_messages WHERE conversation_id = ?1 AND sender <> ?2")?
                    .query_map(params![conv, participant], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for id in all.iter().filter(|id| ids.is_empty() || ids.contains(id)) {
                    marked += w
                        .c
                        .prepare_cached("INSERT OR IGNORE INTO fd_reads (message_id, participant, read_at) VALUES (?1, ?2, ?3)")?
                        .execute(params![id, participant, w.now])?;
                }
                let ev = record(w.c, w.now, "read.updated", &conv, json!({"participant": participant, "marked": marked}))?;
                Ok((marked, ev))
            })
            .await?;
        self.publish_conv(vec![ev]);
        Ok(marked)
    }

    /// The delivery logs of a conversation, oldest first.
    pub async fn delivery_logs(&self, conv: &str) -> Result<Vec<Value>, StoreError> {
        let conv = conv.to_string();
        self.read(move |c, _, _| {
            let rows: Vec<Value> = c
                .prepare_cached(
                    "SELECT id, message_id, bot, status, detail, reply_id, created_at, updated_at FROM fd_delivery
                     WHERE conversation_id = ?1 ORDER BY seq",
                )?
                .query_map(params![conv], |r| {
                    Ok(json!({
                        "id": r.get::<_, String>(0)?,
                        "messageId": r.get::<_, String>(1)?,
                        "bot": r.get::<_, String>(2)?,
                        "status": r.get::<_, String>(3)?,
                        "detail": r.get::<_, Option<String>>(4)?,
                        "replyId": r.get::<_, Option<String>>(5)?,
                        "createdAt": iso(r.get(6)?),
                        "updatedAt": iso(r.get(7)?),
                    }))
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Stored feed events after `after` (by seq), oldest first, for one conversation or all.
    pub async fn conversation_events(
        &self,
        conv: Option<String>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ConvEvent>, StoreError> {
        self.read(move |c, _, _| {
            let map = |r: &rusqlite::Row| {
                let payload: String = r.get(4)?;
                Ok(ConvEvent {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    kind: r.get(2)?,
                    conversation_id: r.get(3)?,
                    payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
                    created_at: r.get(5)?,
                })
            };
            let rows: Vec<ConvEvent> = match &conv {
                Some(conv) => c
                    .prepare_cached("SELECT seq, id, type, conversation_id, payload, created_at FROM fd_events WHERE conversation_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")?
                    .query_map(params![conv, after, limit], map)?
                    .collect::<Result<_, _>>()?,
                None => c
                    .prepare_cached("SELECT seq, id, type, conversation_id, payload, created_at FROM fd_events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?
                    .query_map(params![after, limit], map)?
                    .collect::<Result<_, _>>()?,
            };
            Ok(rows)
        })
        .await
    }

    /// The seq of a feed event id (for `Last-Event-ID`), or of the event of a message id.
    pub async fn conversation_event_seq(&self, id: &str) -> Result<Option<i64>, StoreError> {
        let id = id.to_string();
        self.read(move |c, _, _| {
            Ok(c.prepare_cached(
                "SELECT seq FROM fd_events WHERE id = ?1
                 UNION ALL SELECT seq FROM fd_events WHERE type = 'message.created' AND json_extract(payload, '$.id') = ?1
                 LIMIT 1",
            )?
            .query_row(params![id], |r| r.get(0))
            .optional()?)
        })
        .await
    }
}
