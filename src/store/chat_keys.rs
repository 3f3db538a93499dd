//! Chats bound to an external key (a supervisor channel, a front-door conversation), and what the
//! front doors read and do with them: find by key, list by key prefix, history, unread answers,
//! delete.

use crate::store::sql::{args, Row};

use serde_json::Value;

use super::chats::{cut, DEFAULT_MODEL, TITLE_MAX_CHARS};
use super::db::iso;
use super::error::StoreError;
use super::Store;
use crate::settings::DispatchMode;

/// One message of a chat's history.
#[derive(Debug, Clone)]
pub struct HistoryItem {
    pub id: String,
    pub role: String,
    pub content: String,
    pub created_at: String,
}

/// A chat seen through its key (a front-door conversation).
#[derive(Debug, Clone)]
pub struct KeyedChat {
    pub id: String,
    pub title: String,
    pub created_at: String,
    pub updated_at: String,
    pub unread_count: i64,
    pub last_message_preview: Option<String>,
}

/// One unread agent message.
#[derive(Debug, Clone)]
pub struct Unread {
    pub id: String,
    pub chat_id: String,
    pub content: String,
    pub created_at: String,
}

const KEYED_COLUMNS: &str = "id, title, created_at, updated_at, unread_count, last_message_preview";

fn keyed_row(r: &Row) -> Result<KeyedChat, StoreError> {
    Ok(KeyedChat {
        id: r.get(0)?,
        title: r.get(1)?,
        created_at: iso(r.get(2)?),
        updated_at: iso(r.get(3)?),
        unread_count: r.get(4)?,
        last_message_preview: r.get(5)?,
    })
}

/// The key of the chat bound to a supervisor channel.
fn channel_key(channel: &str) -> String {
    format!("channel:{channel}")
}

/// The exclusive upper bound of keys starting with `prefix`: a range on the unique key index
/// instead of LIKE (no escaping, index-friendly).
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

impl Store {
    /// Finds or creates the chat bound to an external key (a supervisor channel, a front-door
    /// conversation, ...), with `agent_ids = [agent_id]`. Atomic: concurrent callers get one chat.
    /// `mode` overrides `DISPATCH_MODE` for a chat it creates.
    pub async fn chat_for_key(
        &self,
        key: &str,
        agent_id: &str,
        title: &str,
        mode: Option<DispatchMode>,
    ) -> Result<String, StoreError> {
        self.chat_for_key_as(key, agent_id, title, mode, None).await
    }

    /// [`chat_for_key`](Self::chat_for_key); a chat it creates gets the id `new_id` when one is
    /// given (chosen ahead by the caller, so that a worker can be told it while the chat is
    /// being written). The answer is the chat's id: another one when the chat already existed.
    async fn chat_for_key_as(
        &self,
        key: &str,
        agent_id: &str,
        title: &str,
        mode: Option<DispatchMode>,
        new_id: Option<String>,
    ) -> Result<String, StoreError> {
        let (key, agent, title) = (key.to_string(), agent_id.to_string(), title.to_string());
        self.write(move |w| {
            // Two nodes finding no chat for one key must not both create one.
            w.lock_name(&key)?;
            let found: Option<String> =
                w.c.opt("SELECT id FROM chats WHERE external_key = ?1", args![&key])?;
            if let Some(id) = found {
                return Ok(id);
            }
            let title = match cut(title.trim(), TITLE_MAX_CHARS) {
                t if t.is_empty() => "New Chat".to_string(),
                t => t,
            };
            let agents = [agent];
            let id = match new_id {
                Some(id) => w.insert_chat_as(
                    id,
                    &agents,
                    DEFAULT_MODEL,
                    &title,
                    "default",
                    &[],
                    Some(&key),
                )?,
                None => {
                    w.insert_chat(&agents, DEFAULT_MODEL, &title, "default", &[], Some(&key))?
                }
            };
            if let Some(mode) = mode {
                w.c.execute(
                    "UPDATE chats SET dispatch_mode = ?2 WHERE id = ?1",
                    args![id, mode.as_str()],
                )?;
            }
            Ok(id)
        })
        .await
    }

