//! Interactive requests: choice, text_input and form, with config normalization, resolution
//! validation, and a `request_resolved` dispatch input on resolve.

use crate::store::sql::{args, Db, Row};

use serde_json::{json, Map, Value};

mod rules;

pub use rules::{check_resolution, normalize_config, type_name};

use super::chats::ensure_chat;
use super::db::iso;
use super::error::StoreError;
use super::{Store, W};
use crate::ids::new_id;

const REQ_COLS: &str = "id, chat_id, type, status, title, body, config, created_at, resolved_at, \
    resolved_by, resolution_payload, trace";

/// Input of [`Store::create_request`].
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub kind: String,
    pub title: String,
    pub body: Option<String>,
    pub config: Value,
    pub trace: Option<Value>,
}

fn parse(s: Option<String>) -> Value {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

fn request_from_row(r: &Row) -> Result<Value, StoreError> {
    Ok(json!({
        "id": r.get::<String>(0)?,
        "chat_id": r.get::<String>(1)?,
        "type": r.get::<String>(2)?,
        "status": r.get::<String>(3)?,
        "title": r.get::<String>(4)?,
        "body": r.get::<Option<String>>(5)?,
        "config": parse(r.get(6)?),
        "created_at": iso(r.get(7)?),
        "resolved_at": r.get::<Option<i64>>(8)?.map(iso),
        "resolved_by": r.get::<Option<String>>(9)?,
        "resolution_payload": parse(r.get(10)?),
        "trace": parse(r.get(11)?),
    }))
}

fn load_request(c: &dyn Db, id: &str) -> Result<Value, StoreError> {
    c.opt_map(
        &format!("SELECT {REQ_COLS} FROM requests WHERE id = ?1"),
        args![id],
        request_from_row,
    )?
    .ok_or_else(|| StoreError::not_found("Request not found.", Some(json!({ "requestId": id }))))
}

impl W<'_> {
    fn pending_request(&mut self, id: &str, action: &str) -> Result<Value, StoreError> {
        let r = load_request(self.c, id)?;
        if r["status"] != "pending" {
            return Err(StoreError::Validation {
                message: format!("Only pending requests can be {action}."),
                details: Some(json!({ "field": "status", "status": r["status"] })),
            });
        }
        Ok(r)
    }

    fn bump_pending(&mut self, chat_id: &str, delta: i64) -> Result<(), StoreError> {
        self.c
            .execute("UPDATE chats SET pending_requests_count = CASE WHEN pending_requests_count + ?2 < 0 THEN 0 ELSE pending_requests_count + ?2 END, updated_at = ?3 WHERE id = ?1", args![chat_id, delta, self.now])?;
        Ok(())
    }
}

impl Store {
    /// Creates a pending request (config validated and normalized), with optional idempotency
    /// `(key, fingerprint)`; emits `request.created`.
    pub async fn create_request(
        &self,
        chat_id: &str,
        r: NewRequest,
        idempotency: Option<(String, String)>,
    ) -> Result<Value, StoreError> {
        let chat_id = chat_id.to_string();
        self.write(move |w| {
            if let Some((key, fp)) = &idempotency {
                if let Some(body) = w.idem_lookup(key, fp)? {
                    return Ok(body);
                }
            }
            ensure_chat(w.c, &chat_id)?;
            let title = r.title.trim().to_string();
            if title.is_empty() {
                return Err(StoreError::field("title", "title cannot be empty."));
            }
            let config = normalize_config(&r.kind, &r.config)?;
            let id = new_id();
            w.c.execute("INSERT INTO requests (id, chat_id, type, status, title, body, config, created_at, trace) \
                 VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?8)", args![id, chat_id, r.kind, title, r.body, config.to_string(), w.now, r.trace.as_ref().map(Value::to_string)])?;
            w.bump_pending(&chat_id, 1)?;
            w.emit("request.created", json!({ "chatId": chat_id, "requestId": id, "type": r.kind, "title": title }))?;
            let out = load_request(w.c, &id)?;
            if let Some((key, fp)) = &idempotency {
                w.idem_store(key, fp, &out)?;
            }
            Ok(out)
        })
        .await
    }

