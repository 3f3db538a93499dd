//! The first half of a start: validate what was asked (the start fields' limits, which keys the
//! request may override), build the worker's property document, check its depth, its
//! placeholders against the environment the worker will have and, for the built-in worker, its
//! addons' properties, and reserve the channel and worker slots at once. Nothing is written or
//! spawned here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::{Map, Value};

use super::errors::{ChannelError, StartError};
use super::logs::LogSink;
use super::plan::Plan;
use super::prewarm::{self, Warm};
use super::registry::{Limits, PingClock, WorkerInfo, WorkerState};
use super::spawn::Parts;
use super::{document, fields, overrides};
use super::{Inner, Supervisor};
use crate::catalog::{Graph, Timeout};
use crate::contract::document::{depth, MAX_DEPTH};
use crate::contract::{addons, env, placeholder};

/// Longest accepted channel name, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 128;

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
    /// More environment for the child (cannot override agentd's own, [`env::OWN`]).
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
    /// Done ahead by [`Supervisor::prepare`]: given back if the reservation is dropped unlaunched.
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

/// Checks a channel name from a request: blank, too long, or with control characters.
pub fn check_channel(channel: &str) -> Result<(), ChannelError> {
    if channel.trim().is_empty() {
        return Err(ChannelError::Blank);
    }
    if channel.len() > MAX_CHANNEL_BYTES {
        return Err(ChannelError::BadParams(format!(
            "channel_name is longer than {MAX_CHANNEL_BYTES} bytes"
        )));
    }
    if channel.chars().any(char::is_control) {
        return Err(ChannelError::BadParams(
            "channel_name contains control characters".into(),
        ));
    }
    Ok(())
}

impl Supervisor {
    /// Validates `spec` and reserves its channel and worker slots; nothing is spawned yet.
    pub fn reserve(&self, spec: StartSpec) -> Result<Reservation, StartError> {
        let inner = &self.inner;
        let settings = &inner.settings;
        if inner.registry.is_shutting_down() {
            return Err(StartError::ShuttingDown);
        }
        check_channel(&spec.channel).map_err(|e| match e {
            ChannelError::Blank => StartError::BlankChannel,
            other => StartError::BadParams(other.to_string()),
        })?;
        fields::check(&spec)?;
        if spec.graph.trim().is_empty() {
            return Err(StartError::BadParams("graph_name is empty".into()));
        }
        let catalog = inner.catalog.current();
        let graph = catalog
            .get(&spec.graph)
            .cloned()
            .ok_or_else(|| StartError::UnknownGraph {
                graph: spec.graph.clone(),
                available: catalog.graphs().iter().map(|g| g.name.clone()).collect(),
            })?;
        let timeout = match spec.timeout {
            None | Some(0) => graph
                .runtime
                .timeout
                .unwrap_or(Timeout::Seconds(settings.worker_quit_timeout_secs)),
            Some(-1) => Timeout::Never,
            Some(n) if n > 0 => Timeout::Seconds(n as u64),
            Some(n) => return Err(StartError::BadTimeout(n)),
        };
        let builtin = graph.runtime.command.is_none() && settings.worker_command.is_none();
        if builtin {
            check_addons(&graph)?;
        }
        let doc = document::build(&catalog, &graph, &spec)?;
        if let Some(props) = &spec.properties {
            overrides::check(&graph, props)?;
        }
        check_depth(&graph, &doc)?;
        {
            let lookup = worker_env(&spec.extra_env);
            check_placeholders(&graph, &doc, &lookup)?;
            if builtin {
                check_properties(&graph, &doc, &lookup)?;
            }
        }

        let now = SystemTime::now();
        let info = WorkerInfo {
            channel: spec.channel.clone(),
            graph: graph.name.clone(),
            pid: None,
            worker_id: None,
            state: WorkerState::Starting,
            created: now,
            last_ping: now,
            timeout,
            restarts: 0,
            request_id: spec.request_id.clone(),
            chat_id: spec.chat_id.clone(),
            containment: None,
            cgroup: None,
            memory_bytes: None,
            cpu_seconds: None,
            memory_max: None,
        };
        let limits = Limits {
            workers_max: settings.workers_max,
            graph_max: graph.runtime.max_workers,
        };
        let log = Plan::log_sink(settings, &spec.channel);
        let reserved = inner.registry.reserve(info, limits, log.clone())?;
        Ok(Reservation {
            inner: self.inner.clone(),
            generation: reserved.generation,
            pings: reserved.pings,
            log,
            spec,
            graph,
            doc,
            timeout,
            launched: false,
            prepared: None,
        })
    }
}

/// A graph that runs on the built-in worker may only name addons that worker has.
fn check_addons(graph: &Graph) -> Result<(), StartError> {
    match graph
        .addons()
        .into_iter()
        .find(|(_, addon)| !addons::is_known(addon))
    {
        Some((node, addon)) => Err(StartError::UnknownAddon {
            graph: graph.name.clone(),
            node,
            addon,
            known: addons::KNOWN.iter().map(|s| s.to_string()).collect(),
        }),
        None => Ok(()),
    }
}

/// Variables as the worker will see them: agentd's own (always set), the caller's extra ones (the
/// last of a name wins), then agentd's environment.
fn worker_env(extra_env: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
    move |var: &str| {
        if env::is_own(var) {
            return Some(String::new());
        }
        extra_env
            .iter()
            .rev()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(var).ok())
    }
}

/// Every placeholder must have a value in the environment the worker will get.
fn check_placeholders(
    graph: &Graph,
    doc: &Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), StartError> {
    let mut vars: Vec<String> = document::node_properties(doc, graph.layout)
        .into_iter()
        .flat_map(|p| placeholder::missing(p, lookup))
        .collect();
    if vars.is_empty() {
        return Ok(());
    }
    vars.sort();
    vars.dedup();
    Err(StartError::MissingEnv {
        graph: graph.name.clone(),
        vars,
    })
}

/// The document must be no deeper than a worker reads ([`MAX_DEPTH`]). The refusal names the
/// node whose property is too deep (a request's override, as a rule).
fn check_depth(graph: &Graph, doc: &Value) -> Result<(), StartError> {
    let total = depth(doc);
    if total <= MAX_DEPTH {
        return Ok(());
    }
    let room = MAX_DEPTH + 1 - graph.layout.property_depth();
    let key = document::named_properties(doc, graph.layout)
        .into_iter()
        .find(|(_, p)| depth(p) > room)
        .map(|(node, _)| format!("properties.{node}"))
        .unwrap_or_else(|| "graph_name".into());
    Err(StartError::Refused {
        key,
        detail: format!(
            "the worker's property document would nest {total} levels deep; workers read at most \
             {MAX_DEPTH} (a node's property may nest {room})"
        ),
    })
}

/// Every node the built-in worker runs must have properties its addon can read, once the
/// request's overrides are in and the placeholders resolved (in memory only, as the worker will;
/// the error names the key and the expected kind, never the value).
fn check_properties(
    graph: &Graph,
    doc: &Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), StartError> {
    for (node, addon, mut resolved) in document::extension_nodes(doc, graph.layout) {
        if placeholder::resolve(&mut resolved, "", lookup).is_err() {
            continue; // reported by check_placeholders
        }
        addons::check(&addon, &resolved).map_err(|problem| StartError::BadProperty {
            graph: graph.name.clone(),
            node: node.clone(),
            problem,
        })?;
    }
    Ok(())
}
