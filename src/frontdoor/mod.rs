//! Chat front doors: simple agent chat APIs that existing clients already speak, over the same
//! core as everything else. An agent is a graph, a conversation is a chat, and the agent's worker
//! is started on demand by the supervisor when a message arrives and reaped when idle.
//!
//! - [`chat_api`]: `POST /agents/:id/chat` (+ `/stream`), history, conversations, inbox, teams.
//! - [`agent_messages`]: `POST /v1/agents/:agentId/messages` (+ `/stream`) with per-agent limits.
//! - [`conversations`]: `/conversations`, `/messages/:id`, `/stream/:id`, `/events`, bots.

pub mod agent_messages;
pub mod chat_api;
pub mod conversations;
pub mod core;
pub mod http;
pub mod limits;
pub mod store;

use actix_web::web;

pub use self::core::FrontDoor;
use crate::state::AppState;

/// Mounts the front-door routes at the root.
pub fn configure(cfg: &mut web::ServiceConfig) {
    chat_api::configure(cfg);
    agent_messages::configure(cfg);
    conversations::configure(cfg);
}

/// Starts the front doors' background work (the relay of bot answers into conversations).
pub fn start(state: &AppState) {
    tokio::spawn(conversations::relay(state.clone()));
}
