//! The agent messages front door: `POST /v1/agents/:agentId/messages` (and `/stream`), with user
//! and room context, its `{success, data | error}` envelope, and per-agent rate limits reported in
//! `X-RateLimit-*` headers on every answer.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use serde_json::{json, Map, Value};

use super::core::{self, Answer};
use super::http::{
    check_key, object, optional_text, required_text, sse_from, Family, FdError, MAX_TEXT,
};
use super::limits::{Quota, Refused};
use super::store as fstore;
use crate::state::AppState;

const F: Family = Family::AgentMessages;
const INVALID: &str = "INVALID_MESSAGE";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/agents/{agent_id}/messages", web::post().to(send))
        .route(
            "/v1/agents/{agent_id}/messages/stream",
            web::post().to(send_stream),
        );
}

fn with_quota(mut b: HttpResponseBuilder, q: Quota) -> HttpResponseBuilder {
    b.insert_header(("x-ratelimit-limit", q.limit.to_string()))
        .insert_header(("x-ratelimit-remaining", q.remaining.to_string()))
        .insert_header(("x-ratelimit-reset", q.reset.to_string()));
    b
}

fn error(e: FdError, q: Quota) -> HttpResponse {
    let mut b = with_quota(HttpResponse::build(e.status), q);
    if e.status == StatusCode::TOO_MANY_REQUESTS {
        b.insert_header(("retry-after", q.retry_after().to_string()));
    }
    b.json(e.body(F))
}

/// A validated request.
struct Msg {
    agent: String,
    text: String,
    user_id: String,
    room_id: Option<String>,
    context: Option<Map<String, Value>>,
    chat_id: String,
}

async fn parse(
    req: &HttpRequest,
    state: &AppState,
    agent: String,
    body: &[u8],
) -> Result<Msg, FdError> {
    check_key(req, state, false)?;
    core::graph(state, &agent)?;
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
    if let Some(v) = obj.get("stream") {
        if !v.is_boolean() && !v.is_null() {
            return Err(FdError::invalid(
                INVALID,
                "stream",
                "Field must be a boolean",
            ));
        }
    }
    // The same userId and roomId continue the same conversation with this agent.
    let user_id = user_id.unwrap_or_else(|| "anonymous".into());
    let key = format!(
        "fd:v1:{agent}:{}:{}",
        fstore::key_part(&user_id),
        room_id.as_deref().map(fstore::key_part).unwrap_or_default()
    );
    let title = match &room_id {
        Some(r) => format!("{user_id} in {r}"),
        None => user_id.clone(),
    };
    let chat_id = fstore::chat_for_key(state, &key, &agent, &title).await?;
    Ok(Msg {
        agent,
        text,
        user_id,
        room_id,
        context,
        chat_id,
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
/// A refusal is answered with 429, the quota headers and `Retry-After`.
fn admit(state: &AppState, agent: &str) -> Result<super::limits::Permit, Box<HttpResponse>> {
    state.frontdoor.limits.acquire(agent).map_err(|refused| {
        let (e, q) = match refused {
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
        Box::new(error(e, q))
    })
}

async fn send(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let agent = path.into_inner();
    let quota = state.frontdoor.limits.peek(&agent);
    let m = match parse(&req, &state, agent, &body).await {
        Ok(m) => m,
        Err(e) => return error(e, quota),
    };
    let wants_stream = object(&body, INVALID)
        .ok()
        .and_then(|o| o.get("stream").and_then(Value::as_bool))
        .unwrap_or(false);
    let permit = match admit(&state, &m.agent) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if wants_stream {
        return stream_answer(state.get_ref().clone(), m, permit).await;
    }
    let q = permit.quota;
    match core::ask(
        &state,
        &m.agent,
        &m.chat_id,
        &m.text,
        Some(trace_of(&m)),
        None,
    )
    .await
    {
        Ok(a) => with_quota(HttpResponse::Ok(), q)
            .json(json!({"success": true, "data": data_of(&m, &a)})),
        Err(e) => error(e.into(), q),
    }
}

async fn send_stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let agent = path.into_inner();
    let quota = state.frontdoor.limits.peek(&agent);
    let m = match parse(&req, &state, agent, &body).await {
        Ok(m) => m,
        Err(e) => return error(e, quota),
    };
    let permit = match admit(&state, &m.agent) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    stream_answer(state.get_ref().clone(), m, permit).await
}

/// SSE: `{"type":"token","content":...}` per delta, then `{"type":"done",...}` with the whole
/// answer (or `{"type":"error",...}`).
async fn stream_answer(state: AppState, m: Msg, permit: super::limits::Permit) -> HttpResponse {
    let q = permit.quota;
    // The message is stored and the agent started before answering 200 (kept if it cannot start).
    let delivered =
        match core::deliver(&state, &m.agent, &m.chat_id, &m.text, Some(trace_of(&m))).await {
            Ok(d) => d,
            Err(e) => return error(e.into(), q),
        };
    let body = core::answer_sse(
        state,
        delivered,
        |piece| json!({"type": "token", "content": piece}),
        move |outcome| {
            // The agent's slot is held until its answer is complete.
            drop(permit);
            vec![match outcome {
                Ok(a) => json!({"type": "done", "data": data_of(&m, &a)}),
                Err(e) => {
                    let fe: FdError = e.into();
                    json!({"type": "error", "error": fe.body(F)["error"]})
                }
            }]
        },
    );
    sse_from(with_quota(HttpResponse::Ok(), q), body)
}
