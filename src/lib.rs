//! agentd: an agent process supervisor with a TEN-compatible start/stop API, an
//! Opengram-compatible chat and dispatch API, a built-in agent worker, and chat front doors.
//!
//! Layers, each depending only on those before it: `settings` and `catalog`; `store` (SQLite)
//! and `supervisor` (worker processes); `cluster` (several nodes on one PostgreSQL); `frontdoor` (the chat front doors' service); `http`
//! (every route); `server` (boot and shutdown). `worker` is the built-in agent, run as a child.
//! `observe` (the metrics) sits beside `settings`: every layer may count into it.

pub mod agora;
pub mod catalog;
pub mod cluster;
pub mod contract;
pub mod frontdoor;
pub mod http;
pub mod ids;
pub mod observe;
pub mod server;
pub mod settings;
pub mod store;
pub mod supervisor;
pub mod worker;
