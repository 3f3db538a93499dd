//! The front doors' errors and their envelopes: the chat API and the conversations API answer
//! `{"error":{code,message,details?}}`, the agent messages API `{"success":false,"error":{...}}`
//! with its rate-limit headers. Each family has its own error type and `ResponseError`.

use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use serde_json::{json, Map, Value};

use super::auth::Accept;
use super::extract::{has_key, read_body, BodyError, Guard};
use super::state::AppState;
use crate::frontdoor::limits::Quota;
use crate::frontdoor::AskError;

/// Largest message text the front doors accept.
pub const MAX_TEXT: usize = 64 * 1024;

/// A front-door error: status, code, message, optional details.
#[derive(Debug)]
pub struct FdError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl FdError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> FdError {
        FdError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn details(mut self, details: Value) -> FdError {
        self.details = Some(details);
        self
    }

    /// A 400 naming the field and why.
    pub fn invalid(code: &'static str, field: &str, message: impl Into<String>) -> FdError {
        let message = message.into();
        FdError::new(StatusCode::BAD_REQUEST, code, message.clone())
            .details(json!({"field": field, "reason": message}))
    }

    /// 507 or 503: the storage cannot be written; nothing was kept.
    pub fn storage(storage: crate::store::Storage) -> FdError {
        let status =
            StatusCode::from_u16(storage.status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        FdError::new(status, storage.code(), storage.message())
    }

    /// 429 or 503: too many event streams open (with `Retry-After` added by the family).
    pub fn streams(refused: super::sse::StreamRefused) -> FdError {
        FdError::new(refused.status(), refused.code(), refused.to_string())
    }

    fn unauthorized() -> FdError {
        FdError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            super::auth::UNAUTHORIZED,
        )
    }

    /// `{"code","message","details?"}`.
    pub fn error_json(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.details {
            error["details"] = d.clone();
        }
        error
    }
}

impl std::fmt::Display for FdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<AskError> for FdError {
    fn from(e: AskError) -> FdError {
        let msg = e.to_string();
        match e {
            AskError::AgentNotFound(id) => FdError::new(
                StatusCode::NOT_FOUND,
                "AGENT_NOT_FOUND",
                format!("Agent with ID '{id}' not found"),
            ),
            AskError::Unavailable { reason, .. } => FdError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "AGENT_UNAVAILABLE",
                "Agent is currently unavailable",
            )
            .details(json!({"status": "error", "reason": reason, "messageKept": true})),
            AskError::Failed { reason, .. } => FdError::new(
                StatusCode::BAD_GATEWAY,
                "AGENT_FAILED",
                "The agent failed to answer",
            )
            .details(json!({"reason": reason})),
            AskError::Timeout { .. } => {
                FdError::new(StatusCode::GATEWAY_TIMEOUT, "AGENT_TIMEOUT", msg)
            }
            AskError::ShuttingDown => {
                FdError::new(StatusCode::SERVICE_UNAVAILABLE, "SHUTTING_DOWN", msg)
            }
            AskError::Storage(storage) => FdError::storage(storage),
            AskError::Internal(_) => {
                FdError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", msg)
            }
        }
    }
}

/// Parses a JSON object body (an empty body is `{}`); failures use `invalid_code`.
pub fn object(body: &[u8], invalid_code: &'static str) -> Result<Map<String, Value>, FdError> {
    match super::extract::parse_json::<Value>(body) {
        Ok(None) => Ok(Map::new()),
        Ok(Some(Value::Object(m))) => Ok(m),
        Ok(Some(_)) => Err(FdError::new(
            StatusCode::BAD_REQUEST,
            invalid_code,
            "The request body must be a JSON object",
        )),
        Err(e) => Err(FdError::new(
            StatusCode::BAD_REQUEST,
            invalid_code,
            format!("Malformed JSON in request body: {e}"),
        )),
    }
}

