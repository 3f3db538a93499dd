//! The supervisor: starts, pings, stops and reaps agent worker processes (issue 2).
//!
//! STUB from the skeleton: the supervisor helper replaces this file. Keep the public items used
//! by `server.rs` (`Supervisor::new`, `shutdown`, `kill_all_now`, `routes::configure`,
//! `routes::not_found`).

pub mod routes;

use std::sync::Arc;

use crate::catalog::watch::CatalogHandle;
use crate::settings::Settings;

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Cheap handle to the supervisor.
#[derive(Clone)]
pub struct Supervisor {
    #[allow(dead_code)]
    inner: Arc<Inner>,
}

struct Inner {
    _settings: Arc<Settings>,
    _catalog: CatalogHandle,
    _base_url: String,
}

impl Supervisor {
    /// Creates the supervisor; kills leftover worker groups recorded in `DATA_DIR`.
    pub async fn new(
        settings: Arc<Settings>,
        catalog: CatalogHandle,
        base_url: String,
    ) -> Result<Supervisor, SupervisorError> {
        Ok(Supervisor {
            inner: Arc::new(Inner {
                _settings: settings,
                _catalog: catalog,
                _base_url: base_url,
            }),
        })
    }

    /// Stops every worker in parallel with the grace period.
    pub async fn shutdown(&self) {}

    /// Kills every worker's process group at once.
    pub fn kill_all_now(&self) {}
}
