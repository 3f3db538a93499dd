//! The first half of a start: validate what was asked (the start fields' limits, which keys the
//! request may override), build the worker's property document, check its depth, its
//! placeholders against the environment the worker will have and, for the built-in worker, its
//! addons' properties, and reserve the channel and worker slots at once. Nothing is written or
//! spawned here.

use std::time::SystemTime;

use serde_json::Value;

use super::errors::{ChannelError, StartError};
use super::plan::Plan;
use super::registry::{Limits, WorkerInfo, WorkerState};
use super::reservation::{Reservation, StartSpec};
use super::Supervisor;
use super::{document, fields, overrides};
use crate::catalog::{Graph, Timeout};
use crate::contract::document::{depth, MAX_DEPTH};
use crate::contract::{addons, env, placeholder};

/// Longest accepted channel name, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 128;

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
