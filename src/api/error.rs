//! The API's one error type and its mapping to the `{"error":{code,message,details}}` envelope.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

/// Everything an API call or a store service call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: schema failure, service rule, or a request in the wrong state.
    #[error("{message}")]
    Validation {
        message: String,
        details: Option<Value>,
    },
    /// 400: the body is not JSON.
    #[error("Malformed JSON in request body")]
    MalformedJson,
    /// 401.
    #[error("Missing or invalid instance secret.")]
    Unauthorized,
    /// 404.
    #[error("{message}")]
    NotFound {
        message: String,
        details: Option<Value>,
    },
    /// 409.
    #[error("{message}")]
    Conflict {
        message: String,
        details: Option<Value>,
    },
    /// 413.
    #[error("Request body is too large.")]
    PayloadTooLarge,
    /// 429, with `Retry-After` in whole seconds.
    #[error("Write rate limit exceeded.")]
    RateLimited { retry_after_secs: u64 },
    /// 500: the database failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// 500: anything else unexpected.
    #[error("internal: {0}")]
    Internal(String),
}

/// The name the skeleton's interfaces use for store failures.
pub type StoreError = ApiError;

impl ApiError {
    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::Validation {
            message: message.into(),
            details: None,
        }
    }

    /// A service-level rule on one field: `details.field` names it.
    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Validation {
            message: message.into(),
            details: Some(json!({ "field": field })),
        }
    }

    pub fn not_found(message: impl Into<String>, details: Option<Value>) -> ApiError {
        ApiError::NotFound {
            message: message.into(),
            details,
        }
    }

    pub fn conflict(message: impl Into<String>, details: Option<Value>) -> ApiError {
        ApiError::Conflict {
            message: message.into(),
            details,
        }
    }

    pub fn chat_not_found(chat_id: &str) -> ApiError {
        ApiError::not_found("Chat not found.", Some(json!({ "chatId": chat_id })))
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation { .. } | ApiError::MalformedJson => "VALIDATION_ERROR",
            ApiError::Unauthorized => "UNAUTHORIZED",
            ApiError::NotFound { .. } => "NOT_FOUND",
            ApiError::Conflict { .. } => "CONFLICT",
            ApiError::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::Sqlite(_) | ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// The envelope body.
    pub fn envelope(&self) -> Value {
        let (message, details) = match self {
            ApiError::Validation { message, details }
            | ApiError::NotFound { message, details }
            | ApiError::Conflict { message, details } => (message.clone(), details.clone()),
            ApiError::Sqlite(_) | ApiError::Internal(_) => {
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
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation { .. } | ApiError::MalformedJson => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Sqlite(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if matches!(self, ApiError::Sqlite(_) | ApiError::Internal(_)) {
            tracing::error!(error = %self, "api: unexpected error");
        }
        let mut res = HttpResponse::build(self.status_code());
        if let ApiError::RateLimited { retry_after_secs } = self {
            res.insert_header(("Retry-After", retry_after_secs.max(&1).to_string()));
        }
        res.json(self.envelope())
    }
}
