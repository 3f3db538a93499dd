//! Chats: create, list, get, patch, archive, read state, and summaries. Kept as one file (a
//! little over 400 lines): every function works on the `chats` row through one column list and
//! one row mapping.

use crate::store::sql::{args, Db, Row, Value as SqlValue};

use serde_json::{json, Map, Value};

use super::cursor::{decode as decode_cursor, encode as encode_cursor};
use super::db::iso;
use super::error::StoreError;
use super::{Store, W};
use crate::catalog::Catalog;
use crate::ids::new_id;

/// Longest chat title; longer titles are cut.
pub const TITLE_MAX_CHARS: usize = 48;
/// Longest `last_message_preview`.
pub const PREVIEW_MAX_CHARS: usize = 180;
/// The models agentd offers: one, `default` (agents pick their own model in their graph).
pub const MODELS: &[(&str, &str, &str)] = &[(
    "default",
    "Default",
    "Whatever model the agent's graph is configured with.",
)];
pub const DEFAULT_MODEL: &str = "default";

const CHAT_COLS: &str = "id, is_archived, title, title_source, tags, pinned, agent_ids, model_id, \
    last_message_preview, last_message_role, pending_requests_count, last_read_at, unread_count, \
    notifications_muted, created_at, updated_at, last_message_at";

/// Input of [`Store::create_chat`].
#[derive(Debug, Clone, Default)]
pub struct NewChat {
    /// At least one agent id (a catalog graph name).
    pub agent_ids: Vec<String>,
    /// A model id from `GET /config`; `None` = `default`.
    pub model_id: Option<String>,
    pub title: Option<String>,
    pub tags: Option<Vec<String>>,
    /// Posted as the first user message (and dispatched) when not blank.
    pub first_message: Option<String>,
}

/// Filters of [`Store::list_chats`].
#[derive(Debug, Clone, Default)]
pub struct ChatFilter {
    pub cursor: Option<String>,
    pub limit: i64,
    /// `None`: both archived and not.
    pub archived: Option<bool>,
    pub tag: Option<String>,
    pub agent_id: Option<String>,
    pub query: Option<String>,
}

