//! Everything HTTP: the routes of every API family, their envelopes and key checks, SSE, and the
//! state handlers share. Route files mirror URL roots:
//!
//! - [`supervisor`]: `/start`, `/stop`, `/ping`, `/list`, `/graphs`, `/health` (TEN envelope).
//! - [`token`]: `POST /token/generate` (TEN's Agora token route).
//! - [`api`]: `/api/v1/...` (chats, messages, requests, dispatch, events, config).
//! - [`agents`]: `/agents/...` and `/teams/...` (the chat API).
//! - [`v1_agents`]: `/v1/agents/...` (the agent messages API).
//! - [`conversations`], [`conv_messages`], [`conv_stream`], [`conv_events`]: `/conversations`,
//!   `/messages/:id`, `/stream/:id`, `/events` (the conversations API).
//! - [`ops`]: `/ops/...`, agentd's own operator routes (worker feed, logs, dispatch queue).
//! - [`console`]: `/console`, the web console's static files.
//! - [`metrics`]: `/metrics` (the Prometheus scrape) and the middleware counting every request.
//! - [`openapi`]: `/openapi.json` (the OpenAPI document of every route) and `/docs` (its page).

pub mod access;
pub mod access_log;
pub mod agents;
pub mod api;
pub mod auth;
pub mod console;
pub mod conv_events;
mod conv_feed;
pub mod conv_messages;
pub mod conv_stream;
pub mod conversations;
pub mod extract;
pub mod fd_error;
pub mod method;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod slow;
pub mod sse;
pub mod state;
pub mod supervisor;
pub mod ten_error;
pub mod token;
pub mod v1_agents;

use actix_web::web;

pub use self::state::AppState;

/// Mounts every route; unknown paths get the TEN 404 (the `/api/v1` scope answers its own).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::scope("/api/v1").configure(api::configure))
        .configure(supervisor::configure)
        .configure(token::configure)
        .configure(agents::configure)
        .configure(v1_agents::configure)
        .configure(conversations::configure)
        .configure(conv_messages::configure)
        .configure(conv_stream::configure)
        .configure(conv_events::configure)
        .configure(ops::configure)
        .configure(console::configure)
        .configure(metrics::configure)
        .configure(openapi::configure)
        .default_service(web::to(supervisor::not_found));
}
