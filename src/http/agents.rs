//! The chat API's routes: `POST /agents/:id/chat` (whole or streamed), history, conversations
//! per agent, the inbox, and `POST /teams/:id/chat`.

use super::fd_error::Body;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::extract::{query, Keyed};
use super::fd_error::{
    object, optional_text, required_text, ChatError, ChatKey, FdError, MAX_TEXT,
};
use super::sse;
use super::state::AppState;
use crate::frontdoor::chat::{TeamError, TEAM_MODES};
use crate::frontdoor::{agent_name, AnswerItem};
use crate::store::KeyedChat;

type Reply = Result<HttpResponse, ChatError>;
type Key = Keyed<ChatKey>;
const INVALID: &str = "INVALID_REQUEST";

/// The routes, under `/agents/...` and again under `/api/agents/...` (the chat API's own
/// JavaScript example fetches the latter).
pub fn configure(cfg: &mut web::ServiceConfig) {
    for prefix in ["", "/api"] {
        routes(cfg, prefix);
    }
}

fn routes(cfg: &mut web::ServiceConfig, prefix: &str) {
    // One resource per path, so a known path with another method is a 405 with `Allow`.
    let at = |path: &str| web::resource(format!("{prefix}{path}"));
    cfg.service(at("/agents/{id}/chat").route(web::post().to(chat)))
        .service(at("/agents/{id}/chat/stream").route(web::post().to(chat_stream)))
        .service(at("/agents/{id}/history").route(web::get().to(history)))
        .service(
            at("/agents/{id}/conversations")
                .route(web::get().to(list_conversations))
                .route(web::post().to(create_conversation)),
        )
        .service(
            at("/agents/{id}/conversations/{conv}")
                .route(web::put().to(rename_conversation))
                .route(web::delete().to(delete_conversation)),
        )
        .service(at("/agents/{id}/inbox").route(web::get().to(inbox)))
        .service(at("/agents/{id}/mark-read").route(web::post().to(mark_read)))
        .service(at("/teams/{id}/chat").route(web::post().to(team_chat)));
}

fn conversation_not_found(id: &str) -> FdError {
    FdError::new(
        StatusCode::NOT_FOUND,
        "CONVERSATION_NOT_FOUND",
        format!("Conversation '{id}' not found"),
    )
    .details(json!({"conversation_id": id}))
}

/// The chat a request names (or the agent's default one), or 404.
async fn chat_of(st: &AppState, agent: &str, conv: Option<String>) -> Result<String, FdError> {
    let named = conv.clone();
    st.frontdoor
        .agent_chat(agent, conv)
        .await?
        .ok_or_else(|| conversation_not_found(named.as_deref().unwrap_or_default()))
}

/// 404 unless `conv` is a conversation of `agent`.
async fn owned(st: &AppState, agent: &str, conv: &str) -> Result<(), FdError> {
    if st.frontdoor.owns(agent, conv).await? {
        Ok(())
    } else {
        Err(conversation_not_found(conv))
    }
}

struct ChatRequest {
    agent: String,
    message: String,
    chat_id: String,
}

async fn parse_chat(st: &AppState, agent: String, body: &[u8]) -> Result<ChatRequest, FdError> {
    st.frontdoor.graph(&agent)?;
    let obj = object(body, INVALID)?;
    let message = required_text(&obj, "message", "INVALID_MESSAGE", MAX_TEXT)?;
    let conv = optional_text(&obj, "conversation_id", INVALID)?;
    let chat_id = chat_of(st, &agent, conv).await?;
    Ok(ChatRequest {
        agent,
        message,
        chat_id,
    })
}

async fn chat(
    _: Key,
    st: web::Data<AppState>,
    path: web::Path<String>,
    body: Body<ChatError>,
) -> Reply {
    let r = parse_chat(&st, path.into_inner(), &body).await?;
    let g = st.frontdoor.graph(&r.agent)?;
    let a = st
        .frontdoor
        .ask(&r.agent, &r.chat_id, &r.message, None)
        .await?;
    let mut out = json!({
        "response": a.text,
        "agent_id": r.agent,
        "agent_name": agent_name(&g),
        "conversation_id": r.chat_id,
        "message_id": a.message_id,
    });
    if let Some(request) = a.request {
        out["request"] = request;
    }
    Ok(HttpResponse::Ok().json(out))
}

