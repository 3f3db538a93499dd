//! `/conversations`: create, list and read conversations, and switch bots on or off in them.

use super::fd_error::Body;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::extract::{query, Keyed};
use super::fd_error::{object, required_text, ConvError, ConvKey, FdError};
use super::state::AppState;

pub(super) type Reply = Result<HttpResponse, ConvError>;
pub(super) type Key = Keyed<ConvKey>;
pub(super) const INVALID: &str = "INVALID_REQUEST";

pub fn configure(cfg: &mut web::ServiceConfig) {
    // One resource per path, so a known path with another method is a 405 with `Allow`.
    cfg.service(
        web::resource("/conversations")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(web::resource("/conversations/{id}").route(web::get().to(get_one)))
    .service(
        web::resource("/conversations/{id}/bots")
            .route(web::post().to(set_bot))
            .route(web::get().to(get_bots)),
    );
}

pub(super) fn not_found(id: &str) -> FdError {
    FdError::new(
        StatusCode::NOT_FOUND,
        "CONVERSATION_NOT_FOUND",
        format!("Conversation '{id}' not found"),
    )
    .details(json!({"conversationId": id}))
}

/// 404 unless the conversation exists.
pub(super) async fn exists(st: &AppState, id: &str) -> Result<(), FdError> {
    let found = st.store.conversation_exists(id).await.map_err(internal)?;
    if found {
        Ok(())
    } else {
        Err(not_found(id))
    }
}

/// A store failure as a 500 (the cause is logged, not sent), or 507/503 when the storage
/// cannot be written.
pub(super) fn internal(e: crate::store::StoreError) -> FdError {
    if let Some(storage) = e.storage() {
        tracing::warn!(error = %e, "front door: the storage cannot be written");
        return FdError::storage(storage);
    }
    tracing::error!(error = %e, "front door store error");
    FdError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
        "Unexpected server error.",
    )
}

/// A list of distinct non-blank strings of at most 200 characters (`null` or absent: empty).
pub(super) fn str_list(v: Option<&Value>, field: &str) -> Result<Vec<String>, FdError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => {
            let mut out: Vec<String> = Vec::new();
            for x in a {
                match x.as_str() {
                    Some(s) if !s.trim().is_empty() && s.len() <= 200 => {
                        if !out.iter().any(|o| o == s) {
                            out.push(s.to_string());
                        }
                    }
                    _ => {
                        return Err(FdError::invalid(
                            INVALID,
                            field,
                            "must be an array of non-empty strings (at most 200 characters each)",
                        ))
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(FdError::invalid(
            INVALID,
            field,
            "must be an array of strings",
        )),
    }
}

async fn create(_: Key, st: web::Data<AppState>, body: Body<ConvError>) -> Reply {
    let obj = object(&body, INVALID)?;
    let title = required_text(&obj, "title", INVALID, 200)?
        .trim()
        .to_string();
    let participants = str_list(obj.get("participants"), "participants")?;
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(m)) => Value::Object(m.clone()),
        Some(_) => return Err(FdError::invalid(INVALID, "metadata", "must be an object").into()),
    };
    let conv = st
        .store
        .create_conversation(title, participants, metadata)
        .await
        .map_err(internal)?;
    Ok(HttpResponse::Created().json(conv))
}

async fn list(_: Key, req: HttpRequest, st: web::Data<AppState>) -> Reply {
    let list = st
        .store
        .conversations(query(&req, "participant"))
        .await
        .map_err(internal)?;
    Ok(HttpResponse::Ok().json(list))
}

async fn get_one(_: Key, st: web::Data<AppState>, path: web::Path<String>) -> Reply {
    let id = path.into_inner();
    let s = st.store.conversation(&id).await.map_err(internal)?;
    let s = s.ok_or_else(|| not_found(&id))?;
    Ok(HttpResponse::Ok().json(s))
}

async fn set_bot(
    _: Key,
    st: web::Data<AppState>,
    path: web::Path<String>,
    body: Body<ConvError>,
) -> Reply {
    let conv = path.into_inner();
    exists(&st, &conv).await?;
    let obj = object(&body, INVALID)?;
    let bot = required_text(&obj, "bot", INVALID, 200)?;
    let enabled = match obj.get("enabled") {
        Some(Value::Bool(b)) => *b,
        _ => {
            return Err(FdError::invalid(
                INVALID,
                "enabled",
                "Field 'enabled' must be true or false",
            )
            .into())
        }
    };
    st.frontdoor.graph(&bot)?;
    let bots = st
        .store
        .set_conversation_bot(&conv, &bot, enabled)
        .await
        .map_err(internal)?;
    Ok(HttpResponse::Ok()
        .json(json!({"conversationId": conv, "bot": bot, "enabled": enabled, "bots": bots})))
}

async fn get_bots(_: Key, st: web::Data<AppState>, path: web::Path<String>) -> Reply {
    let conv = path.into_inner();
    exists(&st, &conv).await?;
    let bots = st.store.conversation_bots(&conv).await.map_err(internal)?;
    Ok(HttpResponse::Ok().json(json!({"conversationId": conv, "bots": bots})))
}
