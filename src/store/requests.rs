//! Interactive requests: choice, text_input and form, with config normalization, resolution
//! validation, and a `request_resolved` dispatch input on resolve.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::{json, Map, Value};

use super::chats::ensure_chat;
use super::db::{iso, new_id};
use super::error::StoreError;
use super::{Store, W};

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

fn request_from_row(r: &Row) -> rusqlite::Result<Value> {
    Ok(json!({
        "id": r.get::<_, String>(0)?,
        "chat_id": r.get::<_, String>(1)?,
        "type": r.get::<_, String>(2)?,
        "status": r.get::<_, String>(3)?,
        "title": r.get::<_, String>(4)?,
        "body": r.get::<_, Option<String>>(5)?,
        "config": parse(r.get(6)?),
        "created_at": iso(r.get(7)?),
        "resolved_at": r.get::<_, Option<i64>>(8)?.map(iso),
        "resolved_by": r.get::<_, Option<String>>(9)?,
        "resolution_payload": parse(r.get(10)?),
        "trace": parse(r.get(11)?),
    }))
}

fn load_request(c: &Connection, id: &str) -> Result<Value, StoreError> {
    c.prepare_cached(&format!("SELECT {REQ_COLS} FROM requests WHERE id = ?1"))?
        .query_row([id], request_from_row)
        .optional()?
        .ok_or_else(|| {
            StoreError::not_found("Request not found.", Some(json!({ "requestId": id })))
        })
}

/// The JSON type of a value, in the words of schema errors (`received string`, ...).
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn bad_config(msg: impl Into<String>) -> StoreError {
    StoreError::field("config", msg)
}

/// Validates and normalizes a request config for its type.
pub fn normalize_config(kind: &str, config: &Value) -> Result<Value, StoreError> {
    let Some(obj) = config.as_object() else {
        return Err(bad_config(format!(
            "config must be an object, got {}.",
            type_name(config)
        )));
    };
    match kind {
        "choice" => {
            let Some(options) = obj
                .get("options")
                .and_then(Value::as_array)
                .filter(|o| !o.is_empty())
            else {
                return Err(bad_config("choice config needs at least one option."));
            };
            let mut out = Vec::new();
            let mut ids: Vec<String> = Vec::new();
            for o in options {
                let id = o
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty());
                let label = o
                    .get("label")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty());
                let (Some(id), Some(label)) = (id, label) else {
                    return Err(bad_config("every option needs a non-empty id and label."));
                };
                if ids.iter().any(|i| i == id) {
                    return Err(bad_config(format!("option ids must be unique ({id}).")));
                }
                ids.push(id.to_string());
                let mut opt = json!({ "id": id, "label": label });
                match o.get("variant") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(v))
                        if ["primary", "secondary", "danger"].contains(&v.as_str()) =>
                    {
                        opt["variant"] = json!(v);
                    }
                    Some(_) => {
                        return Err(bad_config("variant must be primary, secondary or danger."))
                    }
                }
                out.push(opt);
            }
            let int = |k: &str, default: u64| -> Result<u64, StoreError> {
                match obj.get(k) {
                    None | Some(Value::Null) => Ok(default),
                    Some(v) => v
                        .as_u64()
                        .ok_or_else(|| bad_config(format!("{k} must be a whole number."))),
                }
            };
            let max = int("maxSelections", 1)?;
            let min = int("minSelections", 0)?;
            if max < 1 {
                return Err(bad_config("maxSelections must be at least 1."));
            }
            if min > max {
                return Err(bad_config("minSelections cannot exceed maxSelections."));
            }
            Ok(json!({ "options": out, "maxSelections": max, "minSelections": min }))
        }
        "text_input" => {
            let mut out = Map::new();
            match obj.get("placeholder") {
                None | Some(Value::Null) => {}
                Some(Value::String(p)) => {
                    out.insert("placeholder".into(), json!(p));
                }
                Some(_) => return Err(bad_config("placeholder must be a string.")),
            }
            match obj.get("validation") {
                None | Some(Value::Null) => {}
                Some(Value::Object(v)) => {
                    let mut val = Map::new();
                    for k in ["minLength", "maxLength"] {
                        match v.get(k) {
                            None | Some(Value::Null) => {}
                            Some(n) => {
                                let n = n.as_u64().ok_or_else(|| {
                                    bad_config(format!("validation.{k} must be a whole number."))
                                })?;
                                val.insert(k.into(), json!(n));
                            }
                        }
                    }
                    match v.get("pattern") {
                        None | Some(Value::Null) => {}
                        Some(Value::String(p)) => {
                            if regex::Regex::new(p).is_err() {
                                return Err(bad_config(
                                    "validation.pattern must be a valid regular expression.",
                                ));
                            }
                            val.insert("pattern".into(), json!(p));
                        }
                        Some(_) => return Err(bad_config("validation.pattern must be a string.")),
                    }
                    out.insert("validation".into(), Value::Object(val));
                }
                Some(_) => return Err(bad_config("validation must be an object.")),
            }
            Ok(Value::Object(out))
        }
        "form" => {
            let Some(fields) = obj
                .get("fields")
                .and_then(Value::as_array)
                .filter(|f| !f.is_empty())
            else {
                return Err(bad_config("form config needs at least one field."));
            };
            let mut out = Vec::new();
            let mut names: Vec<String> = Vec::new();
            for f in fields {
                let Some(name) = f
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                else {
                    return Err(bad_config("every field needs a non-empty name."));
                };
                if names.iter().any(|n| n == name) {
                    return Err(bad_config(format!("field names must be unique ({name}).")));
                }
                names.push(name.to_string());
                let ftype = f.get("type").and_then(Value::as_str).unwrap_or("");
                if ![
                    "text",
                    "textarea",
                    "select",
                    "multiselect",
                    "checkbox",
                    "date",
                ]
                .contains(&ftype)
                {
                    return Err(bad_config(format!("field {name}: type must be text, textarea, select, multiselect, checkbox or date.")));
                }
                let mut field = json!({ "name": name, "type": ftype, "required": f.get("required").and_then(Value::as_bool).unwrap_or(false) });
                if let Some(l) = f.get("label").and_then(Value::as_str) {
                    field["label"] = json!(l);
                }
                let options = f.get("options").filter(|o| !o.is_null());
                if ftype == "select" || ftype == "multiselect" {
                    let opts: Option<Vec<String>> =
                        options.and_then(Value::as_array).and_then(|a| {
                            a.iter()
                                .map(|o| {
                                    o.as_str()
                                        .map(str::trim)
                                        .filter(|s| !s.is_empty())
                                        .map(str::to_string)
                                })
                                .collect()
                        });
                    match opts {
                        Some(o) if !o.is_empty() => field["options"] = json!(o),
                        _ => {
                            return Err(bad_config(format!(
                            "field {name}: options (non-empty strings) are required for {ftype}."
                        )))
                        }
                    }
                } else if options.is_some() {
                    return Err(bad_config(format!(
                        "field {name}: options are only allowed for select and multiselect."
                    )));
                }
                out.push(field);
            }
            let mut cfg = json!({ "fields": out });
            if let Some(s) = obj.get("submitLabel").and_then(Value::as_str) {
                cfg["submitLabel"] = json!(s);
            }
            Ok(cfg)
        }
        _ => Err(StoreError::field(
            "type",
            "type must be choice, text_input or form.",
        )),
    }
}

