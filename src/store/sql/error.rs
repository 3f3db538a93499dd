//! A failure of the database itself, as both engines report it: the store's errors
//! ([`crate::store::error`]) are built on it, and the engines ([`super::sqlite`],
//! [`super::postgres`]) make it.

/// A failure of the database itself (not of the input).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    pub kind: DbErrorKind,
    pub message: String,
}

/// What kind of database failure, where the store reacts differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// A unique constraint was violated.
    Unique,
    /// The connection is gone (PostgreSQL restarted, network cut).
    Connection,
    /// The disk (or the database's quota) is full.
    Full,
    /// A value the engine cannot store (PostgreSQL's text cannot hold NUL characters).
    Invalid,
    /// The database (its file, its directory or the filesystem) cannot be written.
    ReadOnly,
    /// The database file is gone or cannot be reached (deleted while open, I/O errors).
    Unreachable,
    Other,
}

impl DbError {
    pub fn other(message: impl Into<String>) -> DbError {
        DbError {
            kind: DbErrorKind::Other,
            message: message.into(),
        }
    }
}

pub type DbResult<T> = Result<T, DbError>;
