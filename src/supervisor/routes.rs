//! TEN-compatible HTTP routes: thin layers over [`crate::supervisor::Supervisor`].
//!
//! Every answer is TEN's envelope `{code, msg, data}` with string codes; errors carry honest
//! HTTP statuses (see [`super::errors::ApiError::code_and_status`]).

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::errors::{ApiError, ChannelError, StartError};
use super::StartSpec;
use crate::auth::{is_authorized, Accept};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(health))
        .route("/health", web::get().to(health))
        .route("/start", web::post().to(start))
        .route("/stop", web::post().to(stop))
        .route("/ping", web::post().to(ping))
        .route("/list", web::get().to(list))
        .route("/graphs", web::get().to(graphs));
}

/// A success envelope.
fn ok(data: Value) -> HttpResponse {
    HttpResponse::Ok().json(json!({"code": "0", "msg": "success", "data": data}))
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"code": "0", "msg": "ok", "data": null}))
}

/// Answer for a route that does not exist.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(json!({
        "code": "404",
        "msg": "not found",
        "data": {"status": 404, "detail": format!("no route for {} {}", req.method(), req.path())}
    }))
}

fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let accept = Accept {
        bearer: true,
        x_api_key: true,
        query_token: false,
    };
    if is_authorized(req, state.settings.api_key.as_deref(), accept) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Reads a JSON body of at most `MAX_BODY_BYTES`, whatever its content type.
async fn json_body<T: DeserializeOwned>(
    state: &AppState,
    mut payload: web::Payload,
) -> Result<T, ApiError> {
    let max = state.settings.max_body_bytes;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| bad(format!("cannot read the request body: {e}")))?;
        if body.len() + chunk.len() > max {
            return Err(ApiError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("the request body is empty; send a JSON object".into()));
    }
    serde_json::from_slice(&body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

fn bad(msg: String) -> ApiError {
    ApiError::Start(StartError::BadParams(msg))
}

/// TEN's `/start` body. Unknown fields are ignored, as TEN does.
#[derive(Deserialize)]
struct StartBody {
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    channel_name: Option<String>,
    #[serde(default)]
    graph_name: Option<String>,
    #[serde(default)]
    user_uid: Option<u32>,
    #[serde(default)]
    bot_uid: Option<u32>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    properties: Option<Map<String, Value>>,
    #[serde(default)]
    timeout: Option<i64>,
}

#[derive(Deserialize)]
struct ChannelBody {
    #[serde(default)]
    channel_name: Option<String>,
}

async fn start(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    if state.is_shutting_down() {
        return Err(StartError::ShuttingDown.into());
    }
    let body: StartBody = json_body(&state, payload).await?;
    let spec = StartSpec {
        channel: body.channel_name.unwrap_or_default(),
        graph: body.graph_name.unwrap_or_default(),
        request_id: body.request_id,
        properties: body.properties,
        user_uid: body.user_uid,
        bot_uid: body.bot_uid,
        token: body.token,
        timeout: body.timeout,
        chat_id: None,
        extra_env: Vec::new(),
    };
    let mut reservation = state.supervisor.reserve(spec)?;
    let chat_id = state
        .store
        .chat_for_channel(reservation.channel(), reservation.graph_name())
        .await
        .map_err(|e| StartError::Chat(e.to_string()))?;
    reservation.set_chat_id(chat_id);
    let started = state.supervisor.launch(reservation).await?;
    Ok(ok(serde_json::to_value(started).unwrap_or(Value::Null)))
}

async fn channel_of(state: &AppState, payload: web::Payload) -> Result<String, ApiError> {
    let body: ChannelBody = json_body(state, payload).await.map_err(|e| match e {
        ApiError::Start(StartError::BadParams(m)) => ApiError::Channel(ChannelError::BadParams(m)),
        other => other,
    })?;
    Ok(body.channel_name.unwrap_or_default())
}

async fn ping(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let channel = channel_of(&state, payload).await?;
    let timeout = state.supervisor.ping(&channel)?;
    Ok(ok(
        json!({"channel_name": channel, "timeout": crate::supervisor::timeout_secs(timeout)}),
    ))
}

async fn stop(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let channel = channel_of(&state, payload).await?;
    let graph = state.supervisor.get(&channel).map(|i| i.graph);
    let outcome = state.supervisor.stop(&channel).await?;
    let mut data = serde_json::to_value(outcome).unwrap_or(Value::Null);
    if let Some(d) = data.as_object_mut() {
        d.insert("channel_name".into(), channel.into());
        d.insert("graph_name".into(), graph.into());
    }
    Ok(ok(data))
}

async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let workers: Vec<Value> = state
        .supervisor
        .list()
        .iter()
        .map(|w| w.to_json())
        .collect();
    Ok(ok(Value::Array(workers)))
}

async fn graphs(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
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
