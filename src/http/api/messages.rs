//! Message, streaming and typing routes.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::validate::{query, query_int};
use super::{created, no_content, ok, store, write_body, Read, Result, Write};
use crate::http::state::AppState;
use crate::store::NewMessage;

pub async fn create(
    _: Write,
    req: HttpRequest,
    st: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let mut f = write_body(&req, &st, payload).await?;
    let role = f.req_str("role", 1);
    if let Some(r) = &role {
        if !["user", "agent", "system", "tool"].contains(&r.as_str()) {
            f.err(
                "role",
                "Invalid enum value. Expected 'user' | 'agent' | 'system' | 'tool'",
            );
        }
    }
    let sender_id = f.req_str("senderId", 1);
    let content = f.opt_str("content");
    let streaming = f.opt_bool("streaming").unwrap_or(false);
    f.opt_str("modelId");
    let trace = f.opt_object("trace").map(Value::Object);
    let has_content = f.has("content");
    f.finish()?;
    let m = NewMessage {
        role: role.unwrap_or_default(),
        sender_id: sender_id.unwrap_or_default(),
        // A `content` key present but not a string was rejected above.
        content: if has_content {
            Some(content.unwrap_or_default())
        } else {
            None
        },
        streaming,
        trace,
    };
    Ok(created(store(&st).create_message(&id, m).await?))
}

pub async fn list(
    _: Read,
    req: HttpRequest,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let s = store(&st);
    let limit = query_int(&req, "limit", 50, 1, 200)?;
    let cursor = query(&req, "cursor").filter(|c| !c.is_empty());
    Ok(ok(s.list_messages(&id, limit, cursor).await?))
}

pub async fn chunk(
    _: Write,
    req: HttpRequest,
    st: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let mut f = write_body(&req, &st, payload).await?;
    let delta = f.req_str("deltaText", 1);
    f.finish()?;
    Ok(ok(store(&st)
        .append_chunk(&id, delta.unwrap_or_default())
        .await?))
}

pub async fn complete(
    _: Write,
    req: HttpRequest,
    st: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let mut f = write_body(&req, &st, payload).await?;
    let final_text = f.opt_str("finalText");
    let trace = f.opt_object("trace");
    f.finish()?;
    Ok(ok(store(&st)
        .complete_stream(&id, final_text, trace)
        .await?))
}

pub async fn cancel(
    _: Write,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let s = store(&st);
    Ok(ok(s.cancel_message(&id).await?))
}

pub async fn cancel_streaming(
    _: Write,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let s = store(&st);
    let ids = s.cancel_streaming(&id).await?;
    Ok(ok(json!({ "cancelledMessageIds": ids })))
}

pub async fn typing(
    _: Write,
    req: HttpRequest,
    st: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let mut f = write_body(&req, &st, payload).await?;
    let agent = f.req_str("agentId", 1);
    f.finish()?;
    store(&st).typing(&id, &agent.unwrap_or_default()).await?;
    Ok(no_content())
}

pub async fn user_typing(
    _: Write,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let s = store(&st);
    s.user_typing(&id).await?;
    Ok(no_content())
}
