//! The Opengram-compatible chat and dispatch API under `/api/v1` (issue 3).
//!
//! STUB from the skeleton: the API helper replaces this. Keep `Store::open`, `Store::close`,
//! `Store::chat_for_channel` and `configure`.

use std::path::Path;
use std::sync::Arc;

use actix_web::web;

use crate::catalog::watch::CatalogHandle;
use crate::settings::Settings;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Handle to the SQLite-backed store; cheap to clone.
#[derive(Clone)]
pub struct Store {}

impl Store {
    /// Opens (and migrates) the database at `path`.
    pub async fn open(
        _path: &Path,
        _settings: Arc<Settings>,
        _catalog: CatalogHandle,
    ) -> Result<Store, StoreError> {
        Ok(Store {})
    }

    /// Finds or creates the chat bound to a supervisor channel (agent = the graph).
    pub async fn chat_for_channel(
        &self,
        channel: &str,
        _agent_id: &str,
    ) -> Result<String, StoreError> {
        Ok(format!("chat-{channel}"))
    }

    /// Flushes and closes the database.
    pub async fn close(&self) {}
}

/// Mounts the API routes (the caller puts them under `/api/v1`).
pub fn configure(_cfg: &mut web::ServiceConfig) {}
