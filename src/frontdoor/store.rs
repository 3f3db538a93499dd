//! The front doors' reads and writes on the chat store: chats found by key, user messages posted
//! through the dispatch API's own service (so batching, events and unread counts stay right), and
//! a few reads of the chat and message tables.

use actix_web::http::StatusCode;
use rusqlite::{params, OptionalExtension};
use serde_json::Value;

use super::core::AskError;
use super::http::FdError;
use crate::settings::DispatchMode;
use crate::state::AppState;

/// A store failure as a front-door 500 (the cause is logged, not sent).
pub fn internal(e: crate::api::ApiError) -> FdError {
    tracing::error!(error = %e, "front door store error");
    FdError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
        "Unexpected server error.",
    )
}

fn ask_internal(e: impl std::fmt::Display) -> AskError {
    tracing::error!(error = %e, "front door store error");
    AskError::Internal("Unexpected server error.".into())
}

/// Escapes a caller-chosen id for use inside a chat key (`:` separates key parts).
pub fn key_part(s: &str) -> String {
    s.replace('%', "%25").replace(':', "%3A")
}

/// Finds or creates the chat with this external key (agent = `agent`). A new chat dispatches
/// `sequential`: each message is claimable at once, one at a time per chat.
pub async fn chat_for_key(
    state: &AppState,
    key: &str,
    agent: &str,
    title: &str,
) -> Result<String, AskError> {
    // The common case (the chat exists) stays a read, off the writer.
    let k = key.to_string();
    let found = state
        .store
        .read(move |c, _, _| {
            Ok(
                c.prepare_cached("SELECT id FROM chats WHERE external_key = ?1")?
                    .query_row(params![k], |r| r.get::<_, String>(0))
                    .optional()?,
            )
        })
        .await
        .map_err(ask_internal)?;
    match found {
        Some(id) => Ok(id),
        None => state
            .store
            .chat_for_key(key, agent, title, Some(DispatchMode::Sequential))
            .await
            .map_err(ask_internal),
    }
}

/// The external key of a chat (`None` for an unknown chat or one without a key).
pub async fn chat_key(state: &AppState, chat_id: &str) -> Result<Option<String>, AskError> {
    let id = chat_id.to_string();
    state
        .store
        .read(move |c, _, _| {
            Ok(
                c.prepare_cached("SELECT external_key FROM chats WHERE id = ?1")?
                    .query_row(params![id], |r| r.get::<_, Option<String>>(0))
                    .optional()?
                    .flatten(),
            )
        })
        .await
        .map_err(ask_internal)
}

/// Posts the user's message (role `user`, sender `user:primary`) through the dispatch API's
/// service: it is stored, announced, and queued for the chat's agent.
pub async fn post_user_message(
    state: &AppState,
    chat_id: &str,
    text: &str,
    trace: Option<Value>,
) -> Result<(), AskError> {
    state
        .store
        .post_user_message(chat_id, text, trace)
        .await
        .map(|_| ())
        .map_err(ask_internal)
}

/// The trace of a message (`Value::Null` when it has none).
pub async fn message_trace(state: &AppState, message_id: &str) -> Result<Value, AskError> {
    let id = message_id.to_string();
    state
        .store
        .read(move |c, _, _| {
            let t: Option<Option<String>> = c
                .prepare_cached("SELECT trace FROM messages WHERE id = ?1")?
                .query_row(params![id], |r| r.get(0))
                .optional()?;
            Ok(t.flatten()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null))
        })
        .await
        .map_err(ask_internal)
}

/// The final text of a message.
pub async fn message_text(state: &AppState, message_id: &str) -> Result<Option<String>, AskError> {
    let id = message_id.to_string();
    state
        .store
        .read(move |c, _, _| {
            let t: Option<(Option<String>, Option<String>)> = c
                .prepare_cached(
                    "SELECT content_final, content_partial FROM messages WHERE id = ?1",
                )?
                .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(t.map(|(f, p)| f.or(p).unwrap_or_default()))
        })
        .await
        .map_err(ask_internal)
}

/// One message of a chat's history.
pub struct HistoryItem {
    pub id: String,
    pub role: String,
    pub content: String,
    pub created_at: String,
}

/// The last `limit` messages of a chat, oldest first.
pub async fn history(
    state: &AppState,
    chat_id: &str,
    limit: usize,
) -> Result<Vec<HistoryItem>, AskError> {
    let id = chat_id.to_string();
    state
        .store
        .read(move |c, _, _| {
            let mut rows: Vec<HistoryItem> = c
                .prepare_cached(
                    "SELECT id, role, coalesce(content_final, content_partial, ''), created_at FROM messages
                     WHERE chat_id = ?1 AND stream_state <> 'cancelled' ORDER BY seq DESC LIMIT ?2",
                )?
                .query_map(params![id, limit as i64], |r| {
                    Ok(HistoryItem {
                        id: r.get(0)?,
                        role: r.get(1)?,
                        content: r.get(2)?,
                        created_at: crate::api::iso(r.get(3)?),
                    })
                })?
                .collect::<Result<_, _>>()?;
            rows.reverse();
            Ok(rows)
        })
        .await
        .map_err(ask_internal)
}

