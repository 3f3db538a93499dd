//! What every request handler shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::api::Store;
use crate::catalog::watch::CatalogHandle;
use crate::frontdoor::FrontDoor;
use crate::settings::Settings;
use crate::supervisor::Supervisor;

/// Shared server state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub catalog: CatalogHandle,
    pub supervisor: Supervisor,
    pub store: Store,
    /// Front-door limits and live conversation events.
    pub frontdoor: Arc<FrontDoor>,
    /// `http://<loopback>:<port>`: how agentd's own children reach it.
    pub base_url: Arc<str>,
    shutting_down: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(
        settings: Arc<Settings>,
        catalog: CatalogHandle,
        supervisor: Supervisor,
        store: Store,
        base_url: String,
    ) -> AppState {
        AppState {
            frontdoor: Arc::new(FrontDoor::new(&settings)),
            settings,
            catalog,
            supervisor,
            store,
            base_url: base_url.into(),
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True once a shutdown signal has arrived: new starts are refused with 503.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }
}
