//! The agent messages API's routes: `POST /v1/agents/:agentId/messages` (and `/stream`), with
//! user and room context, its `{success, data | error}` envelope, and the agent's rate-limit
//! headers on every answer.

use super::fd_error::Body;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use super::extract::{query, Keyed};
use super::fd_error::{
    object, optional_text, required_text, with_quota, FdError, V1Error, V1Key, V1StreamKey,
    MAX_TEXT,
};
use super::sse;
use super::state::AppState;
use crate::frontdoor::limits::{Permit, Quota, Refused};
use crate::frontdoor::{Answer, AnswerItem};

const INVALID: &str = "INVALID_MESSAGE";

pub fn configure(cfg: &mut web::ServiceConfig) {
    // One resource per path, so a known path with another method is a 405 with `Allow`.
    cfg.service(web::resource("/v1/agents/{agent_id}/messages").route(web::post().to(send)))
        .service(
            web::resource("/v1/agents/{agent_id}/messages/stream")
                .route(web::post().to(send_stream))
                .route(web::get().to(get_stream)),
        );
}

/// A validated request.
struct Msg {
    agent: String,
    text: String,
    user_id: String,
    room_id: Option<String>,
    context: Option<Map<String, Value>>,
    chat_id: String,
    stream: bool,
}

async fn parse(st: &AppState, agent: String, body: &[u8]) -> Result<Msg, FdError> {
    st.frontdoor.graph(&agent)?;
    let obj = object(body, INVALID)?;
    let text = required_text(&obj, "text", INVALID, MAX_TEXT)?;
    let user_id = optional_text(&obj, "userId", INVALID)?;
    let room_id = optional_text(&obj, "roomId", INVALID)?;
    for (field, v) in [("userId", &user_id), ("roomId", &room_id)] {
        if let Some(v) = v {
            if v.is_empty() || v.len() > 200 || v.chars().any(char::is_control) {
                return Err(FdError::invalid(
                    INVALID,
                    field,
                    "must be 1 to 200 characters without control characters",
                ));
            }
        }
    }
    let context = match obj.get("context") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => {
            return Err(FdError::invalid(
                INVALID,
                "context",
                "Field must be an object",
            ))
        }
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(FdError::invalid(
                INVALID,
                "stream",
                "Field must be a boolean",
            ))
        }
    };
    let user_id = user_id.unwrap_or_else(|| "anonymous".into());
    let chat_id = st
        .frontdoor
        .user_chat(&agent, &user_id, room_id.as_deref())
        .await?;
    Ok(Msg {
        agent,
        text,
        user_id,
        room_id,
        context,
        chat_id,
        stream,
    })
}

fn trace_of(m: &Msg) -> Value {
    let mut t = json!({"frontdoor": "v1", "userId": m.user_id, "roomId": m.room_id});
    if let Some(ctx) = &m.context {
        t["context"] = Value::Object(ctx.clone());
    }
    t
}

fn data_of(m: &Msg, a: &Answer) -> Value {
    let mut metadata = json!({
        "responseTime": (a.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "model": a.model,
    });
    if let Some(t) = a.tokens_used {
        metadata["tokensUsed"] = json!(t);
    }
    let mut data = json!({
        "messageId": a.message_id,
        "response": a.text,
        "agentId": m.agent,
        "userId": m.user_id,
        "roomId": m.room_id,
        "conversationId": m.chat_id,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "metadata": metadata,
    });
    if let Some(r) = &a.request {
        data["request"] = r.clone();
    }
    data
}

/// Counts the request against the agent's limits; the permit is held until the answer is sent.
/// A refusal is a 429 with the quota headers and `Retry-After`.
fn admit(st: &AppState, agent: &str) -> Result<Permit, V1Error> {
    st.frontdoor.limits.acquire(agent).map_err(|refused| {
        let (error, quota) = match refused {
            Refused::Rate(q) => (
                FdError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RATE_LIMITED",
                    "Rate limit exceeded",
                )
                .details(json!({"limit": q.limit, "window": "1m", "retryAfter": q.retry_after()})),
                q,
            ),
            Refused::Concurrency { limit, quota } => (
                FdError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RATE_LIMITED",
                    "Too many concurrent requests for this agent",
                )
                .details(json!({"concurrentLimit": limit})),
                quota,
            ),
        };
        V1Error { error, quota }
    })
}

