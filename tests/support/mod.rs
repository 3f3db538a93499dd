//! What every integration test and the benchmark share: [`TestApp`] boots the real `agentd` on
//! port 0 in a temp dir of its own, with one helper method per endpoint the tests call.
//!
//! By family: `app` (boot, stop, plain HTTP), `supervisor` (`/start`, `/stop`, ... and what
//! workers leave on disk), `api` (`/api/v1`), `frontdoor` (`/agents`, `/v1/agents`,
//! conversations), `sse` (event streams), `worker` (an `agentd worker` the test runs itself),
//! `process` (child processes and `/proc`), `ops` (`/ops/...` and the console's files) and
//! `wait` (polling with a deadline).
//!
//! A test file says `mod support;`; the benchmark says
//! `#[path = "../tests/support/mod.rs"] mod support;`. Each uses part of it.
#![allow(dead_code, unused_imports)]

pub mod api;
pub mod app;
pub mod database;
pub mod frontdoor;
pub mod ops;
pub mod process;
pub mod sse;
pub mod supervisor;
pub mod wait;
pub mod worker;

pub use api::{assert_error, user_message, Batch};
pub use app::{agentd_bin, fixture, repo_root, Builder, Remains, Reply, TestApp};
pub use database::{on_postgres, TestSchema};
pub use ops::{path_segment, ten_code};
pub use process::{
    cmdline, environ, group_and_session, group_members, pid_alive, pid_exists, rss_kib,
};
pub use sse::{Ev, EventStream};
pub use supervisor::{graph, numbers_after, started, Started};
pub use wait::{wait_for, wait_until, SOON};
pub use worker::WorkerProcess;
