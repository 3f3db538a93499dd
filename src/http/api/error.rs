//! The `/api/v1` family's error and its `{"error":{code,message,details}}` envelope: store
//! failures, plus what only HTTP can get wrong (the key, the body, the write rate).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

use crate::http::sse::StreamRefused;
use crate::store::{Storage, StoreError};

/// Everything an `/api/v1` call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// What the store said (validation, not found, conflict, internal).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 400: the body is not JSON.
    #[error("Malformed JSON in request body")]
    MalformedJson,
    /// 401 (Opengram words it "Missing or invalid instance secret.").
    #[error("{}", crate::http::auth::UNAUTHORIZED)]
    Unauthorized,
    /// 413.
    #[error("Request body is too large.")]
    PayloadTooLarge,
    /// 408: the body did not arrive within `BODY_TIMEOUT_MS`.
    #[error("The request body did not arrive in time.")]
    BodyTimeout,
    /// 429, with `Retry-After` in whole seconds.
    #[error("Write rate limit exceeded.")]
    RateLimited { retry_after_secs: u64 },
    /// 429 (this client's cap) or 503 (the server's): too many event streams open.
    #[error(transparent)]
    Streams(#[from] StreamRefused),
    /// 405: a known path with another method (the reason names the allowed ones).
    #[error("{0}")]
    MethodNotAllowed(String),
}

impl ApiError {
    pub fn validation(message: impl Into<String>) -> ApiError {
        StoreError::validation(message).into()
    }

    /// A rule on one field: `details.field` names it.
    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        StoreError::field(field, message).into()
    }

    pub fn not_found(message: impl Into<String>, details: Option<Value>) -> ApiError {
        StoreError::not_found(message, details).into()
    }

    pub fn code(&self) -> &'static str {
        if let Some(storage) = self.storage() {
            return storage.code();
        }
        match self {
            ApiError::Store(StoreError::Validation { .. }) | ApiError::MalformedJson => {
                "VALIDATION_ERROR"
            }
            ApiError::Unauthorized => "UNAUTHORIZED",
            ApiError::Store(StoreError::NotFound { .. }) => "NOT_FOUND",
            ApiError::Store(StoreError::Conflict { .. }) => "CONFLICT",
            ApiError::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ApiError::BodyTimeout => "REQUEST_TIMEOUT",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::Streams(r) => r.code(),
            ApiError::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            ApiError::Store(StoreError::Database(_) | StoreError::Internal(_)) => "INTERNAL_ERROR",
        }
    }

    /// Whether the storage, not the request, failed (a full disk, a read-only database).
    fn storage(&self) -> Option<Storage> {
        match self {
            ApiError::Store(e) => e.storage(),
            _ => None,
        }
    }

    /// The envelope body.
    pub fn envelope(&self) -> Value {
        let (message, details) = match self {
            ApiError::Store(e) if e.storage().is_some() => (
                e.storage().map(Storage::message).unwrap_or_default().into(),
                None,
            ),
            ApiError::Store(
                StoreError::Validation { message, details }
                | StoreError::NotFound { message, details }
                | StoreError::Conflict { message, details },
            ) => (message.clone(), details.clone()),
            ApiError::Store(StoreError::Database(_) | StoreError::Internal(_)) => {
                ("Unexpected server error.".into(), None)
            }
            other => (other.to_string(), None),
        };
        let mut err = json!({ "code": self.code(), "message": message });
        if let Some(d) = details {
            err["details"] = d;
        }
        json!({ "error": err })
    }

    fn is_internal(&self) -> bool {
        matches!(self, ApiError::Store(e) if e.is_internal())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        if let Some(storage) = self.storage() {
            return StatusCode::from_u16(storage.status())
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        }
        match self {
            ApiError::Store(StoreError::Validation { .. }) | ApiError::MalformedJson => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Store(StoreError::NotFound { .. }) => StatusCode::NOT_FOUND,
            ApiError::Store(StoreError::Conflict { .. }) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Streams(r) => r.status(),
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Store(StoreError::Database(_) | StoreError::Internal(_)) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        if self.storage().is_some() {
            tracing::warn!(error = %self, "api: a write was refused, the storage failed");
        } else if self.is_internal() {
            tracing::error!(error = %self, "api: unexpected error");
        }
        let mut res = HttpResponse::build(self.status_code());
        if let ApiError::RateLimited { retry_after_secs } = self {
            res.insert_header(("Retry-After", retry_after_secs.max(&1).to_string()));
        }
        if let ApiError::Streams(_) = self {
            res.insert_header(("Retry-After", StreamRefused::RETRY_AFTER_SECS.to_string()));
        }
        res.json(self.envelope())
    }
}