fn bad_payload(field: &str, msg: impl Into<String>) -> StoreError {
    StoreError::field(field, msg)
}

/// Validates a resolution payload; returns the stored payload and the dispatch summary line.
pub fn check_resolution(
    kind: &str,
    title: &str,
    config: &Value,
    body: &Map<String, Value>,
) -> Result<(Value, String), StoreError> {
    let head = format!("[Request resolved: {}]", Value::String(title.to_string()));
    match kind {
        "choice" => {
            let ids: Vec<String> = match body.get("selectedOptionIds").and_then(Value::as_array) {
                Some(a) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        bad_payload("selectedOptionIds", "selectedOptionIds must be strings.")
                    })?,
                None => {
                    return Err(bad_payload(
                        "selectedOptionIds",
                        "selectedOptionIds is required.",
                    ))
                }
            };
            let known: Vec<&str> = config["options"]
                .as_array()
                .map(|o| o.iter().filter_map(|x| x["id"].as_str()).collect())
                .unwrap_or_default();
            for (i, id) in ids.iter().enumerate() {
                if !known.contains(&id.as_str()) {
                    return Err(bad_payload(
                        "selectedOptionIds",
                        format!("Unknown option id: {id}"),
                    ));
                }
                if ids[..i].contains(id) {
                    return Err(bad_payload(
                        "selectedOptionIds",
                        "selectedOptionIds must be unique.",
                    ));
                }
            }
            let (min, max) = (
                config["minSelections"].as_u64().unwrap_or(0),
                config["maxSelections"].as_u64().unwrap_or(1),
            );
            let n = ids.len() as u64;
            if n < min || n > max {
                return Err(bad_payload(
                    "selectedOptionIds",
                    format!("Select between {min} and {max} options."),
                ));
            }
            Ok((
                json!({ "selectedOptionIds": ids }),
                format!("{head} Selected: {}", ids.join(", ")),
            ))
        }
        "text_input" => {
            let text = match body.get("text") {
                Some(Value::String(t)) => t.trim().to_string(),
                _ => return Err(bad_payload("text", "text is required.")),
            };
            if text.is_empty() {
                return Err(bad_payload("text", "text cannot be empty."));
            }
            let v = &config["validation"];
            let len = text.chars().count() as u64;
            if let Some(min) = v["minLength"].as_u64() {
                if len < min {
                    return Err(bad_payload(
                        "text",
                        format!("text must be at least {min} characters."),
                    ));
                }
            }
            if let Some(max) = v["maxLength"].as_u64() {
                if len > max {
                    return Err(bad_payload(
                        "text",
                        format!("text must be at most {max} characters."),
                    ));
                }
            }
            if let Some(p) = v["pattern"].as_str() {
                if !regex::Regex::new(p)
                    .map(|r| r.is_match(&text))
                    .unwrap_or(false)
                {
                    return Err(bad_payload(
                        "text",
                        "text does not match the required pattern.",
                    ));
                }
            }
            Ok((json!({ "text": text }), format!("{head} Response: {text}")))
        }
        _ => {
            let Some(values) = body.get("values").and_then(Value::as_object) else {
                return Err(bad_payload("values", "values is required."));
            };
            let fields = config["fields"].as_array().cloned().unwrap_or_default();
            for k in values.keys() {
                if !fields.iter().any(|f| f["name"] == *k) {
                    return Err(bad_payload("values", format!("Unknown field: {k}")));
                }
            }
            for f in &fields {
                let name = f["name"].as_str().unwrap_or("");
                let ftype = f["type"].as_str().unwrap_or("");
                let options: Vec<&str> = f["options"]
                    .as_array()
                    .map(|o| o.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let v = values.get(name).filter(|v| !v.is_null());
                let empty = match v {
                    None => true,
                    Some(Value::String(s)) => s.trim().is_empty(),
                    Some(Value::Array(a)) => a.is_empty(),
                    Some(_) => false,
                };
                if f["required"] == true && empty && ftype != "checkbox" {
                    return Err(bad_payload("values", format!("{name} is required.")));
                }
                if f["required"] == true && ftype == "checkbox" && v.is_none() {
                    return Err(bad_payload("values", format!("{name} is required.")));
                }
                let Some(v) = v else { continue };
                let ok = match ftype {
                    "checkbox" => v.is_boolean(),
                    "multiselect" => v.as_array().is_some_and(|a| {
                        a.iter()
                            .all(|x| x.as_str().is_some_and(|s| options.contains(&s)))
                    }),
                    "select" => v
                        .as_str()
                        .is_some_and(|s| s.is_empty() || options.contains(&s)),
                    _ => v.is_string(),
                };
                if !ok {
                    return Err(bad_payload(
                        "values",
                        format!("{name} has an invalid value for a {ftype} field."),
                    ));
                }
            }
            let values = Value::Object(values.clone());
            Ok((
                json!({ "values": values }),
                format!("{head} Form values: {values}"),
            ))
        }
    }
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
            .prepare_cached(
                "UPDATE chats SET pending_requests_count = MAX(0, pending_requests_count + ?2), updated_at = ?3 WHERE id = ?1",
            )?
            .execute(params![chat_id, delta, self.now])?;
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
            w.c.prepare_cached(
                "INSERT INTO requests (id, chat_id, type, status, title, body, config, created_at, trace) \
                 VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![id, chat_id, r.kind, title, r.body, config.to_string(), w.now, r.trace.as_ref().map(Value::to_string)])?;
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
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {REQ_COLS} FROM requests WHERE chat_id = ?1 AND (?2 = 'all' OR status = ?2) ORDER BY seq"
            ))?;
            let rows = stmt.query_map(params![chat_id, status], request_from_row)?;
            let data = rows.collect::<Result<Vec<_>, _>>()?;
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
                w.c.prepare_cached("UPDATE requests SET title = ?2 WHERE id = ?1")?
                    .execute(params![id, t])?;
            }
            if let Some(b) = patch.get("body") {
                w.c.prepare_cached("UPDATE requests SET body = ?2 WHERE id = ?1")?
                    .execute(params![id, b.as_str()])?;
            }
            if let Some(cfg) = patch.get("config") {
                let cfg = normalize_config(r["type"].as_str().unwrap_or(""), cfg)?;
                w.c.prepare_cached("UPDATE requests SET config = ?2 WHERE id = ?1")?
                    .execute(params![id, cfg.to_string()])?;
            }
            if let Some(t) = patch.get("trace") {
                let t = (!t.is_null()).then(|| t.to_string());
                w.c.prepare_cached("UPDATE requests SET trace = ?2 WHERE id = ?1")?
                    .execute(params![id, t])?;
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
            w.c.prepare_cached(
                "UPDATE requests SET status = 'resolved', resolved_at = ?2, resolved_by = ?3, resolution_payload = ?4 WHERE id = ?1",
            )?
            .execute(params![id, w.now, by, payload.to_string()])?;
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
            w.c.prepare_cached(
                "UPDATE requests SET status = 'cancelled', resolved_at = ?2 WHERE id = ?1",
            )?
            .execute(params![id, w.now])?;
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