/// A required, non-blank string field of at most `max_len` bytes.
pub fn required_text(
    obj: &Map<String, Value>,
    field: &str,
    code: &'static str,
    max_len: usize,
) -> Result<String, FdError> {
    match obj.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            if s.len() > max_len {
                Err(FdError::invalid(
                    code,
                    field,
                    format!("Field must be at most {max_len} bytes"),
                ))
            } else {
                Ok(s.clone())
            }
        }
        Some(Value::String(_)) => Err(FdError::invalid(code, field, "Field cannot be empty")),
        None | Some(Value::Null) => Err(FdError::invalid(
            code,
            field,
            format!("Field '{field}' is required"),
        )),
        Some(_) => Err(FdError::invalid(code, field, "Field must be a string")),
    }
}

/// An optional string field (`null` counts as absent).
pub fn optional_text(
    obj: &Map<String, Value>,
    field: &str,
    code: &'static str,
) -> Result<Option<String>, FdError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(FdError::invalid(code, field, "Field must be a string")),
    }
}

/// Which front-door family a request body belongs to: how its refusals are answered.
pub trait BodyFamily {
    fn refuse(req: &HttpRequest, e: FdError) -> actix_web::Error;
}

impl BodyFamily for ChatError {
    fn refuse(_: &HttpRequest, e: FdError) -> actix_web::Error {
        ChatError(e).into()
    }
}

impl BodyFamily for ConvError {
    fn refuse(_: &HttpRequest, e: FdError) -> actix_web::Error {
        ConvError(e).into()
    }
}

impl BodyFamily for V1Error {
    fn refuse(req: &HttpRequest, error: FdError) -> actix_web::Error {
        let agent = req.match_info().get("agent_id").unwrap_or_default();
        match req.app_data::<actix_web::web::Data<AppState>>() {
            Some(st) => V1Error {
                error,
                quota: st.frontdoor.limits.peek(agent),
            }
            .into(),
            None => actix_web::error::ErrorInternalServerError("the server state is missing"),
        }
    }
}

/// A front door's request body, read as every family reads one (at most `MAX_BODY_BYTES`,
/// within `BODY_TIMEOUT_MS`), with its refusals (413, 408) in family `F`'s envelope rather than
/// actix's plain text.
pub struct Body<F>(Bytes, PhantomData<F>);

impl<F> std::ops::Deref for Body<F> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<F: BodyFamily + 'static> FromRequest for Body<F> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move {
            let limit = req
                .app_data::<actix_web::web::Data<AppState>>()
                .map_or(1024 * 1024, |st| st.settings.max_body_bytes);
            read_body(payload, limit)
                .await
                .map(|b| Body(b, PhantomData))
                .map_err(|e| {
                    let e = match e {
                        BodyError::TooLarge(max) => FdError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "PAYLOAD_TOO_LARGE",
                            format!("The request body is larger than {max} bytes"),
                        ),
                        BodyError::TimedOut => FdError::new(
                            StatusCode::REQUEST_TIMEOUT,
                            "REQUEST_TIMEOUT",
                            "The request body did not arrive in time",
                        ),
                        BodyError::Unreadable(why) => FdError::new(
                            StatusCode::BAD_REQUEST,
                            "INVALID_REQUEST",
                            format!("Cannot read the request body: {why}"),
                        ),
                    };
                    F::refuse(&req, e)
                })
        })
    }
}

/// Headers and query token: where the front doors accept the key.
const HEADERS: Accept = Accept {
    bearer: true,
    x_api_key: true,
    query_token: false,
};
/// Streams also take `?token=`, since browsers' EventSource cannot set headers.
const HEADERS_OR_QUERY: Accept = Accept {
    query_token: true,
    ..HEADERS
};

/// An error of the chat API (`/agents/...`, `/teams/...`).
#[derive(Debug)]
pub struct ChatError(pub FdError);

/// An error of the conversations API (`/conversations`, `/messages/:id`, `/stream/:id`,
/// `/events`).
#[derive(Debug)]
pub struct ConvError(pub FdError);

