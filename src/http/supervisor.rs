//! The TEN-compatible supervisor routes (`/start`, `/stop`, `/ping`, `/list`, `/graphs`,
//! `/health`): thin layers over [`crate::supervisor::Supervisor`].
//!
//! Every answer is TEN's envelope `{code, msg, data}` with string codes; errors carry honest
//! HTTP statuses (see [`TenError::code_and_status`]).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Accept;
use super::extract::{has_key, parse_json, read_body, BodyError, Guard, Keyed};
use super::state::AppState;
use super::ten_error::TenError;
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
    let c = state.supervisor.containment();
    HttpResponse::Ok().json(json!({"code": "0", "msg": "ok", "data": {
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
    let body = read_body(payload, state.settings.max_body_bytes)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge(max) => TenError::TooLarge(max),
            BodyError::Unreadable(e) => bad(format!("cannot read the request body: {e}")),
            BodyError::TimedOut => TenError::BodyTimeout,
        })?;
    match parse_json(&body) {
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
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, TenError> {
    if state.supervisor.is_shutting_down() {
        return Err(StartError::ShuttingDown.into());
    }
    let spec = start_spec(json_body(&state, payload).await?)?;
    let mut reservation = state.supervisor.reserve(spec)?;
    let channel = reservation.channel().to_string();
    let graph = reservation.graph_name().to_string();
    // The worker is told its chat's id when it starts. A channel started before has its chat:
    // one read, while the start is prepared. Otherwise the chat is written with an id chosen
    // here, while the worker starts, and the answer waits for both: a success means the worker
    // runs and its chat exists. An error drops the reservation, which gives everything back.
    let (prepared, found) = futures_util::future::join(
        state.supervisor.prepare(&mut reservation),
        state.store.channel_chat(&channel),
    )
    .await;
    let found = found.map_err(chat_error)?;
    prepared?;
    let new_id = match found {
        Some(id) => {
            reservation.set_chat_id(id);
            let started = state.supervisor.launch(reservation).await?;
            return Ok(ok(serde_json::to_value(started).unwrap_or(Value::Null)));
        }
        None => crate::ids::new_id(),
    };
    reservation.set_chat_id(new_id.clone());
    let (started, made) = futures_util::future::join(
        state.supervisor.launch(reservation),
        state.store.chat_for_channel_as(&channel, &graph, &new_id),
    )
    .await;
    let failed = match made {
        Ok(id) if id == new_id => {
            return Ok(ok(serde_json::to_value(started?).unwrap_or(Value::Null)))
        }
        // Made by another node of a shared database in between: this worker was told another id.
        Ok(id) => StartError::Chat(format!(
            "the channel's chat ({id}) was made elsewhere while this worker started; try again"
        ))
        .into(),
        Err(e) => chat_error(e),
    };
    if started.is_ok() {
        // Nothing half-done stays behind: the worker goes before the error is answered.
        let _ = state
            .supervisor
            .stop(&channel, "/start (its chat could not be made)")
            .await;
    }
    Err(failed)
}

/// A failure to find or make a channel's chat, as `/start` answers it.
fn chat_error(e: crate::store::StoreError) -> TenError {
    match e.storage() {
        Some(storage) => TenError::Storage(storage),
        None => StartError::Chat(e.to_string()).into(),
    }
}

async fn channel_of(state: &AppState, payload: web::Payload) -> Result<String, TenError> {
    let body: ChannelBody = json_body(state, payload).await.map_err(|e| match e {
        TenError::Start(StartError::BadParams(m)) => TenError::Channel(ChannelError::BadParams(m)),
        other => other,
    })?;
    Ok(body.channel_name.unwrap_or_default())
}

async fn ping(
    _: Key,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, TenError> {
    let channel = channel_of(&state, payload).await?;
    let timeout = state.supervisor.ping(&channel)?;
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
    let channel = channel_of(&state, payload).await?;
    let graph = state.supervisor.get(&channel).map(|i| i.graph);
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
    let workers: Vec<Value> = state
        .supervisor
        .list()
        .iter()
        .map(|w| w.to_json())
        .collect();
    Ok(ok(Value::Array(workers)))
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
