//! agentd: an agent process supervisor with a TEN-compatible start/stop API, an
//! Opengram-compatible chat and dispatch API, a built-in agent worker, and chat front doors.

pub mod agora;
pub mod api;
pub mod auth;
pub mod catalog;
pub mod contract;
pub mod frontdoor;
pub mod server;
pub mod settings;
pub mod state;
pub mod supervisor;
pub mod worker;
