//! What a store operation can fail with, in domain terms: each API family maps it to its own
//! envelope and status.

use serde_json::{json, Value};

use super::sql::error::{DbError, DbErrorKind};

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
    Database(DbError),
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
                DbErrorKind::Connection => Some(Storage::Disconnected),
                DbErrorKind::Unique | DbErrorKind::Invalid | DbErrorKind::Other => None,
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
    /// The database server (PostgreSQL) cannot be reached, even after one reconnect (HTTP 503).
    /// A write whose commit was cut off may or may not have happened: the client retries with
    /// the same `Idempotency-Key`.
    Disconnected,
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
            Storage::Disconnected => {
                "agentd cannot reach its database server: the request was not carried out, or \
                 (a write cut off at its commit) its outcome is unknown; retry with the same \
                 Idempotency-Key. agentd reconnects by itself."
            }
        }
    }

    /// The HTTP status: 507 Insufficient Storage for a full disk, else 503.
    pub fn status(self) -> u16 {
        match self {
            Storage::Full => 507,
            Storage::ReadOnly | Storage::Unreachable | Storage::Disconnected => 503,
        }
    }

    /// The machine-readable code of the JSON envelopes.
    pub fn code(self) -> &'static str {
        match self {
            Storage::Full => "INSUFFICIENT_STORAGE",
            Storage::ReadOnly | Storage::Unreachable | Storage::Disconnected => {
                "STORAGE_UNAVAILABLE"
            }
        }
    }
}

impl From<DbError> for StoreError {
    /// A value the database refuses is the input's fault; anything else is the database's.
    fn from(e: DbError) -> StoreError {
        match e.kind {
            DbErrorKind::Invalid => StoreError::validation(e.message),
            _ => StoreError::Database(e),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Database(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kind: DbErrorKind) -> StoreError {
        StoreError::from(DbError {
            kind,
            message: "x".into(),
        })
    }

    #[test]
    fn storage_failures_are_503_or_507_and_input_failures_are_not_storage() {
        let lost = failed(DbErrorKind::Connection).storage();
        assert_eq!(lost, Some(Storage::Disconnected));
        assert_eq!(lost.map(Storage::status), Some(503));
        assert_eq!(
            failed(DbErrorKind::Full).storage().map(Storage::status),
            Some(507)
        );
        assert_eq!(failed(DbErrorKind::Unique).storage(), None);
        assert!(matches!(
            failed(DbErrorKind::Invalid),
            StoreError::Validation { .. }
        ));
    }
}