async fn chat_stream(
    _: Key,
    st: web::Data<AppState>,
    path: web::Path<String>,
    body: Body<ChatError>,
) -> Reply {
    let r = parse_chat(&st, path.into_inner(), &body).await?;
    // Store the message and start (or reach) the agent before answering 200, so "unavailable"
    // is an honest status; the message is kept either way.
    let delivered = st
        .frontdoor
        .deliver(&r.agent, &r.chat_id, &r.message, None)
        .await?;
    let frames = st.frontdoor.answer_stream(delivered, ()).flat_map(|item| {
        let frames = match item {
            AnswerItem::Delta(piece) => {
                vec![sse::data(&json!({"type": "text", "content": piece}))]
            }
            AnswerItem::Done(outcome) => {
                let last = match outcome {
                    Ok(_) => json!({"type": "done", "content": ""}),
                    Err(e) => json!({"type": "error", "content": e.to_string()}),
                };
                // The chat API's clients stop at a literal `[DONE]`.
                vec![sse::data(&last), sse::data(&Value::String("[DONE]".into()))]
            }
        };
        futures_util::stream::iter(frames)
    });
    Ok(sse::response(frames))
}

fn query_limit(req: &HttpRequest, default: usize, max: usize) -> Result<usize, FdError> {
    let q = web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .map_err(|_| FdError::new(StatusCode::BAD_REQUEST, INVALID, "Malformed query string"))?;
    match q.get("limit") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(FdError::invalid(
                INVALID,
                "limit",
                format!("limit must be a whole number from 1 to {max}"),
            )),
        },
    }
}

async fn history(
    _: Key,
    req: HttpRequest,
    st: web::Data<AppState>,
    path: web::Path<String>,
) -> Reply {
    let agent = path.into_inner();
    st.frontdoor.graph(&agent)?;
    let limit = query_limit(&req, 20, 200)?;
    let chat_id = chat_of(&st, &agent, query(&req, "conversation_id")).await?;
    let messages: Vec<Value> = st
        .frontdoor
        .history(&chat_id, limit)
        .await?
        .into_iter()
        .filter(|m| m.role == "user" || m.role == "agent")
        .map(|m| {
            json!({
                "id": m.id,
                "role": if m.role == "agent" { "assistant" } else { "user" },
                "content": m.content,
                "created_at": m.created_at,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "messages": messages, "conversation_id": chat_id })))
}

fn conversation_json(c: &KeyedChat) -> Value {
    json!({
        "id": c.id,
        "title": c.title,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "unread_count": c.unread_count,
        "last_message_preview": c.last_message_preview,
    })
}

async fn list_conversations(_: Key, st: web::Data<AppState>, path: web::Path<String>) -> Reply {
    let agent = path.into_inner();
    st.frontdoor.graph(&agent)?;
    let list = st.frontdoor.agent_conversations(&agent).await?;
    let list: Vec<Value> = list.iter().map(conversation_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "conversations": list })))
}

async fn create_conversation(
    _: Key,
    st: web::Data<AppState>,
    path: web::Path<String>,
    body: Body<ChatError>,
) -> Reply {
    let agent = path.into_inner();
    st.frontdoor.graph(&agent)?;
    let obj = object(&body, INVALID)?;
    let title = optional_text(&obj, "title", INVALID)?
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "New conversation".into());
    let id = st.frontdoor.new_agent_conversation(&agent, &title).await?;
    let c = st
        .frontdoor
        .conversation_of_chat(&id)
        .await?
        .ok_or_else(|| conversation_not_found(&id))?;
    Ok(HttpResponse::Created().json(conversation_json(&c)))
}

