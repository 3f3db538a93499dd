//! Interactive request routes.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::validate::{fingerprint, query, Fields};
use super::ApiError;
use super::{created, idempotency_key, ok, store, write_body, Read, Result, Write};
use crate::http::state::AppState;
use crate::store::requests::NewRequest;

pub async fn create(
    _: Write,
    req: HttpRequest,
    st: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let mut f = write_body(&req, &st, payload).await?;
    let key = idempotency_key(&req)?;
    let new = read_new_request(&mut f);
    let body = Value::Object(f.obj.clone());
    f.finish()?;
    let Some(new) = new else {
        return Err(ApiError::validation("Request validation failed."));
    };
    let idem = key.map(|k| {
        (
            k,
            fingerprint(&json!({ "chatId": id.as_str(), "body": body })),
        )
    });
    Ok(created(store(&st).create_request(&id, new, idem).await?))
}

pub async fn list(
    _: Read,
    req: HttpRequest,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let s = store(&st);
    let status = query(&req, "status").unwrap_or_else(|| "pending".into());
    if !["pending", "resolved", "cancelled", "all"].contains(&status.as_str()) {
        let mut f = Fields::new(Default::default());
        f.err(
            "status",
            "Invalid enum value. Expected 'pending' | 'resolved' | 'cancelled' | 'all'",
        );
        f.finish()?;
    }
    Ok(ok(s.list_requests(&id, status).await?))
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
    f.opt_str_or_null("body");
    if f.get("config").is_some_and(|c| !c.is_object()) {
        f.err("config", "Expected object");
    }
    if f.get("trace")
        .is_some_and(|c| !c.is_object() && !c.is_null())
    {
        f.err("trace", "Expected object");
    }
    for k in f.obj.keys().cloned().collect::<Vec<_>>() {
        if !["title", "body", "config", "trace"].contains(&k.as_str()) {
            f.err(
                &k,
                "Unrecognized key; only title, body, config and trace can be changed.",
            );
        }
    }
    if f.obj.is_empty() {
        f.form("At least one field must be provided.");
    }
    let obj = f.obj.clone();
    f.finish()?;
    Ok(ok(store(&st).patch_request(&id, obj).await?))
}

pub async fn resolve(
    _: Write,
    req: HttpRequest,
    st: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let f = write_body(&req, &st, payload).await?;
    Ok(ok(store(&st).resolve_request(&id, f.obj).await?))
}

pub async fn cancel(
    _: Write,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let s = store(&st);
    Ok(ok(s.cancel_request(&id).await?))
}
/// Reads the create-request body fields (schema errors are collected in `f`).
pub fn read_new_request(f: &mut Fields) -> Option<NewRequest> {
    let kind = f.req_str("type", 1);
    if let Some(k) = &kind {
        if !["choice", "text_input", "form"].contains(&k.as_str()) {
            f.err(
                "type",
                "Invalid enum value. Expected 'choice' | 'text_input' | 'form'",
            );
        }
    }
    let title = f.req_str("title", 1);
    let body = f.opt_str_or_null("body").flatten();
    let config = match f.get("config") {
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => {
            f.err("config", "Expected object");
            None
        }
        None => {
            f.err("config", "Required");
            None
        }
    };
    let trace = f.opt_object("trace").map(Value::Object);
    Some(NewRequest {
        kind: kind?,
        title: title?,
        body,
        config: config?,
        trace,
    })
}
