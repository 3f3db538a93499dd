//! The Opengram-compatible chat and dispatch API under `/api/v1`: thin handlers that check
//! access, read and validate the body, and call [`Store`].

mod chats;
mod config;
mod dispatch;
pub mod error;
mod events;
mod messages;
mod requests;
mod validate;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

pub use self::error::ApiError;
use self::validate::{parse_object, read_body, Fields};
use super::auth::Accept;
use super::extract::{has_key, Guard, Keyed};
use super::state::AppState;
use crate::store::Store;

pub type Result<T> = std::result::Result<T, ApiError>;

/// Bearer and `?token=` as in the reference; `x-api-key` too, like the supervisor routes.
const ACCEPT: Accept = Accept {
    bearer: true,
    x_api_key: true,
    query_token: true,
};

/// Read routes: need the key (when one is set) unless `READS_REQUIRE_KEY=false`.
pub struct ReadKey;
impl Guard for ReadKey {
    type Error = ApiError;
    fn check(req: &HttpRequest, st: &AppState) -> Result<()> {
        if st.settings.reads_require_key && !has_key(req, st, ACCEPT) {
            return Err(ApiError::Unauthorized);
        }
        Ok(())
    }
}

/// The event stream: always gated when a key is set.
pub struct StreamKey;
impl Guard for StreamKey {
    type Error = ApiError;
    fn check(req: &HttpRequest, st: &AppState) -> Result<()> {
        if !has_key(req, st, ACCEPT) {
            return Err(ApiError::Unauthorized);
        }
        Ok(())
    }
}

/// Write routes: the key first (rejected calls use no budget), then the write rate limit, which
/// agentd's own workers are not held to.
pub struct WriteKey;
impl Guard for WriteKey {
    type Error = ApiError;
    fn check(req: &HttpRequest, st: &AppState) -> Result<()> {
        if !has_key(req, st, ACCEPT) {
            return Err(ApiError::Unauthorized);
        }
        super::access::count_write(req, &st.settings, &st.write_limit)
            .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })
    }
}

type Read = Keyed<ReadKey>;
type Write = Keyed<WriteKey>;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Nested scopes: a request is matched against a few patterns, not against every route of the
    // API in turn. A known path with another method is a 405 with `Allow` (see `res`).
    cfg.service(res("/health").route(web::get().to(config::health)))
        .service(res("/config").route(web::get().to(config::config)))
        .service(res("/events/stream").route(web::get().to(events::stream)))
        .service(
            scope("/chats")
                .service(
                    res("")
                        .route(web::post().to(chats::create))
                        .route(web::get().to(chats::list)),
                )
                .service(res("/pending-summary").route(web::get().to(chats::pending_summary)))
                .service(res("/unread-summary").route(web::get().to(chats::unread_summary)))
                .service(
                    scope("/{id}")
                        .service(
                            res("")
                                .route(web::get().to(chats::get))
                                .route(web::patch().to(chats::patch)),
                        )
                        .service(res("/archive").route(web::post().to(chats::archive)))
                        .service(res("/unarchive").route(web::post().to(chats::unarchive)))
                        .service(res("/mark-read").route(web::post().to(chats::mark_read)))
                        .service(res("/mark-unread").route(web::post().to(chats::mark_unread)))
                        .service(
                            res("/messages")
                                .route(web::post().to(messages::create))
                                .route(web::get().to(messages::list)),
                        )
                        .service(
                            res("/messages/cancel-streaming")
                                .route(web::post().to(messages::cancel_streaming)),
                        )
                        .service(res("/typing").route(web::post().to(messages::typing)))
                        .service(res("/user-typing").route(web::post().to(messages::user_typing)))
                        .service(
                            res("/requests")
                                .route(web::post().to(requests::create))
                                .route(web::get().to(requests::list)),
                        ),
                ),
        )
        .service(
            scope("/messages/{id}")
                .service(res("/chunks").route(web::post().to(messages::chunk)))
                .service(res("/complete").route(web::post().to(messages::complete)))
                .service(res("/cancel").route(web::post().to(messages::cancel))),
        )
        .service(
            scope("/requests/{id}")
                .service(res("").route(web::patch().to(requests::patch)))
                .service(res("/resolve").route(web::post().to(requests::resolve)))
                .service(res("/cancel").route(web::post().to(requests::cancel))),
        )
        .service(
            scope("/dispatch")
                .service(res("/claim").route(web::post().to(dispatch::claim)))
                .service(res("/claim-many").route(web::post().to(dispatch::claim_many)))
                .service(
                    scope("/{id}")
                        .service(res("/heartbeat").route(web::post().to(dispatch::heartbeat)))
                        .service(res("/complete").route(web::post().to(dispatch::complete)))
                        .service(res("/fail").route(web::post().to(dispatch::fail))),
                ),
        )
        .default_service(web::to(not_found));
}

fn scope(path: &str) -> actix_web::Scope {
    web::scope(path).default_service(web::to(not_found))
}

fn res(path: &str) -> actix_web::Resource {
    // No default service: a known path with another method gets actix's 405 with `Allow`,
    // which `http::method` words in this API's envelope.
    web::resource(path)
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

/// The JSON object body of a write route as [`Fields`] (access was checked by [`Write`]).
async fn write_body(
    req: &HttpRequest,
    st: &web::Data<AppState>,
    payload: web::Payload,
) -> Result<Fields> {
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
