//! HTTP handlers: thin layers that check access, read and validate the body, and call [`Store`].

mod chats;
mod config;
mod dispatch;
mod events;
mod messages;
mod requests;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::error::ApiError;
use super::validate::{parse_object, read_body, Fields};
use super::Store;
use crate::state::AppState;

pub type Result<T> = std::result::Result<T, ApiError>;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(config::health))
        .route("/config", web::get().to(config::config))
        .route("/events/stream", web::get().to(events::stream))
        .route("/chats", web::post().to(chats::create))
        .route("/chats", web::get().to(chats::list))
        .route(
            "/chats/pending-summary",
            web::get().to(chats::pending_summary),
        )
        .route(
            "/chats/unread-summary",
            web::get().to(chats::unread_summary),
        )
        .route("/chats/{id}", web::get().to(chats::get))
        .route("/chats/{id}", web::patch().to(chats::patch))
        .route("/chats/{id}/archive", web::post().to(chats::archive))
        .route("/chats/{id}/unarchive", web::post().to(chats::unarchive))
        .route("/chats/{id}/mark-read", web::post().to(chats::mark_read))
        .route(
            "/chats/{id}/mark-unread",
            web::post().to(chats::mark_unread),
        )
        .route("/chats/{id}/messages", web::post().to(messages::create))
        .route("/chats/{id}/messages", web::get().to(messages::list))
        .route(
            "/chats/{id}/messages/cancel-streaming",
            web::post().to(messages::cancel_streaming),
        )
        .route("/chats/{id}/typing", web::post().to(messages::typing))
        .route(
            "/chats/{id}/user-typing",
            web::post().to(messages::user_typing),
        )
        .route("/chats/{id}/requests", web::post().to(requests::create))
        .route("/chats/{id}/requests", web::get().to(requests::list))
        .route("/messages/{id}/chunks", web::post().to(messages::chunk))
        .route(
            "/messages/{id}/complete",
            web::post().to(messages::complete),
        )
        .route("/messages/{id}/cancel", web::post().to(messages::cancel))
        .route("/requests/{id}", web::patch().to(requests::patch))
        .route("/requests/{id}/resolve", web::post().to(requests::resolve))
        .route("/requests/{id}/cancel", web::post().to(requests::cancel))
        .route("/dispatch/claim", web::post().to(dispatch::claim))
        .route("/dispatch/claim-many", web::post().to(dispatch::claim_many))
        .route(
            "/dispatch/{id}/heartbeat",
            web::post().to(dispatch::heartbeat),
        )
        .route(
            "/dispatch/{id}/complete",
            web::post().to(dispatch::complete),
        )
        .route("/dispatch/{id}/fail", web::post().to(dispatch::fail))
        .default_service(web::to(not_found));
}

/// Unknown `/api/v1` paths: the JSON envelope (Opengram answers plain text here).
async fn not_found(req: HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    ApiError::not_found(
        format!("No route for {} {}.", req.method(), req.path()),
        Some(json!({ "method": req.method().as_str(), "path": req.path() })),
    )
    .error_response()
}

fn store(st: &web::Data<AppState>) -> &Store {
    &st.store
}

/// Write-route preamble: access check, then the JSON object body as [`Fields`].
async fn write_body(
    req: &HttpRequest,
    st: &web::Data<AppState>,
    payload: web::Payload,
) -> Result<Fields> {
    store(st).check_write(req)?;
    let bytes = read_body(payload, st.settings.max_body_bytes).await?;
    Ok(Fields::new(parse_object(req, &bytes)?))
}

fn created(v: serde_json::Value) -> HttpResponse {
    HttpResponse::Created().json(v)
}

fn ok(v: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok().json(v)
}

fn ok_true() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "ok": true }))
}

fn no_content() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

/// The `Idempotency-Key` header: `None` when absent, 400 when blank.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>> {
    match req.headers().get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let k = v.to_str().unwrap_or("").trim().to_string();
            if k.is_empty() {
                Err(ApiError::field(
                    "Idempotency-Key",
                    "Idempotency-Key cannot be empty.",
                ))
            } else {
                Ok(Some(k))
            }
        }
    }
}
