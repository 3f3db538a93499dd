//! `/messages/:conversationId`: post and page through a conversation's messages, read receipts,
//! and the delivery logs of its bots.

use super::fd_error::{Body, ConvError};
use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::conversations::{exists, internal, str_list, Key, Reply, INVALID};
use super::fd_error::{object, optional_text, required_text, FdError, MAX_TEXT};
use super::state::AppState;
use crate::store::conversations::NewConvMessage;

const TYPES: &[&str] = &["text", "image", "file", "ping"];

pub fn configure(cfg: &mut web::ServiceConfig) {
    // One resource per path, so a known path with another method is a 405 with `Allow`.
    cfg.service(
        web::resource("/messages/{id}")
            .route(web::post().to(post_message))
            .route(web::get().to(get_messages)),
    )
    .service(web::resource("/messages/{id}/read").route(web::post().to(mark_read)))
    .service(web::resource("/messages/{id}/deliverylogs").route(web::get().to(delivery_logs)));
}

fn invalid(field: &str, message: impl Into<String>) -> FdError {
    FdError::invalid(INVALID, field, message)
}

async fn post_message(
    _: Key,
    st: web::Data<AppState>,
    path: web::Path<String>,
    body: Body<ConvError>,
) -> Reply {
    let conv = path.into_inner();
    exists(&st, &conv).await?;
    let obj = object(&body, INVALID)?;
    let from = required_text(&obj, "from", INVALID, 200)?;
    let to = optional_text(&obj, "to", INVALID)?;
    let kind = optional_text(&obj, "type", INVALID)?.unwrap_or_else(|| "text".into());
    if !TYPES.contains(&kind.as_str()) {
        return Err(invalid("type", format!("type must be one of {}", TYPES.join(", "))).into());
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
                    return Err(invalid(
                        &format!("attachments[{i}].url"),
                        "each attachment needs a non-empty url (attachments are kept as references)",
                    )
                    .into());
                }
            }
            Value::Array(a.clone())
        }
        Some(_) => return Err(invalid("attachments", "must be an array").into()),
    };
    let content = match obj.get("content") {
        Some(Value::String(s)) if s.len() <= MAX_TEXT => s.clone(),
        Some(Value::String(_)) => {
            return Err(invalid("content", format!("must be at most {MAX_TEXT} bytes")).into())
        }
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(invalid("content", "must be a string").into()),
    };
    if kind == "text" && content.trim().is_empty() {
        return Err(invalid("content", "a text message needs content").into());
    }
    if (kind == "image" || kind == "file")
        && content.trim().is_empty()
        && attachments.as_array().is_some_and(Vec::is_empty)
    {
        return Err(invalid(
            "attachments",
            "an image or file message needs an attachment or content",
        )
        .into());
    }
    let msg = st
        .frontdoor
        .post_to_conversation(NewConvMessage {
            conversation: conv,
            from,
            to,
            kind,
            content,
            attachments,
        })
        .await?;
    Ok(HttpResponse::Created().json(msg))
}

async fn get_messages(
    _: Key,
    req: HttpRequest,
    st: web::Data<AppState>,
    path: web::Path<String>,
) -> Reply {
    let conv = path.into_inner();
    exists(&st, &conv).await?;
    let q: HashMap<String, String> = form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let limit = match q.get("limit") {
        None => 50,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=200).contains(&n) => n,
            _ => return Err(invalid("limit", "limit must be a whole number from 1 to 200").into()),
        },
    };
    let page = st
        .store
        .conversation_messages(&conv, q.get("before").cloned(), limit)
        .await
        .map_err(internal)?
        .ok_or_else(|| invalid("before", "no such message in this conversation"))?;
    let mut resp = HttpResponse::Ok();
    resp.insert_header(("x-has-more", page.has_more.to_string()));
    if let (true, Some(first)) = (page.has_more, page.messages.first()) {
        resp.insert_header((
            "x-next-before",
            first["id"].as_str().unwrap_or_default().to_string(),
        ));
    }
    Ok(resp.json(page.messages))
}

async fn mark_read(
    _: Key,
    st: web::Data<AppState>,
    path: web::Path<String>,
    body: Body<ConvError>,
) -> Reply {
    let conv = path.into_inner();
    exists(&st, &conv).await?;
    let obj = object(&body, INVALID)?;
    let participant = required_text(&obj, "participant", INVALID, 200)?;
    let ids = str_list(obj.get("messageIds"), "messageIds")?;
    let marked = st
        .store
        .mark_conversation_read(&conv, participant, ids)
        .await
        .map_err(internal)?;
    Ok(HttpResponse::Ok().json(json!({"conversationId": conv, "marked": marked})))
}

async fn delivery_logs(_: Key, st: web::Data<AppState>, path: web::Path<String>) -> Reply {
    let conv = path.into_inner();
    exists(&st, &conv).await?;
    let logs = st.store.delivery_logs(&conv).await.map_err(internal)?;
    Ok(HttpResponse::Ok().json(json!({"conversationId": conv, "logs": logs})))
}
