//! The TEN-compatible supervisor routes (`/start`, `/stop`, `/ping`, `/list`, `/graphs`,
//! `/health`): thin layers over [`crate::supervisor::Supervisor`].
//!
//! Every answer is TEN's envelope `{code, msg, data}` with string codes; errors carry honest
//! HTTP statuses (see [`TenError::code_and_status`]).

use std::future::Future;
use std::task::Poll;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Accept;
use super::extract::{has_key, parse_json, read_body, BodyError, Guard, Keyed};
use super::state::AppState;
use super::ten_error::TenError;
use crate::cluster::{Cluster, Forwarded, FORWARDED_HEADER};
use crate::store::StoreError;
use crate::supervisor::{ChannelError, StartError, StartSpec};

/// The supervisor routes take the key from headers only.
pub struct TenKey;
impl Guard for TenKey {
    type Error = TenError;
    fn check(req: &HttpRequest, st: &AppState) -> Result<(), TenError> {
        let accept = Accept {
            bearer: true,
            x_api_key: true,
            query_token: false,
        };
        has_key(req, st, accept)
            .then_some(())
            .ok_or(TenError::Unauthorized)
    }
}
pub(super) type Key = Keyed<TenKey>;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // One resource per path, so a known path with another method is a 405 with `Allow`.
    cfg.service(web::resource("/").route(web::get().to(health)))
        .service(web::resource("/health").route(web::get().to(health)))
        .service(web::resource("/start").route(web::post().to(start)))
        .service(web::resource("/stop").route(web::post().to(stop)))
        .service(web::resource("/ping").route(web::post().to(ping)))
        .service(web::resource("/list").route(web::get().to(list)))
        .service(web::resource("/graphs").route(web::get().to(graphs)));
}

/// A success envelope.
pub(super) fn ok(data: Value) -> HttpResponse {
    HttpResponse::Ok().json(json!({"code": "0", "msg": "success", "data": data}))
}

/// Health, and how workers are contained here (TEN's `data` is `null`; clients ignore it).
async fn health(state: web::Data<AppState>) -> HttpResponse {
    // A load balancer stops sending new work here while the workers are being stopped.
    if state.supervisor.is_shutting_down() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({"code": "503", "msg": "draining", "data": null}));
    }
    let node = state
        .cluster
        .as_ref()
        .map(|c| json!({"id": c.node_id(), "address": c.address(), "fenced": c.is_fenced()}));
    // A fenced node has stopped its workers and refuses starts: send work elsewhere.
    if state.cluster.as_ref().is_some_and(Cluster::is_fenced) {
        return HttpResponse::ServiceUnavailable().json(json!({
            "code": "503",
            "msg": "fenced: this node cannot renew its leases in the database; its workers are stopped",
            "data": {"node": node},
        }));
    }
    let c = state.supervisor.containment();
    HttpResponse::Ok().json(json!({"code": "0", "msg": "ok", "data": {
        "node": node,
        "containment": c.mode.as_str(),
        "cgroup": c.cgroup.as_ref().map(|p| p.display().to_string()),
        "containment_reason": c.reason,
        "limits": {
            "memory_max": if c.memory_max_by_kernel { "kernel" } else { "agentd" },
            "pids_max": if c.pids_max_enforced { "kernel" } else { "not enforced" },
        },
    }}))
}

/// Answer for a route that does not exist.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(json!({
        "code": "404",
        "msg": "not found",
        "data": {"status": 404, "detail": format!("no route for {} {}", req.method(), req.path())}
    }))
}

/// Reads a JSON body of at most `MAX_BODY_BYTES`, whatever its content type.
pub(super) async fn json_body<T: DeserializeOwned>(
    state: &AppState,
    payload: web::Payload,
) -> Result<T, TenError> {
    let body = raw_body(state, payload).await?;
    parse_body(&body)
}

/// Reads the body of at most `MAX_BODY_BYTES` as it came (to forward it unchanged).
async fn raw_body(state: &AppState, payload: web::Payload) -> Result<Bytes, TenError> {
    read_body(payload, state.settings.max_body_bytes)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(max) => TenError::TooLarge(max),
            BodyError::Unreadable(e) => bad(format!("cannot read the request body: {e}")),
            BodyError::TimedOut => TenError::BodyTimeout,
        })
}