fn json_col(s: Option<String>) -> Value {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

fn chat_from_row(r: &Row) -> Result<Value, StoreError> {
    Ok(json!({
        "id": r.get::<String>(0)?,
        "is_archived": r.get::<bool>(1)?,
        "title": r.get::<String>(2)?,
        "title_source": r.get::<String>(3)?,
        "tags": json_col(r.get(4)?),
        "pinned": r.get::<bool>(5)?,
        "agent_ids": json_col(r.get(6)?),
        "model_id": r.get::<String>(7)?,
        "last_message_preview": r.get::<Option<String>>(8)?,
        "last_message_role": r.get::<Option<String>>(9)?,
        "pending_requests_count": r.get::<i64>(10)?,
        "last_read_at": r.get::<Option<i64>>(11)?.map(iso),
        "unread_count": r.get::<i64>(12)?,
        "notifications_muted": r.get::<bool>(13)?,
        "created_at": iso(r.get(14)?),
        "updated_at": iso(r.get(15)?),
        "last_message_at": iso(r.get(16)?),
    }))
}

/// The chat resource, or 404.
pub(crate) fn load_chat(c: &dyn Db, id: &str) -> Result<Value, StoreError> {
    c.opt_map(
        &format!("SELECT {CHAT_COLS} FROM chats WHERE id = ?1"),
        args![id],
        chat_from_row,
    )?
    .ok_or_else(|| StoreError::chat_not_found(id))
}

/// 404 unless the chat exists.
pub(crate) fn ensure_chat(c: &dyn Db, id: &str) -> Result<(), StoreError> {
    let found = c.exists("SELECT 1 FROM chats WHERE id = ?1", args![id])?;
    if found {
        Ok(())
    } else {
        Err(StoreError::chat_not_found(id))
    }
}

/// Trims and cuts to `max` characters.
pub(crate) fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn clean_tags(tags: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let t = t.trim();
        if !t.is_empty() && !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    out
}

pub(crate) fn is_model(id: &str) -> bool {
    MODELS.iter().any(|(m, _, _)| *m == id)
}

pub(crate) fn is_agent(catalog: &Catalog, id: &str) -> bool {
    catalog.get(id).is_some()
}

impl W<'_> {
    /// Inserts a chat row and its agents; emits `chat.created`.
    pub(super) fn insert_chat(
        &mut self,
        agent_ids: &[String],
        model_id: &str,
        title: &str,
        title_source: &str,
        tags: &[String],
        external_key: Option<&str>,
    ) -> Result<String, StoreError> {
        let id = new_id();
        self.insert_chat_as(
            id,
            agent_ids,
            model_id,
            title,
            title_source,
            tags,
            external_key,
        )
    }

    /// [`insert_chat`](Self::insert_chat) with an id the caller chose.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert_chat_as(
        &mut self,
        id: String,
        agent_ids: &[String],
        model_id: &str,
        title: &str,
        title_source: &str,
        tags: &[String],
        external_key: Option<&str>,
    ) -> Result<String, StoreError> {
        self.c
            .execute("INSERT INTO chats (id, external_key, title, title_source, tags, agent_ids, model_id, \
                 created_at, updated_at, last_message_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8)", args![
                id,
                external_key,
                title,
                title_source,
                json!(tags).to_string(),
                json!(agent_ids).to_string(),
                model_id,
                self.now
            ])?;
        for (i, a) in agent_ids.iter().enumerate() {
            self.c
                .execute("INSERT INTO chat_agents (chat_id, agent_id, position) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING", args![id, a, i as i64])?;
        }
        self.emit("chat.created", json!({ "chatId": id }))?;
        Ok(id)
    }

    fn create_chat_tx(&mut self, new: NewChat) -> Result<Value, StoreError> {
        if new.agent_ids.is_empty() {
            return Err(StoreError::field(
                "agentIds",
                "At least one agent id is required.",
            ));
        }
        for a in &new.agent_ids {
            if !is_agent(&self.catalog, a) {
                return Err(StoreError::field(
                    "agentIds",
                    format!("Unknown agent id: {a}"),
                ));
            }
        }
        let model_id = new.model_id.unwrap_or_else(|| DEFAULT_MODEL.into());
        if !is_model(&model_id) {
            return Err(StoreError::field(
                "modelId",
                format!("Unknown model id: {model_id}"),
            ));
        }
        let first = new
            .first_message
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let (title, source) = match &new.title {
            Some(t) => {
                let t = t.trim();
                if t.is_empty() {
                    return Err(StoreError::field("title", "title cannot be empty."));
                }
                (cut(t, TITLE_MAX_CHARS), "manual")
            }
            None => match &first {
                Some(f) => (cut(&collapse_ws(f), TITLE_MAX_CHARS), "default"),
                None => ("New Chat".to_string(), "default"),
            },
        };
        let tags = clean_tags(new.tags.as_deref().unwrap_or(&[]));
        let id = self.insert_chat(&new.agent_ids, &model_id, &title, source, &tags, None)?;
        if let Some(text) = first {
            let m = self.insert_message(
                &id,
                "user",
                "user:primary",
                Some(text.clone()),
                None,
                "complete",
                None,
                false,
            )?;
            let mid = m["id"].as_str().unwrap_or_default().to_string();
            self.add_input(&id, "user_message", &mid, "user:primary", &text, None, None)?;
        }
        load_chat(self.c, &id)
    }

    /// Bumps the chat's `updated_at` and emits `kind` (`chat.updated`, `chat.archived`, ...).
    fn touch_chat(&mut self, id: &str, kind: &str) -> Result<(), StoreError> {
        self.c.execute(
            "UPDATE chats SET updated_at = ?2 WHERE id = ?1",
            args![id, self.now],
        )?;
        self.emit(kind, json!({ "chatId": id }))
    }
}

impl Store {
    /// Creates a chat (and posts `first_message` as a dispatched user message). With
    /// `idempotency = Some((key, fingerprint))` a repeat with the same fingerprint returns the
    /// first answer and a different one is a 409. Returns the chat resource (snake_case).
    pub async fn create_chat(
        &self,
        new: NewChat,
        idempotency: Option<(String, String)>,
    ) -> Result<Value, StoreError> {
        self.write(move |w| {
            if let Some((key, fp)) = &idempotency {
                if let Some(body) = w.idem_lookup(key, fp)? {
                    return Ok(body);
                }
            }
            let chat = w.create_chat_tx(new)?;
            if let Some((key, fp)) = &idempotency {
                w.idem_store(key, fp, &chat)?;
            }
            Ok(chat)
        })
        .await
    }

