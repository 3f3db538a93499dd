//! The conversations front door: conversations between participants, messages with read receipts,
//! per-conversation SSE, a global event feed, bots (agents) switched on per conversation, and
//! delivery logs of every bot invocation.
//!
//! A conversation is stored in the `fd_*` tables. Each enabled bot gets a hidden chat per
//! conversation (`fd:conv:<conversation>:<bot>`) in the dispatch API; a participant's text message
//! goes into the chat of every enabled bot, and [`relay`] copies the bots' answers back into the
//! conversation whenever they come, even after a restart of the bot's worker.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::core;
use super::http::{
    check_key, object, optional_text, required_text, sse, ConversationsEnvelope, Error, FdError,
    MAX_TEXT,
};
use super::store as fstore;
use crate::state::AppState;

/// What a handler of this front door answers; errors come out in its envelope.
type Reply = Result<HttpResponse, Error<ConversationsEnvelope>>;
const INVALID: &str = "INVALID_REQUEST";
const TYPES: &[&str] = &["text", "image", "file", "ping"];

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
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "seq": self.seq,
            "type": self.kind,
            "conversationId": self.conversation_id,
            "payload": self.payload,
            "createdAt": crate::api::iso(self.created_at),
        })
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/conversations", web::post().to(create))
        .route("/conversations", web::get().to(list))
        .route("/conversations/{id}", web::get().to(get_one))
        .route("/conversations/{id}/bots", web::post().to(set_bot))
        .route("/conversations/{id}/bots", web::get().to(get_bots))
        .route("/messages/{id}", web::post().to(post_message))
        .route("/messages/{id}", web::get().to(get_messages))
        .route("/messages/{id}/read", web::post().to(mark_read))
        .route("/messages/{id}/deliverylogs", web::get().to(delivery_logs))
        .route("/stream/{id}", web::get().to(stream))
        .route("/events", web::get().to(events));
}

fn not_found(id: &str) -> FdError {
    FdError::new(
        StatusCode::NOT_FOUND,
        "CONVERSATION_NOT_FOUND",
        format!("Conversation '{id}' not found"),
    )
    .details(json!({"conversationId": id}))
}