/// Validates and admits a request; errors before admission report the quota uncounted.
async fn accept(st: &AppState, agent: String, body: &[u8]) -> Result<(Msg, Permit), V1Error> {
    let quota = st.frontdoor.limits.peek(&agent);
    let m = parse(st, agent, body)
        .await
        .map_err(|error| V1Error { error, quota })?;
    let permit = admit(st, &m.agent)?;
    Ok((m, permit))
}

async fn send(
    _: Keyed<V1Key>,
    st: web::Data<AppState>,
    path: web::Path<String>,
    body: Body<V1Error>,
) -> Result<HttpResponse, V1Error> {
    let (m, permit) = accept(&st, path.into_inner(), &body).await?;
    if m.stream {
        return stream_answer(&st, m, permit).await;
    }
    let quota = permit.quota;
    let a = st
        .frontdoor
        .ask(&m.agent, &m.chat_id, &m.text, Some(trace_of(&m)))
        .await
        .map_err(|e| V1Error {
            error: e.into(),
            quota,
        })?;
    Ok(with_quota(HttpResponse::Ok(), quota)
        .json(json!({"success": true, "data": data_of(&m, &a)})))
}

async fn send_stream(
    _: Keyed<V1Key>,
    st: web::Data<AppState>,
    path: web::Path<String>,
    body: Body<V1Error>,
) -> Result<HttpResponse, V1Error> {
    let (m, permit) = accept(&st, path.into_inner(), &body).await?;
    stream_answer(&st, m, permit).await
}

/// `GET .../messages/stream?text=...&userId=...&roomId=...`: the same stream for `EventSource`,
/// which can only send GET; the fields come from the query instead of a JSON body.
async fn get_stream(
    _: Keyed<V1StreamKey>,
    st: web::Data<AppState>,
    req: actix_web::HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, V1Error> {
    let mut fields = Map::new();
    for name in ["text", "userId", "roomId"] {
        if let Some(v) = query(&req, name) {
            fields.insert(name.into(), Value::String(v));
        }
    }
    let body = serde_json::to_vec(&Value::Object(fields)).unwrap_or_default();
    let (m, permit) = accept(&st, path.into_inner(), &body).await?;
    stream_answer(&st, m, permit).await
}

/// SSE: `{"type":"token","content":...}` per piece, then `{"type":"done",...}` with the whole
/// answer (or `{"type":"error",...}`).
async fn stream_answer(st: &AppState, m: Msg, permit: Permit) -> Result<HttpResponse, V1Error> {
    let quota: Quota = permit.quota;
    // The message is stored and the agent started before answering 200 (kept if it cannot start).
    let delivered = st
        .frontdoor
        .deliver(&m.agent, &m.chat_id, &m.text, Some(trace_of(&m)))
        .await
        .map_err(|e| V1Error {
            error: e.into(),
            quota,
        })?;
    // The agent's slot is held until its answer is complete, whether or not the client stays.
    let frames = st
        .frontdoor
        .answer_stream(delivered, permit)
        .map(move |item| match item {
            AnswerItem::Delta(piece) => sse::data(&json!({"type": "token", "content": piece})),
            AnswerItem::Done(Ok(a)) => sse::data(&json!({"type": "done", "data": data_of(&m, &a)})),
            AnswerItem::Done(Err(e)) => {
                let fe: FdError = e.into();
                sse::data(&json!({"type": "error", "error": fe.error_json()}))
            }
        });
    Ok(sse::response_from(
        with_quota(HttpResponse::Ok(), quota),
        frames,
    ))
}