/// Parses a body read by [`raw_body`].
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, TenError> {
    match parse_json(body) {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(bad("the request body is empty; send a JSON object".into())),
        Err(e) => Err(bad(format!("invalid JSON body: {e}"))),
    }
}

fn bad(msg: String) -> TenError {
    TenError::Start(StartError::BadParams(msg))
}

/// TEN's `/start` body, read field by field so that a wrong type names its field. Unknown
/// fields are ignored, as TEN does; the fields' limits are the supervisor's
/// ([`crate::supervisor::fields`]).
fn start_spec(body: Value) -> Result<StartSpec, TenError> {
    let Value::Object(mut o) = body else {
        return Err(bad("the body must be a JSON object".into()));
    };
    let mut take = |k: &str| o.remove(k).filter(|v| !v.is_null());
    let wrong = |key: &str, what: &str| -> TenError {
        StartError::Refused {
            key: key.into(),
            detail: format!("must be {what}"),
        }
        .into()
    };
    let text = |key: &str, v: Option<Value>| match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong(key, "a string")),
    };
    let uid = |key: &str, v: Option<Value>| match v {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| wrong(key, "a whole number from 0 to 4294967295")),
    };
    Ok(StartSpec {
        channel: text("channel_name", take("channel_name"))?.unwrap_or_default(),
        graph: text("graph_name", take("graph_name"))?.unwrap_or_default(),
        request_id: text("request_id", take("request_id"))?,
        token: text("token", take("token"))?,
        user_uid: uid("user_uid", take("user_uid"))?,
        bot_uid: uid("bot_uid", take("bot_uid"))?,
        timeout: match take("timeout") {
            None => None,
            Some(v) => Some(
                v.as_i64()
                    .ok_or_else(|| wrong("timeout", "a whole number"))?,
            ),
        },
        properties: match take("properties") {
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(wrong("properties", "an object of node names")),
        },
        chat_id: None,
        extra_env: Vec::new(),
    })
}

#[derive(Deserialize)]
struct ChannelBody {
    #[serde(default)]
    channel_name: Option<String>,
}

async fn start(
    _: Key,
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, TenError> {
    if state.supervisor.is_shutting_down() {
        return Err(StartError::ShuttingDown.into());
    }
    let body = raw_body(&state, payload).await?;
    let spec = start_spec(parse_body(&body)?)?;
    if let Some(cluster) = state.cluster.as_ref().filter(|_| !forwarded(&req)) {
        // A channel running on another live node is busy here too; a new one goes to the node
        // with the most room (this one unless another has more, or that one cannot be reached).
        if cluster
            .owner_elsewhere(&spec.channel)
            .await
            .map_err(unavailable)?
            .is_some()
        {
            return Err(StartError::ChannelExists(spec.channel).into());
        }
        if let Some(node) = cluster.placement().await.map_err(unavailable)? {
            match cluster
                .forward(&node.address, "/start", &headers_of(&req), body)
                .await
            {
                Ok(answer) => return Ok(pass_back(answer)),
                Err(e) => {
                    tracing::warn!(node = %node.id, address = %node.address, error = %e, "cluster: cannot forward /start; starting here")
                }
            }
        }
    }
    // The worker is told its chat's id when it starts. A channel started before has its chat:
    // one read (on SQLite answered on this thread at once; on a database server under way
    // while the request is checked, its slots reserved and the worker prepared). Otherwise the
    // chat is written with an id chosen here, and the answer waits for both: a success means
    // the worker runs and its chat exists. The write (which finds the chat, and changes
    // nothing, when the channel has one) is queued on the writer thread once the worker is on
    // its way, or, where the read waits on the network, at once, to run meanwhile. An error
    // drops the reservation, which gives everything back.
    let channel = spec.channel.clone();
    let found = begin(state.store.channel_chat(&channel)).await;
    let mut reservation = state.supervisor.reserve(spec)?;
    let graph = reservation.graph_name().to_string();
    let new_id = crate::ids::new_id();
    let make = || begin(state.store.chat_for_channel_as(&channel, &graph, &new_id));
    let early = match state.store.reads_wait() {
        true => Some(make().await),
        false => None,
    };
    let (found, prepared) =
        futures_util::future::join(found, state.supervisor.prepare(&mut reservation)).await;
    let found = found.map_err(chat_error)?;
    prepared?;
    if let Some(id) = found {
        reservation.set_chat_id(id);
        let started = state.supervisor.launch(reservation).await?;
        return Ok(ok(serde_json::to_value(started).unwrap_or(Value::Null)));
    }
    reservation.set_chat_id(new_id.clone());
    // The worker is handed its channel (or spawned) before the write goes to the writer.
    let started = begin(state.supervisor.launch(reservation)).await;
    let made = match early {
        Some(made) => made,
        None => make().await,
    };
    let (started, made) = futures_util::future::join(started, made).await;
    let failed = match (made, started) {
        (Ok(id), Ok(w)) if id == new_id => {
            return Ok(ok(serde_json::to_value(w).unwrap_or(Value::Null)))
        }
        // The start's own failure (refused, not ready, ...) is the answer when the chat is fine.
        (Ok(_), Err(e)) => return Err(e.into()),
        (Err(e), Err(_)) => return Err(chat_error(e)),
        // Made by another node of a shared database in between: this worker was told another id.
        (Ok(id), Ok(_)) => StartError::Chat(format!(
            "the channel's chat ({id}) was made elsewhere while this worker started; try again"
        ))
        .into(),
        (Err(e), Ok(_)) => chat_error(e),
    };
    // Nothing half-done stays behind: the worker goes before the error is answered.
    let _ = state
        .supervisor
        .stop(&channel, "/start (its chat could not be made)")
        .await;
    Err(failed)
}

/// Polls `fut` once now, so that the work it hands to another thread (a store read or write) is
/// under way while this request goes on; the returned future finishes it.
async fn begin<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let mut fut = Box::pin(fut);
    let now = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    async move {
        match now {
            Poll::Ready(out) => out,
            Poll::Pending => fut.await,
        }
    }
}

