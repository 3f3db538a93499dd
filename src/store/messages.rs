//! Messages: create (role and sender rules), list newest first, streaming (chunks, complete,
//! cancel), typing indicators, and the idle-stream sweeper.

use crate::store::sql::{args, Db, Row};

use serde_json::{json, Value};

use super::chats::{cut, ensure_chat, is_agent, PREVIEW_MAX_CHARS};
use super::cursor::{decode as decode_cursor, encode as encode_cursor};
use super::db::iso;
use super::error::StoreError;
use super::{Store, W};
use crate::ids::new_id;

const MSG_COLS: &str = "id, chat_id, role, sender_id, created_at, updated_at, content_final, \
    content_partial, stream_state, model_id, trace";

/// Input of [`Store::create_message`].
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// `user` | `agent` | `system` | `tool`.
    pub role: String,
    /// `user:primary` / an agent id from the catalog / `system` / `tool`.
    pub sender_id: String,
    /// Required (non-blank after trimming) unless streaming or `trace.mediaIds` is set; must be
    /// `None` when streaming.
    pub content: Option<String>,
    /// Start a streaming message (role `agent` only).
    pub streaming: bool,
    pub trace: Option<Value>,
}

fn message_from_row(r: &Row) -> Result<Value, StoreError> {
    let trace: Option<String> = r.get(10)?;
    Ok(json!({
        "id": r.get::<String>(0)?,
        "chat_id": r.get::<String>(1)?,
        "role": r.get::<String>(2)?,
        "sender_id": r.get::<String>(3)?,
        "created_at": iso(r.get(4)?),
        "updated_at": iso(r.get(5)?),
        "content_final": r.get::<Option<String>>(6)?,
        "content_partial": r.get::<Option<String>>(7)?,
        "stream_state": r.get::<String>(8)?,
        "model_id": r.get::<Option<String>>(9)?,
        "trace": trace.and_then(|t| serde_json::from_str::<Value>(&t).ok()).unwrap_or(Value::Null),
    }))
}

pub(super) fn load_message(c: &dyn Db, id: &str) -> Result<Value, StoreError> {
    c.opt_map(
        &format!("SELECT {MSG_COLS} FROM messages WHERE id = ?1"),
        args![id],
        message_from_row,
    )?
    .ok_or_else(|| StoreError::not_found("Message not found.", Some(json!({ "messageId": id }))))
}

/// Media ids referenced by a trace (`mediaIds` plus legacy `mediaId`).
pub(crate) fn trace_media_ids(trace: Option<&Value>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(t) = trace {
        if let Some(ids) = t.get("mediaIds").and_then(Value::as_array) {
            out.extend(ids.iter().filter_map(|v| v.as_str().map(str::to_string)));
        }
        if let Some(id) = t.get("mediaId").and_then(Value::as_str) {
            if !out.iter().any(|o| o == id) {
                out.push(id.to_string());
            }
        }
    }
    out
}