/// A conversation of the chat API (a chat with a front-door key).
pub struct Conversation {
    pub id: String,
    pub title: String,
    pub created_at: String,
    pub updated_at: String,
    pub unread_count: i64,
    pub last_message_preview: Option<String>,
}

const CONVERSATION_COLUMNS: &str =
    "id, title, created_at, updated_at, unread_count, last_message_preview";

fn conversation_row(r: &rusqlite::Row) -> rusqlite::Result<Conversation> {
    Ok(Conversation {
        id: r.get(0)?,
        title: r.get(1)?,
        created_at: crate::api::iso(r.get(2)?),
        updated_at: crate::api::iso(r.get(3)?),
        unread_count: r.get(4)?,
        last_message_preview: r.get(5)?,
    })
}

/// Every chat whose key starts with `prefix`, newest activity first.
pub async fn conversations(state: &AppState, prefix: &str) -> Result<Vec<Conversation>, AskError> {
    let prefix = prefix.to_string();
    state
        .store
        .read(move |c, _, _| {
            // A range on the unique key index instead of LIKE (no escaping, index-friendly).
            let upper = format!("{prefix}\u{10FFFF}");
            let rows = c
                .prepare_cached(&format!(
                    "SELECT {CONVERSATION_COLUMNS} FROM chats WHERE external_key >= ?1 AND external_key < ?2
                     ORDER BY last_message_at DESC, seq DESC"
                ))?
                .query_map(params![prefix, upper], conversation_row)?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
        .map_err(ask_internal)
}

/// One chat as a conversation.
pub async fn conversation(
    state: &AppState,
    chat_id: &str,
) -> Result<Option<Conversation>, AskError> {
    let id = chat_id.to_string();
    state
        .store
        .read(move |c, _, _| {
            Ok(c.prepare_cached(&format!(
                "SELECT {CONVERSATION_COLUMNS} FROM chats WHERE id = ?1"
            ))?
            .query_row(params![id], conversation_row)
            .optional()?)
        })
        .await
        .map_err(ask_internal)
}

/// One unread agent message.
pub struct Unread {
    pub id: String,
    pub chat_id: String,
    pub content: String,
    pub created_at: String,
}

/// Agent messages newer than their chat's last read, across chats whose key starts with `prefix`.
pub async fn unread_agent_messages(
    state: &AppState,
    prefix: &str,
) -> Result<Vec<Unread>, AskError> {
    let prefix = prefix.to_string();
    state
        .store
        .read(move |c, _, _| {
            let upper = format!("{prefix}\u{10FFFF}");
            let rows = c
                .prepare_cached(
                    "SELECT m.id, m.chat_id, coalesce(m.content_final, ''), m.created_at FROM chats ch
                     JOIN messages m ON m.chat_id = ch.id
                     WHERE ch.external_key >= ?1 AND ch.external_key < ?2 AND m.role = 'agent'
                       AND m.stream_state = 'complete' AND m.created_at > coalesce(ch.last_read_at, -1)
                     ORDER BY m.seq",
                )?
                .query_map(params![prefix, upper], |r| {
                    Ok(Unread {
                        id: r.get(0)?,
                        chat_id: r.get(1)?,
                        content: r.get(2)?,
                        created_at: crate::api::iso(r.get(3)?),
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
        .map_err(ask_internal)
}

/// Renames a chat (title source `manual`, as a `PATCH /chats/:id` would).
pub async fn rename(state: &AppState, chat_id: &str, title: &str) -> Result<(), AskError> {
    let mut patch = serde_json::Map::new();
    patch.insert("title".into(), Value::String(title.to_string()));
    state
        .store
        .patch_chat(chat_id, patch)
        .await
        .map(|_| ())
        .map_err(ask_internal)
}

/// Marks a chat read; returns how many unread messages it had.
pub async fn mark_read(state: &AppState, chat_id: &str) -> Result<i64, AskError> {
    let chat = state.store.get_chat(chat_id).await.map_err(ask_internal)?;
    let unread = chat
        .get("unread_count")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    state
        .store
        .set_read(chat_id, true)
        .await
        .map_err(ask_internal)?;
    Ok(unread)
}

/// Deletes a chat with its messages, requests and dispatch work, in one transaction; returns how
/// many messages went. Its past events stay in the event log.
pub async fn delete_chat(state: &AppState, chat_id: &str) -> Result<usize, AskError> {
    let id = chat_id.to_string();
    state
        .store
        .write(move |w| {
            let messages =
                w.c.prepare_cached("DELETE FROM messages WHERE chat_id = ?1")?
                    .execute(params![id])?;
            for table in [
                "requests",
                "dispatch_inputs",
                "dispatch_batches",
                "dispatch_chat_state",
                "chat_agents",
            ] {
                w.c.execute(
                    &format!("DELETE FROM {table} WHERE chat_id = ?1"),
                    params![id],
                )?;
            }
            w.c.prepare_cached("DELETE FROM chats WHERE id = ?1")?
                .execute(params![id])?;
            Ok(messages)
        })
        .await
        .map_err(ask_internal)
}