/// An error of the agent messages API, with the agent's quota for its headers.
#[derive(Debug)]
pub struct V1Error {
    pub error: FdError,
    pub quota: Quota,
}

macro_rules! plain_family {
    ($t:ident) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
        impl From<FdError> for $t {
            fn from(e: FdError) -> $t {
                $t(e)
            }
        }
        impl From<AskError> for $t {
            fn from(e: AskError) -> $t {
                $t(e.into())
            }
        }
    };
}
plain_family!(ChatError);
plain_family!(ConvError);

impl ResponseError for ChatError {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.0.status).json(json!({ "error": self.0.error_json() }))
    }
}

impl ResponseError for ConvError {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.0.status);
        if matches!(self.0.code, "TOO_MANY_STREAMS" | "STREAMS_FULL") {
            let wait = super::sse::StreamRefused::RETRY_AFTER_SECS;
            b.insert_header(("retry-after", wait.to_string()));
        }
        b.json(json!({ "error": self.0.error_json() }))
    }
}

/// Adds the `X-RateLimit-*` headers of `q`.
pub fn with_quota(mut b: HttpResponseBuilder, q: Quota) -> HttpResponseBuilder {
    b.insert_header(("x-ratelimit-limit", q.limit.to_string()))
        .insert_header(("x-ratelimit-remaining", q.remaining.to_string()))
        .insert_header(("x-ratelimit-reset", q.reset.to_string()));
    b
}

impl std::fmt::Display for V1Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl ResponseError for V1Error {
    fn status_code(&self) -> StatusCode {
        self.error.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut b = with_quota(HttpResponse::build(self.error.status), self.quota);
        if self.error.status == StatusCode::TOO_MANY_REQUESTS {
            b.insert_header(("retry-after", self.quota.retry_after().to_string()));
        }
        b.json(json!({"success": false, "error": self.error.error_json()}))
    }
}

/// The chat API's key check.
pub struct ChatKey;
impl Guard for ChatKey {
    type Error = ChatError;
    fn check(req: &HttpRequest, st: &AppState) -> Result<(), ChatError> {
        has_key(req, st, HEADERS)
            .then_some(())
            .ok_or_else(|| ChatError(FdError::unauthorized()))
    }
}

/// The conversations API's key check.
pub struct ConvKey;
impl Guard for ConvKey {
    type Error = ConvError;
    fn check(req: &HttpRequest, st: &AppState) -> Result<(), ConvError> {
        has_key(req, st, HEADERS)
            .then_some(())
            .ok_or_else(|| ConvError(FdError::unauthorized()))
    }
}

/// The conversations API's key check on its streams.
pub struct ConvStreamKey;
impl Guard for ConvStreamKey {
    type Error = ConvError;
    fn check(req: &HttpRequest, st: &AppState) -> Result<(), ConvError> {
        has_key(req, st, HEADERS_OR_QUERY)
            .then_some(())
            .ok_or_else(|| ConvError(FdError::unauthorized()))
    }
}

/// The agent messages API's key check; a refusal still reports the agent's quota.
pub struct V1Key;
impl Guard for V1Key {
    type Error = V1Error;
    fn check(req: &HttpRequest, st: &AppState) -> Result<(), V1Error> {
        v1_check(req, st, HEADERS)
    }
}

/// The agent messages API's key check on its `GET` stream, which `EventSource` opens without
/// headers: the key may also come as `?token=`.
pub struct V1StreamKey;
impl Guard for V1StreamKey {
    type Error = V1Error;
    fn check(req: &HttpRequest, st: &AppState) -> Result<(), V1Error> {
        v1_check(req, st, HEADERS_OR_QUERY)
    }
}

fn v1_check(req: &HttpRequest, st: &AppState, accept: Accept) -> Result<(), V1Error> {
    if has_key(req, st, accept) {
        return Ok(());
    }
    let agent = req.match_info().get("agent_id").unwrap_or_default();
    Err(V1Error {
        error: FdError::unauthorized(),
        quota: st.frontdoor.limits.peek(agent),
    })
}