/// A failure to find or make a channel's chat, as `/start` answers it.
fn chat_error(e: StoreError) -> TenError {
    match e.storage() {
        Some(storage) => TenError::Storage(storage),
        None => StartError::Chat(e.to_string()).into(),
    }
}

/// The channel a `/ping` or `/stop` names, and the body as it came (to forward it).
async fn channel_of(state: &AppState, payload: web::Payload) -> Result<(String, Bytes), TenError> {
    let as_channel = |e| match e {
        TenError::Start(StartError::BadParams(m)) => TenError::Channel(ChannelError::BadParams(m)),
        other => other,
    };
    let raw = raw_body(state, payload).await.map_err(as_channel)?;
    let body: ChannelBody = parse_body(&raw).map_err(as_channel)?;
    Ok((body.channel_name.unwrap_or_default(), raw))
}

/// True when another node passed this request on (it is never passed on again).
fn forwarded(req: &HttpRequest) -> bool {
    req.headers().contains_key(FORWARDED_HEADER)
}

/// The request's headers, for a forward (which keeps only the key and the content type).
fn headers_of(req: &HttpRequest) -> Vec<(String, String)> {
    req.headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// Another node's answer, as it came.
fn pass_back(answer: Forwarded) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(answer.status)
        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    let mut res = HttpResponse::build(status);
    if let Some(ct) = answer.content_type {
        res.insert_header((actix_web::http::header::CONTENT_TYPE, ct));
    }
    res.body(answer.body)
}

/// The database cannot tell which node runs a channel.
fn unavailable(e: StoreError) -> TenError {
    match e.storage() {
        Some(storage) => TenError::Storage(storage),
        None => StartError::Unavailable(format!("cannot read the cluster's owners: {e}")).into(),
    }
}

/// For a channel this node does not run: the answer of the live node that runs it, if any.
async fn ask_owner(
    state: &AppState,
    req: &HttpRequest,
    path: &str,
    channel: &str,
    body: Bytes,
) -> Result<Option<HttpResponse>, TenError> {
    let Some(cluster) = state.cluster.as_ref().filter(|_| !forwarded(req)) else {
        return Ok(None);
    };
    let Some(node) = cluster
        .owner_elsewhere(channel)
        .await
        .map_err(unavailable)?
    else {
        return Ok(None);
    };
    match cluster
        .forward(&node.address, path, &headers_of(req), body)
        .await
    {
        Ok(answer) => Ok(Some(pass_back(answer))),
        Err(e) => {
            tracing::warn!(node = %node.id, address = %node.address, error = %e, "cluster: cannot forward {path}");
            Err(TenError::NodeUnreachable {
                channel: channel.to_string(),
                node: node.id,
                reason: e,
            })
        }
    }
}

