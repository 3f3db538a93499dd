//! What a store operation can fail with, in domain terms: each API family maps it to its own
//! envelope and status.

use serde_json::{json, Value};

use super::sql::DbErrorKind;

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
    Database(#[from] super::sql::DbError),
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

    /// When the database cannot be written at all (a full disk, a read-only or deleted file):
    /// which of these, so every API family can answer 507 or 503 with a clear message instead
    /// of a bare 500.
    pub fn storage(&self) -> Option<Storage> {
        match self {
            StoreError::Database(e) => match e.kind {
                DbErrorKind::Full => Some(Storage::Full),
                DbErrorKind::ReadOnly => Some(Storage::ReadOnly),
                DbErrorKind::Unreachable => Some(Storage::Unreachable),
                DbErrorKind::Unique | DbErrorKind::Connection | DbErrorKind::Other => None,
            },
            _ => None,
        }
    }
}

/// Why nothing can be written: the storage, not the request, is at fault. Reads keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// The filesystem holding `DATA_DIR` is full (HTTP 507). Writes resume by themselves once
    /// space is freed.
    Full,
    /// The database file, its directory or the filesystem is read-only (HTTP 503).
    ReadOnly,
    /// The database file was deleted or replaced while agentd ran, or cannot be read (HTTP 503).
    Unreachable,
}

impl Storage {
    /// The message every API family sends (the cause itself goes to the log).
    pub fn message(self) -> &'static str {
        match self {
            Storage::Full => {
                "The disk holding agentd's data is full: nothing was written. Reads still work; \
                 writes resume by themselves once space is freed."
            }
            Storage::ReadOnly => {
                "agentd's database cannot be written (the file or its filesystem is read-only): \
                 nothing was written. Reads still work."
            }
            Storage::Unreachable => {
                "agentd's database file is gone or unreadable (deleted or replaced while agentd \
                 ran?): nothing was written. Restart agentd once it is back."
            }
        }
    }

    /// The HTTP status: 507 Insufficient Storage for a full disk, else 503.
    pub fn status(self) -> u16 {
        match self {
            Storage::Full => 507,
            Storage::ReadOnly | Storage::Unreachable => 503,
        }
    }

    /// The machine-readable code of the JSON envelopes.
    pub fn code(self) -> &'static str {
        match self {
            Storage::Full => "INSUFFICIENT_STORAGE",
            Storage::ReadOnly | Storage::Unreachable => "STORAGE_UNAVAILABLE",
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Database(e.into())
    }
}
