//! `/chats` routes.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::validate::{fingerprint, query, query_bool, query_int};
use super::{created, idempotency_key, ok, ok_true, store, write_body, Read, Result, Write};
use crate::http::state::AppState;
use crate::store::{ChatFilter, NewChat};

pub async fn create(
    _: Write,
    req: HttpRequest,
    st: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let mut f = write_body(&req, &st, payload).await?;
    let key = idempotency_key(&req)?;
    let agent_ids = match f.opt_str_array("agentIds") {
        Some(a) if a.is_empty() => {
            f.err("agentIds", "Array must contain at least 1 element(s)");
            None
        }
        Some(a) => Some(a),
        None if !f.has("agentIds") => {
            f.err("agentIds", "Required");
            None
        }
        None => None,
    };
    let model_id = f.opt_str("modelId");
    let title = f.opt_str("title");
    let tags = f.opt_str_array("tags");
    let first_message = f.opt_str("firstMessage");
    let body = Value::Object(f.obj.clone());
    f.finish()?;
    let new = NewChat {
        agent_ids: agent_ids.unwrap_or_default(),
        model_id,
        title,
        tags,
        first_message,
    };
    let idem = key.map(|k| (k, fingerprint(&body)));
    Ok(created(store(&st).create_chat(new, idem).await?))
}

pub async fn list(_: Read, req: HttpRequest, st: web::Data<AppState>) -> Result<HttpResponse> {
    let s = store(&st);
    let f = ChatFilter {
        cursor: query(&req, "cursor").filter(|c| !c.is_empty()),
        limit: query_int(&req, "limit", 50, 1, 100)?,
        archived: query_bool(&req, "archived")?,
        tag: query(&req, "tag").filter(|c| !c.is_empty()),
        agent_id: query(&req, "agentId").filter(|c| !c.is_empty()),
        query: query(&req, "query").filter(|c| !c.is_empty()),
    };
    Ok(ok(s.list_chats(f).await?))
}

pub async fn get(_: Read, st: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse> {
    let s = store(&st);
    Ok(ok(s.get_chat(&id).await?))
}

pub async fn patch(
    _: Write,
    req: HttpRequest,
    st: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let mut f = write_body(&req, &st, payload).await?;
    f.opt_str("title");
    f.opt_bool("titleAutoRenamed");
    f.opt_str_array("tags");
    f.opt_bool("pinned");
    f.opt_str("modelId");
    f.opt_bool("notificationsMuted");
    if f.has("agentIds") {
        f.err("agentIds", "agentIds cannot be changed.");
    }
    let known = [
        "title",
        "titleAutoRenamed",
        "tags",
        "pinned",
        "modelId",
        "notificationsMuted",
    ];
    if !known.iter().any(|k| f.has(k)) && f.ok() {
        f.form("At least one field must be provided.");
    }
    let obj = f.obj.clone();
    f.finish()?;
    Ok(ok(store(&st).patch_chat(&id, obj).await?))
}

async fn flag(st: web::Data<AppState>, id: web::Path<String>, what: &str) -> Result<HttpResponse> {
    let s = store(&st);
    match what {
        "archive" => s.set_archived(&id, true).await?,
        "unarchive" => s.set_archived(&id, false).await?,
        "read" => s.set_read(&id, true).await?,
        _ => s.set_read(&id, false).await?,
    }
    Ok(ok_true())
}

pub async fn archive(
    _: Write,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    flag(st, id, "archive").await
}

pub async fn unarchive(
    _: Write,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    flag(st, id, "unarchive").await
}

pub async fn mark_read(
    _: Write,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    flag(st, id, "read").await
}

pub async fn mark_unread(
    _: Write,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    flag(st, id, "unread").await
}

pub async fn pending_summary(
    _: Read,
    req: HttpRequest,
    st: web::Data<AppState>,
) -> Result<HttpResponse> {
    let s = store(&st);
    Ok(ok(s.pending_summary(query_bool(&req, "archived")?).await?))
}

pub async fn unread_summary(
    _: Read,
    req: HttpRequest,
    st: web::Data<AppState>,
) -> Result<HttpResponse> {
    let s = store(&st);
    let _ = json!(null);
    Ok(ok(s.unread_summary(query_bool(&req, "archived")?).await?))
}