    /// The chat resource, or 404.
    pub async fn get_chat(&self, id: &str) -> Result<Value, StoreError> {
        let id = id.to_string();
        self.read(move |c, _, _| load_chat(c, &id)).await
    }

    /// Chats ordered pinned desc, last_message_at desc, id desc: `{data, cursor{next, hasMore}}`.
    pub async fn list_chats(&self, f: ChatFilter) -> Result<Value, StoreError> {
        let after = match &f.cursor {
            Some(c) => {
                let v = decode_cursor(c)?;
                match (v["p"].as_i64(), v["t"].as_i64(), v["id"].as_str()) {
                    (Some(p), Some(t), Some(id)) => Some((p, t, id.to_string())),
                    _ => return Err(StoreError::field("cursor", "Invalid cursor.")),
                }
            }
            None => None,
        };
        self.read(move |c, _, _| {
            let d = c.dialect();
            let mut sql = format!("SELECT {CHAT_COLS}, pinned, last_message_at FROM chats WHERE 1=1");
            let mut args: Vec<SqlValue> = Vec::new();
            // Pushes a parameter and names it (`?n`).
            let mut arg = |v: SqlValue| {
                args.push(v);
                format!("?{}", args.len())
            };
            if let Some(a) = f.archived {
                sql.push_str(&format!(" AND is_archived = {}", arg(SqlValue::Int(a as i64))));
            }
            if let Some(t) = &f.tag {
                let p = arg(SqlValue::Text(t.clone()));
                sql.push_str(&format!(" AND {}", d.json_array_has("chats.tags", &p)));
            }
            if let Some(a) = &f.agent_id {
                let p = arg(SqlValue::Text(a.clone()));
                sql.push_str(&format!(" AND id IN (SELECT chat_id FROM chat_agents WHERE agent_id = {p})"));
            }
            if let Some(q) = &f.query {
                let p = arg(SqlValue::Text(q.clone()));
                sql.push_str(&format!(" AND {}", d.contains_ci("title", &p)));
            }
            if let Some((p, t, id)) = after {
                let (p, t, id) = (arg(SqlValue::Int(p)), arg(SqlValue::Int(t)), arg(SqlValue::Text(id)));
                sql.push_str(&format!(
                    " AND (pinned < {p} OR (pinned = {p} AND last_message_at < {t}) OR (pinned = {p} AND last_message_at = {t} AND id < {id}))"
                ));
            }
            let lim = arg(SqlValue::Int(f.limit + 1));
            sql.push_str(&format!(" ORDER BY pinned DESC, last_message_at DESC, id DESC LIMIT {lim}"));
            let mut rows = c.all_map(&sql, &args, |r| {
                Ok((chat_from_row(r)?, r.get::<i64>(17)?, r.get::<i64>(18)?))
            })?;
            let has_more = rows.len() as i64 > f.limit;
            rows.truncate(f.limit as usize);
            let next = match (has_more, rows.last()) {
                (true, Some((chat, p, t))) => Some(encode_cursor(&json!({"p": p, "t": t, "id": chat["id"]}))),
                _ => None,
            };
            let data: Vec<Value> = rows.into_iter().map(|(c, _, _)| c).collect();
            Ok(json!({ "data": data, "cursor": { "next": next, "hasMore": has_more } }))
        })
        .await
    }

