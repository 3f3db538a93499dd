//! What every request handler shares.

use std::sync::Arc;

use crate::catalog::watch::CatalogHandle;
use crate::frontdoor::FrontDoor;
use crate::settings::Settings;
use crate::store::Store;
use crate::supervisor::Supervisor;

use super::access::WriteLimiter;
use super::sse::{StreamLimits, StreamPermit, StreamRefused};

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
    /// The caps on open event streams, shared by every family's streams.
    pub streams: Arc<StreamLimits>,
    /// This node among several on one PostgreSQL database; `None` on a single node.
    pub cluster: Option<crate::cluster::Cluster>,
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
            streams: Arc::new(StreamLimits::new(
                settings.sse_max_per_client,
                settings.sse_max_total,
            )),
            settings,
            catalog,
            supervisor,
            store,
            frontdoor,
            cluster: None,
        }
    }
}

impl AppState {
    /// Counts a new event stream of the request's client (its IP), or refuses it.
    pub fn admit_stream(
        &self,
        req: &actix_web::HttpRequest,
    ) -> Result<StreamPermit, StreamRefused> {
        let client = super::access::client_ip(req, self.settings.trust_proxy_headers);
        Ok(self.streams.admit(client)?.watching(req))
    }
}