fn str_list(v: Option<&Value>, field: &str) -> Result<Vec<String>, FdError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => {
            let mut out: Vec<String> = Vec::new();
            for x in a {
                match x.as_str() {
                    Some(s) if !s.trim().is_empty() && s.len() <= 200 => {
                        if !out.iter().any(|o| o == s) {
                            out.push(s.to_string());
                        }
                    }
                    _ => {
                        return Err(FdError::invalid(
                            INVALID,
                            field,
                            "must be an array of non-empty strings (at most 200 characters each)",
                        ))
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(FdError::invalid(
            INVALID,
            field,
            "must be an array of strings",
        )),
    }
}

/// Records a feed event inside the caller's transaction; published after commit by the caller.
fn record(
    c: &rusqlite::Connection,
    now: i64,
    kind: &str,
    conv: &str,
    payload: Value,
) -> Result<ConvEvent, crate::api::ApiError> {
    let id = nanoid::nanoid!();
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

fn publish(state: &AppState, events: Vec<ConvEvent>) {
    for e in events {
        let _ = state.frontdoor.conv_events.send(Arc::new(e));
    }
}

async fn create(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> Reply {
    check_key(&req, &state, false)?;
    let obj = object(&body, INVALID)?;
    let title = required_text(&obj, "title", INVALID, 200)?
        .trim()
        .to_string();
    let participants = str_list(obj.get("participants"), "participants")?;
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(m)) => Value::Object(m.clone()),
        Some(_) => {
            return Err(Error::from(FdError::invalid(
                INVALID,
                "metadata",
                "must be an object",
            )))
        }
    };
    let (conv, ev) = state
        .store
        .write(move |w| {
            let id = nanoid::nanoid!();
            w.c.prepare_cached("INSERT INTO fd_conversations (id, title, metadata, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)")?
                .execute(params![id, title, metadata.to_string(), w.now])?;
            for p in &participants {
                w.c.prepare_cached("INSERT INTO fd_participants (conversation_id, participant) VALUES (?1, ?2)")?
                    .execute(params![id, p])?;
            }
            let ev = record(w.c, w.now, "conversation.created", &id, json!({"title": title, "participants": participants}))?;
            Ok((json!({"id": id, "title": title, "createdAt": crate::api::iso(w.now)}), ev))
        })
        .await
        .map_err(fstore::internal)?;
    publish(&state, vec![ev]);
    Ok(HttpResponse::Created().json(conv))
}

/// A conversation summary; `participant` adds its unread count.
fn summary(
    c: &rusqlite::Connection,
    id: &str,
    participant: Option<&str>,
) -> Result<Option<Value>, crate::api::ApiError> {
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
    let bots: Vec<String> = c
        .prepare_cached(
            "SELECT bot FROM fd_bots WHERE conversation_id = ?1 AND enabled = 1 ORDER BY bot",
        )?
        .query_map(params![id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let last = c
        .prepare_cached("SELECT id, sender, type, content, created_at FROM fd_messages WHERE conversation_id = ?1 ORDER BY seq DESC LIMIT 1")?
        .query_row(params![id], |r| {
            let content: String = r.get(3)?;
            Ok(json!({
                "id": r.get::<_, String>(0)?,
                "from": r.get::<_, String>(1)?,
                "type": r.get::<_, String>(2)?,
                "preview": content.chars().take(180).collect::<String>(),
                "createdAt": crate::api::iso(r.get(4)?),
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
        "createdAt": crate::api::iso(created),
        "updatedAt": crate::api::iso(updated),
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

async fn list(req: HttpRequest, state: web::Data<AppState>) -> Reply {
    check_key(&req, &state, false)?;
    let participant = form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "participant")
        .map(|(_, v)| v.into_owned());
    let list = state
        .store
        .read(move |c, _, _| {
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
        .map_err(fstore::internal)?;
    Ok(HttpResponse::Ok().json(list))
}

async fn get_one(req: HttpRequest, state: web::Data<AppState>, path: web::Path<String>) -> Reply {
    check_key(&req, &state, false)?;
    let id = path.into_inner();
    let id2 = id.clone();
    let s = state
        .store
        .read(move |c, _, _| summary(c, &id2, None))
        .await
        .map_err(fstore::internal)?;
    let s = s.ok_or_else(|| not_found(&id))?;
    Ok(HttpResponse::Ok().json(s))
}

async fn exists(state: &AppState, id: &str) -> Result<(), FdError> {
    let id2 = id.to_string();
    let found = state
        .store
        .read(move |c, _, _| {
            Ok(
                c.prepare_cached("SELECT 1 FROM fd_conversations WHERE id = ?1")?
                    .query_row(params![id2], |_| Ok(()))
                    .optional()?
                    .is_some(),
            )
        })
        .await
        .map_err(fstore::internal)?;
    if found {
        Ok(())
    } else {
        Err(not_found(id))
    }
}

async fn set_bot(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Reply {
    check_key(&req, &state, false)?;
    let conv = path.into_inner();
    exists(&state, &conv).await?;
    let obj = object(&body, INVALID)?;
    let bot = required_text(&obj, "bot", INVALID, 200)?;
    let enabled = match obj.get("enabled") {
        Some(Value::Bool(b)) => *b,
        _ => {
            return Err(Error::from(FdError::invalid(
                INVALID,
                "enabled",
                "Field 'enabled' must be true or false",
            )))
        }
    };
    core::graph(&state, &bot)?;
    let conv2 = conv.clone();
    let (bots, ev) = state
        .store
        .write(move |w| {
            w.c.prepare_cached(
                "INSERT INTO fd_bots (conversation_id, bot, enabled, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (conversation_id, bot) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
            )?
            .execute(params![conv2, bot, enabled as i64, w.now])?;
            let bots: Vec<String> = w
                .c
                .prepare_cached("SELECT bot FROM fd_bots WHERE conversation_id = ?1 AND enabled = 1 ORDER BY bot")?
                .query_map(params![conv2], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let ev = record(w.c, w.now, "bot.updated", &conv2, json!({"bot": bot, "enabled": enabled}))?;
            Ok((bots, ev))
        })
        .await
        .map_err(fstore::internal)?;
    let bot = ev.payload["bot"].clone();
    publish(&state, vec![ev]);
    Ok(HttpResponse::Ok()
        .json(json!({"conversationId": conv, "bot": bot, "enabled": enabled, "bots": bots})))
}

async fn get_bots(req: HttpRequest, state: web::Data<AppState>, path: web::Path<String>) -> Reply {
    check_key(&req, &state, false)?;
    let conv = path.into_inner();
    exists(&state, &conv).await?;
    let conv2 = conv.clone();
    let bots = state
        .store
        .read(move |c, _, _| {
            let rows: Vec<Value> = c
                .prepare_cached("SELECT bot, enabled, updated_at FROM fd_bots WHERE conversation_id = ?1 ORDER BY bot")?
                .query_map(params![conv2], |r| {
                    Ok(json!({"bot": r.get::<_, String>(0)?, "enabled": r.get::<_, i64>(1)? == 1, "updatedAt": crate::api::iso(r.get(2)?)}))
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
        .map_err(fstore::internal)?;
    Ok(HttpResponse::Ok().json(json!({"conversationId": conv, "bots": bots})))
}

/// One conversation message as stored.
struct ConvMessage<'a> {
    conversation: &'a str,
    from: &'a str,
    to: Option<&'a str>,
    kind: &'a str,
    content: &'a str,
    attachments: &'a Value,
    automated: bool,
}

impl ConvMessage<'_> {
    fn json(&self, id: &str, created: i64, read_by: Value) -> Value {
        json!({
            "id": id,
            "messageId": id,
            "conversationId": self.conversation,
            "from": self.from,
            "to": self.to,
            "type": self.kind,
            "content": self.content,
            "attachments": self.attachments,
            "isAutomated": self.automated,
            "createdAt": crate::api::iso(created),
            "readBy": read_by,
        })
    }

    /// Stores the message and its feed event; returns the message and the event to publish.
    fn insert(
        &self,
        c: &rusqlite::Connection,
        now: i64,
    ) -> Result<(Value, ConvEvent), crate::api::ApiError> {
        let id = nanoid::nanoid!();
        c.prepare_cached(
            "INSERT INTO fd_messages (id, conversation_id, sender, recipient, type, content, attachments, is_automated, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            id,
            self.conversation,
            self.from,
            self.to,
            self.kind,
            self.content,
            self.attachments.to_string(),
            self.automated as i64,
            now
        ])?;
        c.prepare_cached("UPDATE fd_conversations SET updated_at = ?2 WHERE id = ?1")?
            .execute(params![self.conversation, now])?;
        let msg = self.json(&id, now, json!([]));
        let ev = record(c, now, "message.created", self.conversation, msg.clone())?;
        Ok((msg, ev))
    }
}

async fn post_message(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Reply {
    check_key(&req, &state, false)?;
    let conv = path.into_inner();
    exists(&state, &conv).await?;
    let obj = object(&body, INVALID)?;
    let from = required_text(&obj, "from", INVALID, 200)?;
    let to = optional_text(&obj, "to", INVALID)?;
    let kind = optional_text(&obj, "type", INVALID)?.unwrap_or_else(|| "text".into());
    if !TYPES.contains(&kind.as_str()) {
        return Err(Error::from(FdError::invalid(
            INVALID,
            "type",
            format!("type must be one of {}", TYPES.join(", ")),
        )));
    }
    let attachments = match obj.get("attachments") {
        None | Some(Value::Null) => json!([]),
        Some(Value::Array(a)) => {
            for (i, att) in a.iter().enumerate() {
                let url_ok = att
                    .get("url")
                    .and_then(Value::as_str)
                    .is_some_and(|u| !u.trim().is_empty());
                if !url_ok {
                    return Err(Error::from(FdError::invalid(INVALID, &format!("attachments[{i}].url"), "each attachment needs a non-empty url (attachments are kept as references)")));
                }
            }
            Value::Array(a.clone())
        }
        Some(_) => {
            return Err(Error::from(FdError::invalid(
                INVALID,
                "attachments",
                "must be an array",
            )))
        }
    };
    let content = match obj.get("content") {
        Some(Value::String(s)) if s.len() <= MAX_TEXT => s.clone(),
        Some(Value::String(_)) => {
            return Err(Error::from(FdError::invalid(
                INVALID,
                "content",
                format!("must be at most {MAX_TEXT} bytes"),
            )))
        }
        None | Some(Value::Null) => String::new(),
        Some(_) => {
            return Err(Error::from(FdError::invalid(
                INVALID,
                "content",
                "must be a string",
            )))
        }
    };
    if kind == "text" && content.trim().is_empty() {
        return Err(Error::from(FdError::invalid(
            INVALID,
            "content",
            "a text message needs content",
        )));
    }
    if (kind == "image" || kind == "file")
        && content.trim().is_empty()
        && attachments.as_array().is_some_and(Vec::is_empty)
    {
        return Err(Error::from(FdError::invalid(
            INVALID,
            "attachments",
            "an image or file message needs an attachment or content",
        )));
    }
    let conv2 = conv.clone();
    let from2 = from.clone();
    let kind2 = kind.clone();
    let content2 = content.clone();
    let (msg, mut events, bots) = state
        .store
        .write(move |w| {
            let (msg, ev) = ConvMessage {
                conversation: &conv2,
                from: &from2,
                to: to.as_deref(),
                kind: &kind2,
                content: &content2,
                attachments: &attachments,
                automated: false,
            }
            .insert(w.c, w.now)?;
            let mut events = vec![ev];
            let mut bots: Vec<(String, String)> = Vec::new();
            // Bots answer participants' text (and media with a caption), never each other.
            if kind2 != "ping" && !content2.trim().is_empty() {
                let enabled: Vec<String> = w
                    .c
                    .prepare_cached("SELECT bot FROM fd_bots WHERE conversation_id = ?1 AND enabled = 1 ORDER BY bot")?
                    .query_map(params![conv2], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for bot in enabled.into_iter().filter(|b| *b != from2) {
                    let log_id = nanoid::nanoid!();
                    w.c.prepare_cached(
                        "INSERT INTO fd_delivery (id, conversation_id, message_id, bot, status, detail, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, 'queued', NULL, ?5, ?5)",
                    )?
                    .execute(params![log_id, conv2, msg["id"].as_str(), bot, w.now])?;
                    events.push(record(w.c, w.now, "delivery.updated", &conv2, json!({"id": log_id, "bot": bot, "messageId": msg["id"], "status": "queued"}))?);
                    bots.push((bot, log_id));
                }
            }
            Ok((msg, events, bots))
        })
        .await
        .map_err(fstore::internal)?;
    publish(&state, std::mem::take(&mut events));
    for (bot, log_id) in bots {
        let st = state.get_ref().clone();
        let conv = conv.clone();
        let text = content.clone();
        let from = from.clone();
        tokio::spawn(async move { invoke_bot(st, conv, bot, log_id, from, text).await });
    }
    Ok(HttpResponse::Created().json(msg))
}

/// Sends a participant's message to one bot: into the bot's hidden chat of this conversation, with
/// the bot's worker started on demand. The answer comes back through [`relay`].
async fn invoke_bot(
    state: AppState,
    conv: String,
    bot: String,
    log_id: String,
    from: String,
    text: String,
) {
    let result = async {
        let chat = fstore::chat_for_key(&state, &bot_chat_key(&conv, &bot), &bot, &format!("Conversation {conv}")).await?;
        fstore::post_user_message(&state, &chat, &text, Some(json!({"frontdoor": "conversations", "conversationId": conv, "from": from, "deliveryId": log_id}))).await?;
        core::ensure_running(&state, &bot).await
    }
    .await;
    let (status, detail) = match result {
        Ok(()) => ("sent", None),
        Err(e @ core::AskError::Unavailable { .. }) => ("unavailable", Some(e.to_string())),
        Err(e) => ("failed", Some(e.to_string())),
    };
    update_delivery(&state, &log_id, status, detail, None).await;
}

fn bot_chat_key(conv: &str, bot: &str) -> String {
    format!("fd:conv:{conv}:{bot}")
}

async fn update_delivery(
    state: &AppState,
    log_id: &str,
    status: &'static str,
    detail: Option<String>,
    reply: Option<String>,
) {
    let log_id = log_id.to_string();
    let res = state
        .store
        .write(move |w| {
            let conv: Option<(String, String, String)> = w
                .c
                .prepare_cached("SELECT conversation_id, bot, message_id FROM fd_delivery WHERE id = ?1")?
                .query_row(params![log_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let Some((conv, bot, message_id)) = conv else { return Ok(None) };
            // An answer that already arrived is not downgraded by a late status.
            w.c.prepare_cached(
                "UPDATE fd_delivery SET status = ?2, detail = ?3, reply_id = coalesce(?4, reply_id), updated_at = ?5
                 WHERE id = ?1 AND status <> 'delivered'",
            )?
            .execute(params![log_id, status, detail, reply, w.now])?;
            Ok(Some(record(w.c, w.now, "delivery.updated", &conv, json!({"id": log_id, "bot": bot, "messageId": message_id, "status": status, "detail": detail}))?))
        })
        .await;
    match res {
        Ok(Some(ev)) => publish(state, vec![ev]),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "cannot record a delivery status"),
    }
}

/// Copies bots' answers from their hidden chats into the conversations, as they complete. Runs for
/// the life of the server.
pub async fn relay(state: AppState) {
    let mut rx = state.store.subscribe();
    let mut keys: HashMap<String, Option<(String, String)>> = HashMap::new();
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "conversation relay fell behind; some bot answers may be late"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let p = &ev.payload;
        let done = match ev.kind.as_str() {
            "message.created" => {
                p.get("role").and_then(Value::as_str) == Some("agent")
                    && p.get("streamState").and_then(Value::as_str) != Some("streaming")
            }
            "message.streaming.complete" => {
                p.get("streamState").and_then(Value::as_str) == Some("complete")
            }
            _ => false,
        };
        if !done {
            continue;
        }
        let (Some(chat), Some(message_id)) = (
            p.get("chatId").and_then(Value::as_str),
            p.get("messageId").and_then(Value::as_str),
        ) else {
            continue;
        };
        if !keys.contains_key(chat) {
            let key = fstore::chat_key(&state, chat).await.ok().flatten();
            let parsed = key.and_then(|k| {
                let rest = k.strip_prefix("fd:conv:")?;
                let (conv, bot) = rest.split_once(':')?;
                Some((conv.to_string(), bot.to_string()))
            });
            keys.insert(chat.to_string(), parsed);
        }
        let Some((conv, bot)) = keys.get(chat).cloned().flatten() else {
            continue;
        };
        let text = match fstore::message_text(&state, message_id).await {
            Ok(Some(t)) => t,
            _ => continue,
        };
        let message_id = message_id.to_string();
        let res = state
            .store
            .write(move |w| {
                let exists: bool = w
                    .c
                    .prepare_cached("SELECT 1 FROM fd_conversations WHERE id = ?1")?
                    .query_row(params![conv], |_| Ok(()))
                    .optional()?
                    .is_some();
                if !exists {
                    return Ok(Vec::new());
                }
                let (msg, ev) = ConvMessage {
                    conversation: &conv,
                    from: &bot,
                    to: None,
                    kind: "text",
                    content: &text,
                    attachments: &json!([]),
                    automated: true,
                }
                .insert(w.c, w.now)?;
                let mut events = vec![ev];
                // The oldest open delivery of this bot in this conversation is the one answered.
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
                    events.push(record(w.c, w.now, "delivery.updated", &conv, json!({"id": log_id, "bot": bot, "messageId": asked, "status": "delivered", "replyId": msg["id"], "agentMessageId": message_id}))?);
                }
                Ok(events)
            })
            .await;
        match res {
            Ok(events) => publish(&state, events),
            Err(e) => tracing::error!(error = %e, "cannot copy a bot answer into its conversation"),
        }
    }
}

async fn get_messages(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Reply {
    check_key(&req, &state, false)?;
    let conv = path.into_inner();
    exists(&state, &conv).await?;
    let q: HashMap<String, String> = form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let limit = match q.get("limit") {
        None => 50,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=200).contains(&n) => n,
            _ => {
                return Err(Error::from(FdError::invalid(
                    INVALID,
                    "limit",
                    "limit must be a whole number from 1 to 200",
                )))
            }
        },
    };
    let before = q.get("before").cloned();
    let conv2 = conv.clone();
    let res = state
        .store
        .read(move |c, _, _| {
            let before_seq: i64 = match &before {
                Some(id) => match c
                    .prepare_cached("SELECT seq FROM fd_messages WHERE id = ?1 AND conversation_id = ?2")?
                    .query_row(params![id, conv2], |r| r.get(0))
                    .optional()?
                {
                    Some(s) => s,
                    None => return Ok(Err(())),
                },
                None => i64::MAX,
            };
            let mut rows: Vec<(i64, Value)> = c
                .prepare_cached(
                    "SELECT seq, id, sender, recipient, type, content, attachments, is_automated, created_at FROM fd_messages
                     WHERE conversation_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
                )?
                .query_map(params![conv2, before_seq, limit + 1], |r| {
                    let id: String = r.get(1)?;
                    let (from, to, kind, content): (String, Option<String>, String, String) =
                        (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
                    let attachments: Value = serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or(json!([]));
                    let m = ConvMessage {
                        conversation: &conv2,
                        from: &from,
                        to: to.as_deref(),
                        kind: &kind,
                        content: &content,
                        attachments: &attachments,
                        automated: r.get::<_, i64>(7)? == 1,
                    };
                    Ok((r.get::<_, i64>(0)?, m.json(&id, r.get(8)?, json!([]))))
                })?
                .collect::<Result<_, _>>()?;
            let has_more = rows.len() as i64 > limit;
            rows.truncate(limit as usize);
            rows.reverse();
            let mut reads = c.prepare_cached("SELECT participant, read_at FROM fd_reads WHERE message_id = ?1 ORDER BY read_at")?;
            let mut out = Vec::new();
            for (_, mut m) in rows {
                let read_by: Vec<Value> = reads
                    .query_map(params![m["id"].as_str()], |r| {
                        Ok(json!({"participant": r.get::<_, String>(0)?, "readAt": crate::api::iso(r.get(1)?)}))
                    })?
                    .collect::<Result<_, _>>()?;
                m["readBy"] = Value::Array(read_by);
                out.push(m);
            }
            Ok(Ok((out, has_more)))
        })
        .await
        .map_err(fstore::internal)?;
    let (messages, has_more) = res.map_err(|()| {
        FdError::invalid(INVALID, "before", "no such message in this conversation")
    })?;
    let mut resp = HttpResponse::Ok();
    resp.insert_header(("x-has-more", has_more.to_string()));
    if let (true, Some(first)) = (has_more, messages.first()) {
        resp.insert_header((
            "x-next-before",
            first["id"].as_str().unwrap_or_default().to_string(),
        ));
    }
    Ok(resp.json(messages))
}

async fn mark_read(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Reply {
    check_key(&req, &state, false)?;
    let conv = path.into_inner();
    exists(&state, &conv).await?;
    let obj = object(&body, INVALID)?;
    let participant = required_text(&obj, "participant", INVALID, 200)?;
    let ids = str_list(obj.get("messageIds"), "messageIds")?;
    let conv2 = conv.clone();
    let (marked, ev) = state
        .store
        .write(move |w| {
            let mut marked = 0;
            let all: Vec<String> = w
                .c
                .prepare_cached("SELECT id FROM fd_messages WHERE conversation_id = ?1 AND sender <> ?2")?
                .query_map(params![conv2, participant], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for id in all.iter().filter(|id| ids.is_empty() || ids.contains(id)) {
                marked += w
                    .c
                    .prepare_cached("INSERT OR IGNORE INTO fd_reads (message_id, participant, read_at) VALUES (?1, ?2, ?3)")?
                    .execute(params![id, participant, w.now])?;
            }
            let ev = record(w.c, w.now, "read.updated", &conv2, json!({"participant": participant, "marked": marked}))?;
            Ok((marked, ev))
        })
        .await
        .map_err(fstore::internal)?;
    publish(&state, vec![ev]);
    Ok(HttpResponse::Ok().json(json!({"conversationId": conv, "marked": marked})))
}

async fn delivery_logs(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Reply {
    check_key(&req, &state, false)?;
    let conv = path.into_inner();
    exists(&state, &conv).await?;
    let conv2 = conv.clone();
    let logs = state
        .store
        .read(move |c, _, _| {
            let rows: Vec<Value> = c
                .prepare_cached(
                    "SELECT id, message_id, bot, status, detail, reply_id, created_at, updated_at FROM fd_delivery
                     WHERE conversation_id = ?1 ORDER BY seq",
                )?
                .query_map(params![conv2], |r| {
                    Ok(json!({
                        "id": r.get::<_, String>(0)?,
                        "messageId": r.get::<_, String>(1)?,
                        "bot": r.get::<_, String>(2)?,
                        "status": r.get::<_, String>(3)?,
                        "detail": r.get::<_, Option<String>>(4)?,
                        "replyId": r.get::<_, Option<String>>(5)?,
                        "createdAt": crate::api::iso(r.get(6)?),
                        "updatedAt": crate::api::iso(r.get(7)?),
                    }))
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
        .map_err(fstore::internal)?;
    Ok(HttpResponse::Ok().json(json!({"conversationId": conv, "logs": logs})))
}

/// Persisted feed events after `after` (by seq), oldest first, for one conversation or all.
async fn events_after(
    state: &AppState,
    conv: Option<String>,
    after: i64,
    limit: i64,
) -> Result<Vec<ConvEvent>, FdError> {
    state
        .store
        .read(move |c, _, _| {
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
        .map_err(fstore::internal)
}

/// The seq of a feed event id (for `Last-Event-ID`), or of the event of a message id.
async fn seq_of(state: &AppState, id: &str) -> Result<Option<i64>, FdError> {
    let id = id.to_string();
    state
        .store
        .read(move |c, _, _| {
            Ok(c.prepare_cached(
                "SELECT seq FROM fd_events WHERE id = ?1
                 UNION ALL SELECT seq FROM fd_events WHERE type = 'message.created' AND json_extract(payload, '$.id') = ?1
                 LIMIT 1",
            )?
            .query_row(params![id], |r| r.get(0))
            .optional()?)
        })
        .await
        .map_err(fstore::internal)
}

fn sse_frame(e: &ConvEvent, conversation_stream: bool) -> bytes::Bytes {
    if conversation_stream && e.kind == "message.created" {
        let p = &e.payload;
        let data = json!({
            "conversationId": e.conversation_id,
            "messageId": p["id"],
            "type": p["type"],
            "from": p["from"],
            "to": p["to"],
            "content": p["content"],
            "attachments": p["attachments"],
            "isAutomated": p["isAutomated"],
            "createdAt": p["createdAt"],
        });
        bytes::Bytes::from(format!(
            "event: message\nid: {}\ndata: {data}\n\n",
            p["id"].as_str().unwrap_or_default()
        ))
    } else {
        let name = if conversation_stream {
            e.kind.replace('.', "_")
        } else {
            e.kind.clone()
        };
        bytes::Bytes::from(format!(
            "event: {name}\nid: {}\ndata: {}\n\n",
            e.id,
            e.json()
        ))
    }
}

/// A replay of persisted events after `after`, then live events, with `event: ping` heartbeats.
/// A client that does not read falls behind the live bus and is disconnected (bounded memory).
fn feed(state: AppState, conv: Option<String>, after: Option<i64>) -> HttpResponse {
    let interval = state.settings.sse_ping_interval;
    let mut live = state.frontdoor.conv_events.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    let conversation_stream = conv.is_some();
    tokio::spawn(async move {
        let _ = tx.send(bytes::Bytes::from_static(b": connected\n\n")).await;
        let mut last = after.unwrap_or(i64::MAX);
        if let Some(mut cursor) = after {
            loop {
                let page = match events_after(&state, conv.clone(), cursor, 200).await {
                    Ok(p) => p,
                    Err(_) => return,
                };
                for e in &page {
                    if tx.send(sse_frame(e, conversation_stream)).await.is_err() {
                        return;
                    }
                    cursor = e.seq;
                }
                if page.len() < 200 {
                    break;
                }
            }
            last = cursor;
        }
        let mut ping = tokio::time::interval(interval);
        ping.tick().await;
        loop {
            tokio::select! {
                ev = live.recv() => match ev {
                    Ok(e) => {
                        if conv.as_deref().is_some_and(|c| c != e.conversation_id) || (last != i64::MAX && e.seq <= last) {
                            continue;
                        }
                        if tx.send(sse_frame(&e, conversation_stream)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.try_send(bytes::Bytes::from_static(b": fell behind; reconnect with Last-Event-ID\n\n"));
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ping.tick() => {
                    let frame = format!("event: ping\ndata: {{\"ts\":\"{}\"}}\n\n", crate::api::iso(chrono::Utc::now().timestamp_millis()));
                    if tx.send(bytes::Bytes::from(frame)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    sse(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, actix_web::Error>))
}

fn last_event_id(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            form_urlencoded::parse(req.query_string().as_bytes())
                .find(|(k, _)| k == "lastEventId")
                .map(|(_, v)| v.into_owned())
        })
}

async fn stream(req: HttpRequest, state: web::Data<AppState>, path: web::Path<String>) -> Reply {
    check_key(&req, &state, true)?;
    let conv = path.into_inner();
    exists(&state, &conv).await?;
    let after = match last_event_id(&req) {
        Some(id) => Some(
            seq_of(&state, &id)
                .await?
                .ok_or_else(|| FdError::invalid(INVALID, "Last-Event-ID", "unknown event id"))?,
        ),
        None => None,
    };
    Ok(feed(state.get_ref().clone(), Some(conv), after))
}

async fn events(req: HttpRequest, state: web::Data<AppState>) -> Reply {
    check_key(&req, &state, true)?;
    let wants_sse = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    let q: HashMap<String, String> = form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let after = match (q.get("after"), last_event_id(&req)) {
        (Some(a), _) => Some(a.parse::<i64>().map_err(|_| {
            FdError::invalid(INVALID, "after", "after must be an event seq number")
        })?),
        (None, Some(id)) => Some(
            seq_of(&state, &id)
                .await?
                .ok_or_else(|| FdError::invalid(INVALID, "Last-Event-ID", "unknown event id"))?,
        ),
        (None, None) => None,
    };
    if wants_sse {
        return Ok(feed(state.get_ref().clone(), None, after));
    }
    let limit = match q.get("limit") {
        None => 100,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=500).contains(&n) => n,
            _ => {
                return Err(Error::from(FdError::invalid(
                    INVALID,
                    "limit",
                    "limit must be a whole number from 1 to 500",
                )))
            }
        },
    };
    let list = events_after(&state, None, after.unwrap_or(0), limit).await?;
    let next = list.last().map(|e| e.seq);
    let list: Vec<Value> = list.iter().map(ConvEvent::json).collect();
    Ok(HttpResponse::Ok().json(json!({"events": list, "next": next})))
}