async fn rename_conversation(
    _: Key,
    st: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: Body<ChatError>,
) -> Reply {
    let (agent, conv) = path.into_inner();
    owned(&st, &agent, &conv).await?;
    let obj = object(&body, INVALID)?;
    let title = required_text(&obj, "title", INVALID, 200)?;
    st.frontdoor.rename_chat(&conv, title.trim()).await?;
    let c = st
        .frontdoor
        .conversation_of_chat(&conv)
        .await?
        .ok_or_else(|| conversation_not_found(&conv))?;
    Ok(HttpResponse::Ok().json(conversation_json(&c)))
}

async fn delete_conversation(
    _: Key,
    st: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Reply {
    let (agent, conv) = path.into_inner();
    owned(&st, &agent, &conv).await?;
    let deleted = st.frontdoor.delete_chat(&conv).await?;
    Ok(HttpResponse::Ok().json(json!({"deleted": true, "id": conv, "messages_deleted": deleted})))
}

async fn inbox(_: Key, st: web::Data<AppState>, path: web::Path<String>) -> Reply {
    let agent = path.into_inner();
    st.frontdoor.graph(&agent)?;
    let unread = st.frontdoor.inbox(&agent).await?;
    let messages: Vec<Value> = unread
        .iter()
        .map(|m| json!({"id": m.id, "conversation_id": m.chat_id, "role": "assistant", "content": m.content, "created_at": m.created_at}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"unread": messages.len(), "messages": messages})))
}

async fn mark_read(
    _: Key,
    st: web::Data<AppState>,
    path: web::Path<String>,
    body: Body<ChatError>,
) -> Reply {
    let agent = path.into_inner();
    st.frontdoor.graph(&agent)?;
    let obj = object(&body, INVALID)?;
    let chats: Vec<String> = match optional_text(&obj, "conversation_id", INVALID)? {
        Some(conv) => {
            owned(&st, &agent, &conv).await?;
            vec![conv]
        }
        None => st
            .frontdoor
            .agent_conversations(&agent)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect(),
    };
    let mut marked = 0;
    for c in &chats {
        marked += st.frontdoor.mark_read(c).await?;
    }
    Ok(HttpResponse::Ok().json(json!({"ok": true, "marked": marked})))
}

fn team_not_found(name: &str) -> FdError {
    FdError::new(
        StatusCode::NOT_FOUND,
        "TEAM_NOT_FOUND",
        format!("Team '{name}' not found"),
    )
}

async fn team_chat(
    _: Key,
    st: web::Data<AppState>,
    path: web::Path<String>,
    body: Body<ChatError>,
) -> Reply {
    let team_name = path.into_inner();
    if st.frontdoor.team(&team_name).is_none() {
        return Err(team_not_found(&team_name).into());
    }
    let obj = object(&body, INVALID)?;
    let message = required_text(&obj, "message", "INVALID_MESSAGE", MAX_TEXT)?;
    let mode = optional_text(&obj, "mode", INVALID)?.unwrap_or_else(|| "parallel".into());
    if !TEAM_MODES.contains(&mode.as_str()) {
        return Err(FdError::invalid(
            INVALID,
            "mode",
            format!("mode must be one of {}", TEAM_MODES.join(", ")),
        )
        .into());
    }
    let member_json = |m: &crate::frontdoor::chat::MemberAnswer| match &m.outcome {
        Ok(text) => json!({"agent_id": m.agent, "agent_name": m.name, "content": text}),
        Err(e) => json!({"agent_id": m.agent, "agent_name": m.name, "content": null, "error": e}),
    };
    match st.frontdoor.team_chat(&team_name, &message, &mode).await {
        Ok(t) => {
            let responses: Vec<Value> = t.members.iter().map(member_json).collect();
            Ok(HttpResponse::Ok().json(
                json!({"responses": responses, "summary": t.summary, "mode": mode, "team_id": team_name}),
            ))
        }
        Err(TeamError::NotFound(name)) => Err(team_not_found(&name).into()),
        Err(TeamError::NoAnswer(members)) => {
            let responses: Vec<Value> = members.iter().map(member_json).collect();
            Err(FdError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "AGENT_UNAVAILABLE",
                "No member of the team answered",
            )
            .details(json!({"responses": responses}))
            .into())
        }
        Err(TeamError::Ask(e)) => Err(e.into()),
    }
}
