//! What a store operation can fail with, in domain terms: each API family maps it to its own
//! envelope and status.

use serde_json::{json, Value};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The input breaks a rule (schema, service rule, or a resource in the wrong state).
    #[error("{message}")]
    Validation {
        message: String,
        details: Option<Value>,
    },
    /// The resource does not exist.
    #[error("{message}")]
    NotFound {
        message: String,
        details: Option<Value>,
    },
    /// The resource exists but the operation clashes with its state.
    #[error("{message}")]
    Conflict {
        message: String,
        details: Option<Value>,
    },
    /// The database failed.
    #[error("database: {0}")]
    Database(super::sql::DbError),
    /// Anything else unexpected (a thread gone, a task panicked).
    #[error("internal: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn validation(message: impl Into<String>) -> StoreError {
        StoreError::Validation {
            message: message.into(),
            details: None,
        }
    }

    /// A rule on one field: `details.field` names it.
    pub fn field(field: &str, message: impl Into<String>) -> StoreError {
        StoreError::Validation {
            message: message.into(),
            details: Some(json!({ "field": field })),
        }
    }

    pub fn not_found(message: impl Into<String>, details: Option<Value>) -> StoreError {
        StoreError::NotFound {
            message: message.into(),
            details,
        }
    }

    pub fn conflict(message: impl Into<String>, details: Option<Value>) -> StoreError {
        StoreError::Conflict {
            message: message.into(),
            details,
        }
    }

    pub fn chat_not_found(chat_id: &str) -> StoreError {
        StoreError::not_found("Chat not found.", Some(json!({ "chatId": chat_id })))
    }

    /// True for failures of the store itself rather than of the input.
    pub fn is_internal(&self) -> bool {
        matches!(self, StoreError::Database(_) | StoreError::Internal(_))
    }
}

impl From<super::sql::DbError> for StoreError {
    /// A value the database refuses is the input's fault; anything else is the database's.
    fn from(e: super::sql::DbError) -> StoreError {
        match e.kind {
            super::sql::DbErrorKind::Invalid => StoreError::validation(e.message),
            _ => StoreError::Database(e),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Database(e.into())
    }
}