    /// Finds or creates (atomically) the chat bound to a supervisor channel, with
    /// `agent_ids = [agent_id]`; returns the chat id.
    pub async fn chat_for_channel(
        &self,
        channel: &str,
        agent_id: &str,
    ) -> Result<String, StoreError> {
        self.chat_for_key(&channel_key(channel), agent_id, channel, None)
            .await
    }

    /// The chat bound to a supervisor channel, if there is one (a read: it never creates).
    pub async fn channel_chat(&self, channel: &str) -> Result<Option<String>, StoreError> {
        self.chat_by_key(&channel_key(channel)).await
    }

    /// [`chat_for_channel`](Self::chat_for_channel), creating the chat (if there is none) with
    /// the id `new_id` the caller chose ahead; returns the chat's id, which differs from
    /// `new_id` only when someone else made the channel's chat meanwhile.
    pub async fn chat_for_channel_as(
        &self,
        channel: &str,
        agent_id: &str,
        new_id: &str,
    ) -> Result<String, StoreError> {
        let id = Some(new_id.to_string());
        self.chat_for_key_as(&channel_key(channel), agent_id, channel, None, id)
            .await
    }

    /// The chat bound to `key`, if there is one (a read: it never creates).
    pub async fn chat_by_key(&self, key: &str) -> Result<Option<String>, StoreError> {
        let k = key.to_string();
        self.read_point(move |c, _, _| {
            c.opt::<String>("SELECT id FROM chats WHERE external_key = ?1", args![k])
        })
        .await
    }

    /// The external key of a chat (`None` for an unknown chat or one without a key).
    pub async fn chat_key(&self, chat_id: &str) -> Result<Option<String>, StoreError> {
        let id = chat_id.to_string();
        self.read(move |c, _, _| {
            Ok(c.opt_map(
                "SELECT external_key FROM chats WHERE id = ?1",
                args![id],
                |r| r.get::<Option<String>>(0),
            )?
            .flatten())
        })
        .await
    }

    /// Every chat whose key starts with `prefix`, newest activity first.
    pub async fn chats_by_key_prefix(&self, prefix: &str) -> Result<Vec<KeyedChat>, StoreError> {
        let prefix = prefix.to_string();
        self.read(move |c, _, _| {
            let rows = c
                .all_map(&format!(
                    "SELECT {KEYED_COLUMNS} FROM chats WHERE external_key >= ?1 AND external_key < ?2
                     ORDER BY last_message_at DESC, seq DESC"
                ), args![prefix, prefix_end(&prefix)], keyed_row)?;
            Ok(rows)
        })
        .await
    }

    /// One chat as a [`KeyedChat`].
    pub async fn keyed_chat(&self, chat_id: &str) -> Result<Option<KeyedChat>, StoreError> {
        let id = chat_id.to_string();
        self.read(move |c, _, _| {
            c.opt_map(
                &format!("SELECT {KEYED_COLUMNS} FROM chats WHERE id = ?1"),
                args![id],
                keyed_row,
            )
        })
        .await
    }