    /// Applies a validated patch (`title`, `titleAutoRenamed`, `tags`, `pinned`, `modelId`,
    /// `notificationsMuted`); emits `chat.updated`.
    pub async fn patch_chat(
        &self,
        id: &str,
        patch: Map<String, Value>,
    ) -> Result<Value, StoreError> {
        let id = id.to_string();
        self.write(move |w| {
            ensure_chat(w.c, &id)?;
            if let Some(Value::String(t)) = patch.get("title") {
                let t = t.trim();
                if t.is_empty() {
                    return Err(StoreError::field("title", "title cannot be empty."));
                }
                let source = if patch.get("titleAutoRenamed") == Some(&Value::Bool(true)) {
                    "auto"
                } else {
                    "manual"
                };
                w.c.execute(
                    "UPDATE chats SET title = ?2, title_source = ?3 WHERE id = ?1",
                    args![id, cut(t, TITLE_MAX_CHARS), source],
                )?;
            }
            if let Some(Value::Array(tags)) = patch.get("tags") {
                let tags: Vec<String> = tags
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect();
                w.c.execute(
                    "UPDATE chats SET tags = ?2 WHERE id = ?1",
                    args![id, json!(clean_tags(&tags)).to_string()],
                )?;
            }
            if let Some(Value::Bool(p)) = patch.get("pinned") {
                w.c.execute("UPDATE chats SET pinned = ?2 WHERE id = ?1", args![id, p])?;
            }
            if let Some(Value::Bool(m)) = patch.get("notificationsMuted") {
                w.c.execute(
                    "UPDATE chats SET notifications_muted = ?2 WHERE id = ?1",
                    args![id, m],
                )?;
            }
            if let Some(Value::String(m)) = patch.get("modelId") {
                if !is_model(m) {
                    return Err(StoreError::field(
                        "modelId",
                        format!("Unknown model id: {m}"),
                    ));
                }
                w.c.execute("UPDATE chats SET model_id = ?2 WHERE id = ?1", args![id, m])?;
            }
            w.touch_chat(&id, "chat.updated")?;
            load_chat(w.c, &id)
        })
        .await
    }

    /// Archives (`true`) or unarchives a chat; emits `chat.archived` / `chat.unarchived`.
    pub async fn set_archived(&self, id: &str, archived: bool) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |w| {
            ensure_chat(w.c, &id)?;
            w.c.execute(
                "UPDATE chats SET is_archived = ?2 WHERE id = ?1",
                args![id, archived],
            )?;
            w.touch_chat(
                &id,
                if archived {
                    "chat.archived"
                } else {
                    "chat.unarchived"
                },
            )
        })
        .await
    }

    /// Marks a chat read (unread 0) or unread (at least 1); emits `chat.read` / `chat.unread`.
    pub async fn set_read(&self, id: &str, read: bool) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |w| {
            ensure_chat(w.c, &id)?;
            if read {
                w.c.execute("UPDATE chats SET unread_count = 0, last_read_at = ?2 WHERE id = ?1", args![id, w.now])?;
            } else {
                w.c.execute("UPDATE chats SET unread_count = CASE WHEN unread_count < 1 THEN 1 ELSE unread_count END WHERE id = ?1", args![id])?;
            }
            w.touch_chat(&id, if read { "chat.read" } else { "chat.unread" })
        })
        .await
    }

    /// `{"pending_requests_total": n}`.
    pub async fn pending_summary(&self, archived: Option<bool>) -> Result<Value, StoreError> {
        self.read(move |c, _, _| {
            let n: i64 = c
                .one("SELECT CAST(COALESCE(SUM(pending_requests_count), 0) AS BIGINT) FROM chats WHERE (CAST(?1 AS BIGINT) IS NULL OR is_archived = ?1)", args![archived])?;
            Ok(json!({ "pending_requests_total": n }))
        })
        .await
    }

    /// `{"total_unread", "unread_by_agent": {agentId: n}}` (a chat counts for its first agent).
    pub async fn unread_summary(&self, archived: Option<bool>) -> Result<Value, StoreError> {
        self.read(move |c, _, _| {
            let rows: Vec<(String, i64)> = c.all(
                "SELECT a.agent_id, CAST(SUM(ch.unread_count) AS BIGINT) FROM chats ch JOIN chat_agents a ON a.chat_id = ch.id AND a.position = 0 \
                 WHERE (CAST(?1 AS BIGINT) IS NULL OR ch.is_archived = ?1) AND ch.unread_count > 0 GROUP BY a.agent_id",
                args![archived],
            )?;
            let mut by = Map::new();
            let mut total = 0;
            for (a, n) in rows {
                total += n;
                by.insert(a, json!(n));
            }
            Ok(json!({ "total_unread": total, "unread_by_agent": by }))
        })
        .await
    }
}