async fn ping(
    _: Key,
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, TenError> {
    let (channel, body) = channel_of(&state, payload).await?;
    let timeout = match state.supervisor.ping(&channel) {
        Ok(t) => t,
        Err(ChannelError::NotFound(c)) => {
            return match ask_owner(&state, &req, "/ping", &channel, body).await? {
                Some(answer) => Ok(answer),
                None => Err(ChannelError::NotFound(c).into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    Ok(ok(
        json!({"channel_name": channel, "timeout": crate::supervisor::timeout_secs(timeout)}),
    ))
}

async fn stop(
    _: Key,
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, TenError> {
    let (channel, body) = channel_of(&state, payload).await?;
    let graph = match state.supervisor.get(&channel) {
        Some(i) => Some(i.graph),
        None => {
            if let Some(answer) = ask_owner(&state, &req, "/stop", &channel, body).await? {
                return Ok(answer);
            }
            None
        }
    };
    let by = match req.peer_addr() {
        Some(peer) => format!("POST /stop from {}", peer.ip()),
        None => "POST /stop".to_string(),
    };
    let outcome = state.supervisor.stop(&channel, &by).await?;
    let mut data = serde_json::to_value(outcome).unwrap_or(Value::Null);
    if let Some(d) = data.as_object_mut() {
        d.insert("channel_name".into(), channel.into());
        d.insert("graph_name".into(), graph.into());
    }
    Ok(ok(data))
}

async fn list(_: Key, state: web::Data<AppState>) -> Result<HttpResponse, TenError> {
    let Some(cluster) = &state.cluster else {
        let workers: Vec<Value> = state
            .supervisor
            .list()
            .iter()
            .map(|w| w.to_json())
            .collect();
        return Ok(ok(Value::Array(workers)));
    };
    // The whole cluster: this node's workers in full, the others' from their owner rows (one
    // read, whatever the number of nodes; a dead node's rows have expired leases and are not
    // listed). A channel taken over from a dead node counts that restart here too.
    let mut workers: std::collections::BTreeMap<String, Value> = state
        .supervisor
        .list()
        .iter()
        .map(|w| {
            let mut v = w.to_json();
            v["node"] = cluster.node_id().into();
            (w.channel.clone(), v)
        })
        .collect();
    for c in cluster.owned().await.map_err(unavailable)? {
        match workers.get_mut(&c.channel) {
            Some(local) if c.node_id == cluster.node_id() => {
                let here = local["restarts"].as_i64().unwrap_or(0);
                local["restarts"] = (here + c.restarts).into();
            }
            Some(_) => {}
            None if c.node_id == cluster.node_id() => {}
            None => {
                workers.insert(c.channel.clone(), remote_entry(&c));
            }
        }
    }
    Ok(ok(Value::Array(workers.into_values().collect())))
}

/// A `/list` entry of a worker another node runs, from its owner row: what that node does not
/// share (pid, pings, usage) is `null`.
fn remote_entry(c: &crate::store::nodes::OwnedChannel) -> Value {
    let created = chrono::DateTime::from_timestamp_millis(c.started_at).unwrap_or_default();
    json!({
        "channel_name": c.channel,
        "channelName": c.channel,
        "graph_name": c.graph,
        "pid": null,
        "worker_id": c.worker_id,
        "state": if c.worker_id.is_some() { "running" } else { "starting" },
        "created_at": created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "createTs": created.timestamp(),
        "last_ping_at": null,
        "timeout": null,
        "restarts": c.restarts,
        "request_id": null,
        "chat_id": c.chat_id,
        "containment": null,
        "cgroup": null,
        "memory_bytes": null,
        "cpu_seconds": null,
        "memory_max": null,
        "memory_max_enforced_by": null,
        "node": c.node_id,
    })
}

async fn graphs(_: Key, state: web::Data<AppState>) -> Result<HttpResponse, TenError> {
    let catalog = state.catalog.current();
    let graphs: Vec<Value> = catalog
        .graphs()
        .iter()
        .map(|g| {
            json!({
                "name": g.name,
                "uuid": g.name,
                "graph_id": g.name,
                "auto_start": g.auto_start,
                "display_name": g.display_name,
                "description": g.description,
                "source": g.source.display().to_string(),
                "from_property_json": g.from_property_json,
            })
        })
        .collect();
    Ok(ok(Value::Array(graphs)))
}
