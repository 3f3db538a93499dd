//! Reads of the conversations front door's tables: summaries, bots, message pages with read
//! receipts, delivery logs, and the stored feed.

use crate::store::sql::{args, Db, Row};

use serde_json::{json, Value};

use super::{enabled_bots, exists, message_json, ConvEvent, NewConvMessage};
use crate::store::db::iso;
use crate::store::error::StoreError;
use crate::store::Store;

/// A page of a conversation's messages, oldest first.
#[derive(Debug, Clone)]
pub struct MessagePage {
    pub messages: Vec<Value>,
    pub has_more: bool,
}

/// A conversation summary; `participant` adds its unread count.
fn summary(c: &dyn Db, id: &str, participant: Option<&str>) -> Result<Option<Value>, StoreError> {
    let row = c.opt_map(
        "SELECT title, metadata, created_at, updated_at FROM fd_conversations WHERE id = ?1",
        args![id],
        |r| {
            Ok((
                r.get::<String>(0)?,
                r.get::<String>(1)?,
                r.get::<i64>(2)?,
                r.get::<i64>(3)?,
            ))
        },
    )?;
    let Some((title, metadata, created, updated)) = row else {
        return Ok(None);
    };
    let participants: Vec<String> = c.all(
        "SELECT participant FROM fd_participants WHERE conversation_id = ?1 ORDER BY participant",
        args![id],
    )?;
    let bots = enabled_bots(c, id)?;
    let last = c
        .opt_map("SELECT id, sender, type, content, created_at FROM fd_messages WHERE conversation_id = ?1 ORDER BY seq DESC LIMIT 1", args![id], |r| {
            let content: String = r.get(3)?;
            Ok(json!({
                "id": r.get::<String>(0)?,
                "from": r.get::<String>(1)?,
                "type": r.get::<String>(2)?,
                "preview": content.chars().take(180).collect::<String>(),
                "createdAt": iso(r.get(4)?),
            }))
        })?;
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
            .one("SELECT count(*) FROM fd_messages m WHERE m.conversation_id = ?1 AND m.sender <> ?2
                 AND NOT EXISTS (SELECT 1 FROM fd_reads r WHERE r.message_id = m.id AND r.participant = ?2)", args![id, p])?;
        out["unreadCount"] = json!(unread);
    }
    Ok(Some(out))
}

impl Store {
    /// Conversation summaries, most recently active first: those of `participant` (with their
    /// unread counts), or the latest 500.
    pub async fn conversations(
        &self,
        participant: Option<String>,
    ) -> Result<Vec<Value>, StoreError> {
        self.read(move |c, _, _| {
            let ids: Vec<String> = match &participant {
                Some(p) => c
                    .all("SELECT c.id FROM fd_conversations c JOIN fd_participants p ON p.conversation_id = c.id
                         WHERE p.participant = ?1 ORDER BY c.updated_at DESC, c.seq DESC", args![p])?,
                None => c
                    .all("SELECT id FROM fd_conversations ORDER BY updated_at DESC, seq DESC LIMIT 500", args![])?,
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

    /// Every bot ever set in a conversation: `{"bot","enabled","updatedAt"}`.
    pub async fn conversation_bots(&self, conv: &str) -> Result<Vec<Value>, StoreError> {
        let conv = conv.to_string();
        self.read(move |c, _, _| {
            let rows: Vec<Value> = c
                .all_map("SELECT bot, enabled, updated_at FROM fd_bots WHERE conversation_id = ?1 ORDER BY bot", args![conv], |r| {
                    Ok(json!({"bot": r.get::<String>(0)?, "enabled": r.get::<i64>(1)? == 1, "updatedAt": iso(r.get(2)?)}))
                })?;
            Ok(rows)
        })
        .await
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
                    .opt("SELECT seq FROM fd_messages WHERE id = ?1 AND conversation_id = ?2", args![id, conv])?
                {
                    Some(s) => s,
                    None => return Ok(None),
                },
                None => i64::MAX,
            };
            let mut rows: Vec<Value> = c
                .all_map("SELECT id, sender, recipient, type, content, attachments, is_automated, created_at FROM fd_messages
                     WHERE conversation_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3", args![conv, before_seq, limit + 1], |r| {
                    let id: String = r.get(0)?;
                    let m = NewConvMessage {
                        conversation: conv.clone(),
                        from: r.get(1)?,
                        to: r.get(2)?,
                        kind: r.get(3)?,
                        content: r.get(4)?,
                        attachments: serde_json::from_str(&r.get::<String>(5)?).unwrap_or(json!([])),
                    };
                    Ok(message_json(&m, r.get::<i64>(6)? == 1, &id, r.get(7)?, json!([])))
                })?;
            let has_more = rows.len() as i64 > limit;
            rows.truncate(limit.max(0) as usize);
            rows.reverse();
            for m in &mut rows {
                let read_by: Vec<Value> = c.all_map(
                    "SELECT participant, read_at FROM fd_reads WHERE message_id = ?1 ORDER BY read_at",
                    args![m["id"].as_str()],
                    |r| Ok(json!({"participant": r.get::<String>(0)?, "readAt": iso(r.get(1)?)})),
                )?;
                m["readBy"] = Value::Array(read_by);
            }
            Ok(Some(MessagePage { messages: rows, has_more }))
        })
        .await
    }

    /// The delivery logs of a conversation, oldest first.
    pub async fn delivery_logs(&self, conv: &str) -> Result<Vec<Value>, StoreError> {
        let conv = conv.to_string();
        self.read(move |c, _, _| {
            let rows: Vec<Value> = c
                .all_map("SELECT id, message_id, bot, status, detail, reply_id, created_at, updated_at FROM fd_delivery
                     WHERE conversation_id = ?1 ORDER BY seq", args![conv], |r| {
                    Ok(json!({
                        "id": r.get::<String>(0)?,
                        "messageId": r.get::<String>(1)?,
                        "bot": r.get::<String>(2)?,
                        "status": r.get::<String>(3)?,
                        "detail": r.get::<Option<String>>(4)?,
                        "replyId": r.get::<Option<String>>(5)?,
                        "createdAt": iso(r.get(6)?),
                        "updatedAt": iso(r.get(7)?),
                    }))
                })?;
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
            let map = |r: &Row| ConvEvent::from_row(r);
            let rows: Vec<ConvEvent> = match &conv {
                Some(conv) => c
                    .all_map("SELECT seq, id, type, conversation_id, payload, created_at FROM fd_events WHERE conversation_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3", args![conv, after, limit], map)?,
                None => c
                    .all_map("SELECT seq, id, type, conversation_id, payload, created_at FROM fd_events WHERE seq > ?1 ORDER BY seq LIMIT ?2", args![after, limit], map)?,
            };
            Ok(rows)
        })
        .await
    }

    /// The seq of a feed event id (for `Last-Event-ID`), or of the event of a message id.
    pub async fn conversation_event_seq(&self, id: &str) -> Result<Option<i64>, StoreError> {
        let id = id.to_string();
        self.read(move |c, _, _| {
            let by_message = c.dialect().json_text("payload", "id");
            c.opt(
                &format!(
                    "SELECT seq FROM fd_events WHERE id = ?1
                     UNION ALL SELECT seq FROM fd_events WHERE type = 'message.created' AND {by_message} = ?1
                     LIMIT 1"
                ),
                args![id],
            )
        })
        .await
    }
}