    /// Agent messages newer than their chat's last read, across chats whose key starts with
    /// `prefix`, oldest first.
    pub async fn unread_agent_messages(&self, prefix: &str) -> Result<Vec<Unread>, StoreError> {
        let prefix = prefix.to_string();
        self.read(move |c, _, _| {
            let rows = c
                .all_map("SELECT m.id, m.chat_id, coalesce(m.content_final, ''), m.created_at FROM chats ch
                     JOIN messages m ON m.chat_id = ch.id
                     WHERE ch.external_key >= ?1 AND ch.external_key < ?2 AND m.role = 'agent'
                       AND m.stream_state = 'complete' AND m.created_at > coalesce(ch.last_read_at, -1)
                     ORDER BY m.seq", args![prefix, prefix_end(&prefix)], |r| {
                    Ok(Unread {
                        id: r.get(0)?,
                        chat_id: r.get(1)?,
                        content: r.get(2)?,
                        created_at: iso(r.get(3)?),
                    })
                })?;
            Ok(rows)
        })
        .await
    }

    /// The last `limit` messages of a chat (cancelled ones left out), oldest first.
    pub async fn history(
        &self,
        chat_id: &str,
        limit: usize,
    ) -> Result<Vec<HistoryItem>, StoreError> {
        let id = chat_id.to_string();
        let tails = self.inner.tails.clone();
        self.read(move |c, _, _| {
            let mut rows: Vec<HistoryItem> = c.all_map(
                "SELECT id, role, content_final, content_partial, created_at FROM messages
                     WHERE chat_id = ?1 AND stream_state <> 'cancelled' ORDER BY seq DESC LIMIT ?2",
                args![id, limit as i64],
                |r| {
                    let id: String = r.get(0)?;
                    // A streaming message's text so far may be partly in memory.
                    let content = r
                        .get::<Option<String>>(2)?
                        .or_else(|| tails.text(&id))
                        .or(r.get::<Option<String>>(3)?)
                        .unwrap_or_default();
                    Ok(HistoryItem {
                        id,
                        role: r.get(1)?,
                        content,
                        created_at: iso(r.get(4)?),
                    })
                },
            )?;
            rows.reverse();
            Ok(rows)
        })
        .await
    }

    /// The trace of a message (`Value::Null` when it has none or is unknown).
    pub async fn message_trace(&self, message_id: &str) -> Result<Value, StoreError> {
        let id = message_id.to_string();
        self.read(move |c, _, _| {
            let t: Option<Option<String>> =
                c.opt("SELECT trace FROM messages WHERE id = ?1", args![id])?;
            Ok(t.flatten()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null))
        })
        .await
    }

    /// The text of a message: final if complete, else what has streamed so far.
    pub async fn message_text(&self, message_id: &str) -> Result<Option<String>, StoreError> {
        let id = message_id.to_string();
        let tails = self.inner.tails.clone();
        self.read(move |c, _, _| {
            let t: Option<(Option<String>, Option<String>)> = c.opt(
                "SELECT content_final, content_partial FROM messages WHERE id = ?1",
                args![id],
            )?;
            Ok(t.map(|(f, p)| f.or_else(|| tails.text(&id).or(p)).unwrap_or_default()))
        })
        .await
    }

    /// Deletes a chat with its messages, requests and dispatch work, in one transaction; returns
    /// how many messages went. Its past events stay in the event log.
    pub async fn delete_chat(&self, chat_id: &str) -> Result<usize, StoreError> {
        let id = chat_id.to_string();
        self.write(move |w| {
            // Streams of the chat that never ended: their text held in memory goes with them.
            let streaming: Vec<String> = w.c.all(
                "SELECT id FROM messages WHERE chat_id = ?1 AND stream_state = 'streaming'",
                args![id],
            )?;
            if !streaming.is_empty() {
                let tails = w.tails.clone();
                w.after(move |committed| {
                    if committed {
                        for m in &streaming {
                            tails.forget(m);
                        }
                    }
                });
            }
            let messages =
                w.c.execute("DELETE FROM messages WHERE chat_id = ?1", args![id])?;
            // Children first: every table that points at the chat, then the chat.
            for sql in [
                "DELETE FROM requests WHERE chat_id = ?1",
                "DELETE FROM dispatch_inputs WHERE chat_id = ?1",
                "DELETE FROM dispatch_batches WHERE chat_id = ?1",
                "DELETE FROM dispatch_chat_state WHERE chat_id = ?1",
                "DELETE FROM chat_agents WHERE chat_id = ?1",
                "DELETE FROM chats WHERE id = ?1",
            ] {
                w.c.execute(sql, args![id])?;
            }
            Ok(messages)
        })
        .await
    }
}
