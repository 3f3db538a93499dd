//! What a start carries from its request to its launch: the request itself ([`StartSpec`]), the
//! channel and worker slots reserved for it ([`Reservation`]), and what was prepared ahead for it
//! ([`Prepared`]). [`super::reserve`] makes a reservation; [`super::launch`] consumes it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};

use super::logs::LogSink;
use super::plan::Plan;
use super::prewarm::{self, Warm};
use super::registry::PingClock;
use super::spawn::Parts;
use super::Inner;
use crate::catalog::{Graph, Timeout};
use crate::settings::Settings;

/// What to start: TEN's `/start` body, already typed, plus what agentd's own callers add.
#[derive(Debug, Clone, Default)]
pub struct StartSpec {
    pub channel: String,
    pub graph: String,
    pub request_id: Option<String>,
    /// Per node name, a JSON Merge Patch for that node's `property`.
    pub properties: Option<Map<String, Value>>,
    pub user_uid: Option<u32>,
    pub bot_uid: Option<u32>,
    pub token: Option<String>,
    /// `None` or `Some(0)`: the default; positive: seconds; `-1`: never.
    pub timeout: Option<i64>,
    /// Given to the child as `AGENTD_CHAT_ID`.
    pub chat_id: Option<String>,
    /// More environment for the child (cannot override agentd's own,
    /// [`crate::contract::env::OWN`]).
    pub extra_env: Vec<(String, String)>,
}

/// A reserved channel and worker slot, ready to be launched. Dropping it releases the slot.
pub struct Reservation {
    pub(super) inner: Arc<Inner>,
    pub(super) generation: u64,
    pub(super) pings: Arc<PingClock>,
    /// The worker's log, from the reservation on (so it can be read while the worker starts).
    pub(super) log: Arc<LogSink>,
    pub(super) spec: StartSpec,
    pub(super) graph: Arc<Graph>,
    pub(super) doc: Value,
    pub(super) timeout: Timeout,
    pub(super) launched: bool,
    /// Done ahead by [`super::Supervisor::prepare`]: given back if the reservation is dropped
    /// unlaunched.
    pub(super) prepared: Option<Prepared>,
}

/// The part of a start that needs no chat: the per-worker file, and the prewarmed worker taken
/// for it (if the graph keeps some waiting).
pub(super) struct Prepared {
    pub warm: Option<Warm>,
    /// Made for the first process when no prewarmed worker was taken.
    pub parts: Option<Parts>,
    pub property_path: PathBuf,
    /// When the start began, for its metric.
    pub began: Instant,
}

impl Reservation {
    /// Sets the chat id given to the child as `AGENTD_CHAT_ID`.
    pub fn set_chat_id(&mut self, chat_id: String) {
        self.inner
            .registry
            .update(&self.spec.channel, self.generation, |i| {
                i.chat_id = Some(chat_id.clone())
            });
        self.spec.chat_id = Some(chat_id);
    }

    pub fn channel(&self) -> &str {
        &self.spec.channel
    }

    pub fn graph_name(&self) -> &str {
        &self.graph.name
    }

    /// The plan of this reservation, whose document is at `property_path`; takes its extra
    /// environment.
    pub(super) fn plan(&mut self, settings: &Settings, property_path: PathBuf) -> Plan {
        let mut plan = Plan::for_graph(
            settings,
            &self.graph,
            self.spec.channel.clone(),
            property_path,
            self.log.clone(),
        );
        plan.generation = self.generation;
        plan.request_id = self.spec.request_id.clone();
        plan.chat_id = self.spec.chat_id.clone();
        plan.extra_env = std::mem::take(&mut self.spec.extra_env);
        plan.timeout = self.timeout;
        plan.pings = self.pings.clone();
        plan
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(p) = self.prepared.take() {
            if !self.inner.settings.keep_property_files {
                let _ = std::fs::remove_file(&p.property_path);
            }
            prewarm::discard(&self.inner, p.warm);
            if let Some(parts) = p.parts {
                parts.discard();
            }
        }
        if !self.launched {
            self.inner
                .registry
                .release(&self.spec.channel, self.generation);
            // A start dropped after its claim (its caller went away) gives the channel back; a
            // claim that was refused or never made removes nothing (it names this start).
            if let Some(o) = self.inner.ownership.get() {
                self.inner
                    .rt
                    .spawn(o.released(&self.spec.channel, self.generation));
            }
        }
    }
}
