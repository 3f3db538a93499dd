//! What every request handler shares.

use std::sync::Arc;

use crate::catalog::watch::CatalogHandle;
use crate::frontdoor::FrontDoor;
use crate::settings::Settings;
use crate::store::Store;
use crate::supervisor::Supervisor;

use super::access::WriteLimiter;

/// Shared server state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub catalog: CatalogHandle,
    pub supervisor: Supervisor,
    pub store: Store,
    pub frontdoor: Arc<FrontDoor>,
    /// The `/api/v1` write rate limit.
    pub write_limit: Arc<WriteLimiter>,
}

impl AppState {
    pub fn new(
        settings: Arc<Settings>,
        catalog: CatalogHandle,
        supervisor: Supervisor,
        store: Store,
        frontdoor: Arc<FrontDoor>,
    ) -> AppState {
        AppState {
            write_limit: Arc::new(WriteLimiter::new(
                settings.write_rate_limit_max,
                settings.write_rate_limit_window_ms,
            )),
            settings,
            catalog,
            supervisor,
            store,
            frontdoor,
        }
    }
}
