//! Interactive request routes.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::{created, idempotency_key, ok, store, write_body, Result};
use crate::api::requests::read_new_request;
use crate::api::validate::{fingerprint, query, Fields};
use crate::api::ApiError;
use crate::state::AppState;

pub async fn create(
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
    req: HttpRequest,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let s = store(&st);
    s.check_read(&req)?;
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
    req: HttpRequest,
    st: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let f = write_body(&req, &st, payload).await?;
    Ok(ok(store(&st).resolve_request(&id, f.obj).await?))
}

pub async fn cancel(
    req: HttpRequest,
    st: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    let s = store(&st);
    s.check_write(&req)?;
    Ok(ok(s.cancel_request(&id).await?))
}