    /// A chat's requests with `status` (`pending`, `resolved`, `cancelled` or `all`), oldest first.
    pub async fn list_requests(&self, chat_id: &str, status: String) -> Result<Value, StoreError> {
        let chat_id = chat_id.to_string();
        self.read(move |c, _, _| {
            ensure_chat(c, &chat_id)?;
            let data = c.all_map(
                &format!(
                    "SELECT {REQ_COLS} FROM requests WHERE chat_id = ?1 AND (?2 = 'all' OR status = ?2) ORDER BY seq"
                ),
                args![chat_id, status],
                request_from_row,
            )?;
            Ok(json!({ "data": data }))
        })
        .await
    }

    /// Updates `title`, `body`, `config` (re-validated) and/or `trace`.
    pub async fn patch_request(
        &self,
        id: &str,
        patch: Map<String, Value>,
    ) -> Result<Value, StoreError> {
        let id = id.to_string();
        self.write(move |w| {
            let r = load_request(w.c, &id)?;
            if let Some(Value::String(t)) = patch.get("title") {
                let t = t.trim();
                if t.is_empty() {
                    return Err(StoreError::field("title", "title cannot be empty."));
                }
                w.c.execute("UPDATE requests SET title = ?2 WHERE id = ?1", args![id, t])?;
            }
            if let Some(b) = patch.get("body") {
                w.c.execute(
                    "UPDATE requests SET body = ?2 WHERE id = ?1",
                    args![id, b.as_str()],
                )?;
            }
            if let Some(cfg) = patch.get("config") {
                let cfg = normalize_config(r["type"].as_str().unwrap_or(""), cfg)?;
                w.c.execute(
                    "UPDATE requests SET config = ?2 WHERE id = ?1",
                    args![id, cfg.to_string()],
                )?;
            }
            if let Some(t) = patch.get("trace") {
                let t = (!t.is_null()).then(|| t.to_string());
                w.c.execute("UPDATE requests SET trace = ?2 WHERE id = ?1", args![id, t])?;
            }
            load_request(w.c, &id)
        })
        .await
    }

    /// Resolves a pending request with a type-specific payload (`resolvedBy` `user` or
    /// `backend`); emits `request.resolved` and creates a `request_resolved` dispatch input.
    pub async fn resolve_request(
        &self,
        id: &str,
        body: Map<String, Value>,
    ) -> Result<Value, StoreError> {
        let id = id.to_string();
        self.write(move |w| {
            let by = match body.get("resolvedBy") {
                None | Some(Value::Null) => "user",
                Some(Value::String(s)) if s == "user" || s == "backend" => if s == "user" { "user" } else { "backend" },
                Some(_) => return Err(StoreError::field("resolvedBy", "resolvedBy must be user or backend.")),
            };
            let r = w.pending_request(&id, "resolved")?;
            let kind = r["type"].as_str().unwrap_or("").to_string();
            let title = r["title"].as_str().unwrap_or("").to_string();
            let chat_id = r["chat_id"].as_str().unwrap_or("").to_string();
            let (payload, line) = check_resolution(&kind, &title, &r["config"], &body)?;
            w.c.execute("UPDATE requests SET status = 'resolved', resolved_at = ?2, resolved_by = ?3, resolution_payload = ?4 WHERE id = ?1", args![id, w.now, by, payload.to_string()])?;
            w.bump_pending(&chat_id, -1)?;
            let sender = if by == "backend" { "backend" } else { "user:primary" };
            w.emit("request.resolved", json!({
                "chatId": chat_id, "requestId": id, "type": kind, "title": title, "status": "resolved",
                "senderId": sender, "resolution_payload": payload, "resolutionPayload": payload, "trace": r["trace"],
            }))?;
            w.add_input(&chat_id, "request_resolved", &id, sender, &line, None, None)?;
            load_request(w.c, &id)
        })
        .await
    }

    /// Cancels a pending request; emits `request.cancelled` (no dispatch).
    pub async fn cancel_request(&self, id: &str) -> Result<Value, StoreError> {
        let id = id.to_string();
        self.write(move |w| {
            let r = w.pending_request(&id, "cancelled")?;
            let chat_id = r["chat_id"].as_str().unwrap_or("").to_string();
            w.c.execute(
                "UPDATE requests SET status = 'cancelled', resolved_at = ?2 WHERE id = ?1",
                args![id, w.now],
            )?;
            w.bump_pending(&chat_id, -1)?;
            w.emit(
                "request.cancelled",
                json!({
                    "chatId": chat_id, "requestId": id, "type": r["type"], "status": "cancelled",
                    "resolution_payload": Value::Null, "trace": r["trace"],
                }),
            )?;
            load_request(w.c, &id)
        })
        .await
    }
}