impl W<'_> {
    /// Inserts a message, updates the chat's preview and unread count, emits `message.created`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert_message(
        &mut self,
        chat_id: &str,
        role: &str,
        sender_id: &str,
        content_final: Option<String>,
        content_partial: Option<String>,
        stream_state: &str,
        trace: Option<Value>,
        event_trace: bool,
    ) -> Result<Value, StoreError> {
        let model: Option<String> = self
            .c
            .opt("SELECT model_id FROM chats WHERE id = ?1", args![chat_id])?;
        let Some(model) = model else {
            return Err(StoreError::chat_not_found(chat_id));
        };
        let id = new_id();
        self.c
            .execute("INSERT INTO messages (id, chat_id, role, sender_id, created_at, updated_at, content_final, \
                 content_partial, stream_state, model_id, trace) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10)", args![
                id,
                chat_id,
                role,
                sender_id,
                self.now,
                content_final,
                content_partial,
                stream_state,
                model,
                trace.as_ref().map(Value::to_string)
            ])?;
        // The resource as `load_message` would read it back, from what was just written.
        let message = json!({
            "id": id, "chat_id": chat_id, "role": role, "sender_id": sender_id,
            "created_at": iso(self.now), "updated_at": iso(self.now),
            "content_final": content_final, "content_partial": content_partial,
            "stream_state": stream_state, "model_id": model,
            "trace": trace.clone().unwrap_or(Value::Null),
        });
        let preview = content_final
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| cut(s, PREVIEW_MAX_CHARS));
        self.c.execute(
            "UPDATE chats SET last_message_at = ?2, updated_at = ?2, last_message_role = ?3, \
                 last_message_preview = COALESCE(?4, last_message_preview), \
                 unread_count = unread_count + ?5 WHERE id = ?1",
            args![chat_id, self.now, role, preview, (role != "user") as i64],
        )?;
        let mut payload = json!({
            "chatId": chat_id, "messageId": id, "role": role, "senderId": sender_id,
            "streamState": stream_state, "contentFinal": content_final, "createdAt": iso(self.now),
        });
        if event_trace {
            payload["trace"] = trace.unwrap_or(Value::Null);
        }
        self.emit("message.created", payload)?;
        if stream_state == "streaming" {
            self.wake_by(
                self.now
                    + self
                        .settings
                        .stream_timeout_secs
                        .saturating_mul(1000)
                        .min(super::dispatch::MAX_DURATION_MS) as i64,
            );
        }
        Ok(message)
    }

    fn create_message_tx(&mut self, chat_id: &str, m: NewMessage) -> Result<Value, StoreError> {
        ensure_chat(self.c, chat_id)?;
        let sender_ok = match m.role.as_str() {
            "user" => m.sender_id == "user:primary",
            "agent" => is_agent(&self.catalog, &m.sender_id),
            "system" => m.sender_id == "system",
            "tool" => m.sender_id == "tool",
            _ => {
                return Err(StoreError::field(
                    "role",
                    "role must be one of user, agent, system, tool.",
                ))
            }
        };
        if !sender_ok {
            let rule = match m.role.as_str() {
                "user" => "senderId must be user:primary for role user.".to_string(),
                "agent" => format!(
                    "senderId must be a configured agent id for role agent (got {}).",
                    m.sender_id
                ),
                other => format!("senderId must be {other} for role {other}."),
            };
            return Err(StoreError::field("senderId", rule));
        }
        if m.streaming {
            if m.role != "agent" {
                return Err(StoreError::field(
                    "streaming",
                    "streaming=true is only allowed for role agent.",
                ));
            }
            if m.content.is_some() {
                return Err(StoreError::field(
                    "content",
                    "content is not allowed when streaming=true.",
                ));
            }
            let msg = self.insert_message(
                chat_id,
                "agent",
                &m.sender_id,
                None,
                None,
                "streaming",
                m.trace,
                true,
            )?;
            // Its chunks go to memory from the first one on (forgotten if this rolls back).
            if self.tails.open(&msg, None, self.now, || {}).is_some() {
                let (tails, id) = (
                    self.tails.clone(),
                    msg["id"].as_str().unwrap_or("").to_string(),
                );
                self.after(move |committed| {
                    if !committed {
                        tails.forget(&id);
                    }
                });
            }
            return Ok(msg);
        }
        let content = m.content.as_deref().unwrap_or("").trim().to_string();
        let media = trace_media_ids(m.trace.as_ref());
        if content.is_empty() && media.is_empty() {
            return Err(StoreError::field(
                "content",
                "content is required unless trace.mediaIds is set.",
            ));
        }
        let trace_kind = m
            .trace
            .as_ref()
            .and_then(|t| t.get("kind"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let msg = self.insert_message(
            chat_id,
            &m.role,
            &m.sender_id,
            Some(content.clone()),
            None,
            "complete",
            m.trace,
            true,
        )?;
        if m.role == "user" {
            let mid = msg["id"].as_str().unwrap_or_default().to_string();
            self.add_input(
                chat_id,
                "user_message",
                &mid,
                "user:primary",
                &content,
                trace_kind,
                Some(media),
            )?;
        }
        Ok(msg)
    }
}

impl Store {
    /// Creates a message in a chat with the reference's role/sender rules; a `user` message
    /// becomes a dispatch input. Returns the message resource (snake_case).
    pub async fn create_message(&self, chat_id: &str, m: NewMessage) -> Result<Value, StoreError> {
        let chat_id = chat_id.to_string();
        self.write(move |w| w.create_message_tx(&chat_id, m)).await
    }

    /// Posts a user message (sender `user:primary`) and so creates its dispatch input.
    pub async fn post_user_message(
        &self,
        chat_id: &str,
        content: &str,
        trace: Option<Value>,
    ) -> Result<Value, StoreError> {
        let m = NewMessage {
            role: "user".into(),
            sender_id: "user:primary".into(),
            content: Some(content.to_string()),
            streaming: false,
            trace,
        };
        self.create_message(chat_id, m).await
    }

    /// One message by id, or 404.
    pub async fn get_message(&self, id: &str) -> Result<Value, StoreError> {
        let id = id.to_string();
        let tails = self.inner.tails.clone();
        self.read(move |c, _, _| {
            let mut m = load_message(c, &id)?;
            tails.overlay(&mut m);
            Ok(m)
        })
        .await
    }

    /// A chat's messages newest first: `{data, cursor{next, hasMore}}`; the cursor walks older.
    /// Cancelled messages with no content are hidden.
    pub async fn list_messages(
        &self,
        chat_id: &str,
        limit: i64,
        cursor: Option<String>,
    ) -> Result<Value, StoreError> {
        let before = match cursor {
            Some(c) => decode_cursor(&c)?["s"]
                .as_i64()
                .ok_or_else(|| StoreError::field("cursor", "Invalid cursor."))?,
            None => i64::MAX,
        };
        let chat_id = chat_id.to_string();
        let tails = self.inner.tails.clone();
        self.read(move |c, _, _| {
            ensure_chat(c, &chat_id)?;
            let mut rows = c.all_map(
                &format!(
                    "SELECT {MSG_COLS}, seq FROM messages WHERE chat_id = ?1 AND seq < ?2 \
                     AND NOT (stream_state = 'cancelled' AND COALESCE(content_partial, '') = '' AND COALESCE(content_final, '') = '') \
                     ORDER BY seq DESC LIMIT ?3"
                ),
                args![chat_id, before, limit + 1],
                |r| Ok((message_from_row(r)?, r.get::<i64>(11)?)),
            )?;
            let has_more = rows.len() as i64 > limit;
            rows.truncate(limit as usize);
            let next = match (has_more, rows.last()) {
                (true, Some((_, seq))) => Some(encode_cursor(&json!({ "s": seq }))),
                _ => None,
            };
            let data: Vec<Value> = rows
                .into_iter()
                .map(|(mut m, _)| {
                    tails.overlay(&mut m);
                    m
                })
                .collect();
            Ok(json!({ "data": data, "cursor": { "next": next, "hasMore": has_more } }))
        })
        .await
    }

    /// Agent typing: ephemeral `chat.typing {chatId, agentId}` (nothing is written).
    pub async fn typing(&self, chat_id: &str, agent_id: &str) -> Result<(), StoreError> {
        let id = chat_id.to_string();
        self.read(move |c, _, _| ensure_chat(c, &id)).await?;
        self.publish_ephemeral(
            "chat.typing",
            json!({ "chatId": chat_id, "agentId": agent_id }),
        );
        Ok(())
    }
}
