//! HTTP plumbing shared by the front doors: each family's error envelope, the key check, JSON
//! bodies, and SSE responses.

use std::marker::PhantomData;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use futures_util::Stream;
use serde_json::{json, Map, Value};

use super::core::AskError;
use crate::auth::{is_authorized, Accept};
use crate::state::AppState;

/// Which front door answers, and so which error envelope it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `/agents/:id/...`, `/teams/:id/chat`: `{"error":{"code","message","details?"}}`.
    Chat,
    /// `/v1/agents/:id/messages`: `{"success":false,"error":{"code","message","details?"}}`.
    AgentMessages,
    /// `/conversations`, `/messages/:id`, `/stream/:id`, `/events`: same as `Chat`.
    Conversations,
}

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

    pub fn body(&self, family: Family) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.details {
            error["details"] = d.clone();
        }
        match family {
            Family::AgentMessages => json!({"success": false, "error": error}),
            Family::Chat | Family::Conversations => json!({ "error": error }),
        }
    }

    pub fn respond(&self, family: Family) -> HttpResponse {
        HttpResponse::build(self.status).json(self.body(family))
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
            AskError::Internal(_) => {
                FdError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", msg)
            }
        }
    }
}

/// Which envelope an [`Error`] is answered in.
pub trait Envelope {
    const FAMILY: Family;
}

/// The chat API's envelope.
#[derive(Debug)]
pub struct ChatEnvelope;
impl Envelope for ChatEnvelope {
    const FAMILY: Family = Family::Chat;
}

/// The conversations API's envelope.
#[derive(Debug)]
pub struct ConversationsEnvelope;
impl Envelope for ConversationsEnvelope {
    const FAMILY: Family = Family::Conversations;
}

/// A front-door error as an actix error: the one place it becomes an HTTP answer, in the
/// envelope of family `E`. Handlers return `Result<HttpResponse, Error<E>>` and use `?` on
/// [`FdError`] and [`AskError`].
#[derive(Debug)]
pub struct Error<E>(pub FdError, PhantomData<E>);

impl<E> From<FdError> for Error<E> {
    fn from(e: FdError) -> Self {
        Error(e, PhantomData)
    }
}

impl<E> From<AskError> for Error<E> {
    fn from(e: AskError) -> Self {
        Error(e.into(), PhantomData)
    }
}

impl<E> std::fmt::Display for Error<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.code, self.0.message)
    }
}

impl<E: Envelope + std::fmt::Debug> ResponseError for Error<E> {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }

    fn error_response(&self) -> HttpResponse {
        self.0.respond(E::FAMILY)
    }
}

/// The key check: `Authorization: Bearer <key>` or `x-api-key: <key>` (and `?token=` on streams,
/// since browsers' EventSource cannot set headers).
pub fn check_key(
    req: &HttpRequest,
    state: &AppState,
    allow_query_token: bool,
) -> Result<(), FdError> {
    let accept = Accept {
        bearer: true,
        x_api_key: true,
        query_token: allow_query_token,
    };
    if is_authorized(req, state.settings.api_key.as_deref(), accept) {
        Ok(())
    } else {
        Err(FdError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Missing or invalid API key.",
        ))
    }
}

/// Parses a JSON object body (an empty body is `{}`).
pub fn object(body: &[u8], invalid_code: &'static str) -> Result<Map<String, Value>, FdError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(FdError::new(
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

/// A required, non-blank string field.
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

/// Largest message text the front doors accept.
pub const MAX_TEXT: usize = 64 * 1024;

/// An SSE response over `body`: the right headers, never buffered by proxies.
pub fn sse<S>(body: S) -> HttpResponse
where
    S: Stream<Item = Result<bytes::Bytes, actix_web::Error>> + 'static,
{
    sse_from(HttpResponse::Ok(), body)
}

/// [`sse`] on a response that already has headers of its own.
pub fn sse_from<S>(mut builder: HttpResponseBuilder, body: S) -> HttpResponse
where
    S: Stream<Item = Result<bytes::Bytes, actix_web::Error>> + 'static,
{
    builder
        .insert_header(("content-type", "text/event-stream"))
        .insert_header(("cache-control", "no-cache, no-transform"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body)
}

/// One `data:` frame: JSON, or a string as it is (such as `[DONE]`).
pub fn data_frame(v: &Value) -> bytes::Bytes {
    match v {
        Value::String(s) => bytes::Bytes::from(format!("data: {s}\n\n")),
        v => bytes::Bytes::from(format!("data: {v}\n\n")),
    }
}
