//! The chat API front door: `POST /agents/:id/chat` (whole or streamed), history, conversations
//! per agent, the inbox, and team chat.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::core::{self, AskError};
use super::http::{
    check_key, object, optional_text, required_text, sse, ChatEnvelope, Error, Family, FdError,
    MAX_TEXT,
};
use super::store::{self as fstore, Conversation};
use crate::state::AppState;

const F: Family = Family::Chat;
/// What a handler of this front door answers; errors come out in its envelope.
type Reply = Result<HttpResponse, Error<ChatEnvelope>>;
const INVALID: &str = "INVALID_REQUEST";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/agents/{id}/chat", web::post().to(chat))
        .route("/agents/{id}/chat/stream", web::post().to(chat_stream))
        .route("/agents/{id}/history", web::get().to(history))
        .route(
            "/agents/{id}/conversations",
            web::get().to(list_conversations),
        )
        .route(
            "/agents/{id}/conversations",
            web::post().to(create_conversation),
        )
        .route(
            "/agents/{id}/conversations/{conv}",
            web::put().to(rename_conversation),
        )
        .route(
            "/agents/{id}/conversations/{conv}",
            web::delete().to(delete_conversation),
        )
        .route("/agents/{id}/inbox", web::get().to(inbox))
        .route("/agents/{id}/mark-read", web::post().to(mark_read))
        .route("/teams/{id}/chat", web::post().to(team_chat));
}

/// Key prefix of an agent's conversations (chats) made through this front door.
fn prefix(agent: &str) -> String {
    format!("fd:chat:{agent}:")
}

/// The chat of the request: the conversation named in the body or query, else the agent's default.
async fn conversation_chat(
    state: &AppState,
    agent: &str,
    conv: Option<String>,
) -> Result<String, FdError> {
    match conv {
        Some(id) => {
            let key = fstore::chat_key(state, &id).await?;
            if key
                .as_deref()
                .is_some_and(|k| k.starts_with(&prefix(agent)))
            {
                Ok(id)
            } else {
                Err(conversation_not_found(&id))
            }
        }
        None => Ok(fstore::chat_for_key(
            state,
            &format!("{}default", prefix(agent)),
            agent,
            "Default conversation",
        )
        .await?),
    }
}

fn conversation_not_found(id: &str) -> FdError {
    FdError::new(
        StatusCode::NOT_FOUND,
        "CONVERSATION_NOT_FOUND",
        format!("Conversation '{id}' not found"),
    )
    .details(json!({"conversation_id": id}))
}

struct ChatRequest {
    agent: String,
    message: String,
    chat_id: String,
}

async fn parse_chat(
    req: &HttpRequest,
    state: &AppState,
    agent: String,
    body: &[u8],
) -> Result<ChatRequest, FdError> {
    check_key(req, state, false)?;
    core::graph(state, &agent)?;
    let obj = object(body, INVALID)?;
    let message = required_text(&obj, "message", "INVALID_MESSAGE", MAX_TEXT)?;
    let conv = optional_text(&obj, "conversation_id", INVALID)?;
    let chat_id = conversation_chat(state, &agent, conv).await?;
    Ok(ChatRequest {
        agent,
        message,
        chat_id,
    })
}

async fn chat(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Reply {
    let r = parse_chat(&req, &state, path.into_inner(), &body).await?;
    let g = core::graph(&state, &r.agent)?;
    let a = core::ask(&state, &r.agent, &r.chat_id, &r.message, None, None).await?;
    let mut out = json!({
        "response": a.text,
        "agent_id": r.agent,
        "agent_name": core::agent_name(&g),
        "conversation_id": r.chat_id,
        "message_id": a.message_id,
    });
    if let Some(request) = a.request {
        out["request"] = request;
    }
    Ok(HttpResponse::Ok().json(out))
}

async fn chat_stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let r = match parse_chat(&req, &state, path.into_inner(), &body).await {
        Ok(r) => r,
        Err(e) => return e.respond(F),
    };
    // Store the message and start (or reach) the agent before answering 200, so "unavailable"
    // is an honest status; the message is kept either way.
    let delivered = match core::deliver(&state, &r.agent, &r.chat_id, &r.message, None).await {
        Ok(d) => d,
        Err(e) => return FdError::from(e).respond(F),
    };
    let body = core::answer_sse(
        state.get_ref().clone(),
        delivered,
        |piece| json!({"type": "text", "content": piece}),
        |outcome| {
            let last = match outcome {
                Ok(_) => json!({"type": "done", "content": ""}),
                Err(e) => json!({"type": "error", "content": e.to_string()}),
            };
            // The chat API's clients stop at a literal `[DONE]`.
            vec![last, Value::String("[DONE]".into())]
        },
    );
    sse(body)
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

fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn history(req: HttpRequest, state: web::Data<AppState>, path: web::Path<String>) -> Reply {
    check_key(&req, &state, false)?;
    let agent = path.into_inner();
    core::graph(&state, &agent)?;
    let limit = query_limit(&req, 20, 200)?;
    let chat_id = conversation_chat(&state, &agent, query_param(&req, "conversation_id")).await?;
    let messages: Vec<Value> = fstore::history(&state, &chat_id, limit)
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

fn conversation_json(c: &Conversation) -> Value {
    json!({
        "id": c.id,
        "title": c.title,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "unread_count": c.unread_count,
        "last_message_preview": c.last_message_preview,
    })
}

async fn list_conversations(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Reply {
    check_key(&req, &state, false)?;
    let agent = path.into_inner();
    core::graph(&state, &agent)?;
    let list = fstore::conversations(&state, &prefix(&agent)).await?;
    let list: Vec<Value> = list.iter().map(conversation_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "conversations": list })))
}

async fn create_conversation(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Reply {
    check_key(&req, &state, false)?;
    let agent = path.into_inner();
    core::graph(&state, &agent)?;
    let obj = object(&body, INVALID)?;
    let title = optional_text(&obj, "title", INVALID)?
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "New conversation".into());
    let key = format!("{}{}", prefix(&agent), nanoid::nanoid!());
    let id = fstore::chat_for_key(&state, &key, &agent, &title).await?;
    let c = fstore::conversation(&state, &id)
        .await?
        .ok_or_else(|| conversation_not_found(&id))?;
    Ok(HttpResponse::Created().json(conversation_json(&c)))
}

async fn owned_conversation(state: &AppState, agent: &str, conv: &str) -> Result<(), FdError> {
    core::graph(state, agent)?;
    match fstore::chat_key(state, conv).await? {
        Some(k) if k.starts_with(&prefix(agent)) => Ok(()),
        _ => Err(conversation_not_found(conv)),
    }
}

async fn rename_conversation(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Reply {
    check_key(&req, &state, false)?;
    let (agent, conv) = path.into_inner();
    owned_conversation(&state, &agent, &conv).await?;
    let obj = object(&body, INVALID)?;
    let title = required_text(&obj, "title", INVALID, 200)?;
    fstore::rename(&state, &conv, title.trim()).await?;
    let c = fstore::conversation(&state, &conv)
        .await?
        .ok_or_else(|| conversation_not_found(&conv))?;
    Ok(HttpResponse::Ok().json(conversation_json(&c)))
}

async fn delete_conversation(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Reply {
    check_key(&req, &state, false)?;
    let (agent, conv) = path.into_inner();
    owned_conversation(&state, &agent, &conv).await?;
    let deleted = fstore::delete_chat(&state, &conv).await?;
    Ok(HttpResponse::Ok().json(json!({"deleted": true, "id": conv, "messages_deleted": deleted})))
}

async fn inbox(req: HttpRequest, state: web::Data<AppState>, path: web::Path<String>) -> Reply {
    check_key(&req, &state, false)?;
    let agent = path.into_inner();
    core::graph(&state, &agent)?;
    let unread = fstore::unread_agent_messages(&state, &prefix(&agent)).await?;
    let messages: Vec<Value> = unread
        .iter()
        .map(|m| json!({"id": m.id, "conversation_id": m.chat_id, "role": "assistant", "content": m.content, "created_at": m.created_at}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"unread": messages.len(), "messages": messages})))
}

async fn mark_read(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Reply {
    check_key(&req, &state, false)?;
    let agent = path.into_inner();
    core::graph(&state, &agent)?;
    let obj = object(&body, INVALID)?;
    let chats: Vec<String> = match optional_text(&obj, "conversation_id", INVALID)? {
        Some(conv) => {
            owned_conversation(&state, &agent, &conv).await?;
            vec![conv]
        }
        None => fstore::conversations(&state, &prefix(&agent))
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect(),
    };
    let mut marked = 0;
    for c in &chats {
        marked += fstore::mark_read(&state, c).await?;
    }
    Ok(HttpResponse::Ok().json(json!({"ok": true, "marked": marked})))
}

/// Team chat modes: every member answers in parallel in both; they differ in what is asked.
const MODES: &[&str] = &["parallel", "brainstorm"];

async fn team_chat(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Reply {
    check_key(&req, &state, false)?;
    let team_name = path.into_inner();
    let team = state
        .catalog
        .current()
        .team(&team_name)
        .cloned()
        .ok_or_else(|| {
            FdError::new(
                StatusCode::NOT_FOUND,
                "TEAM_NOT_FOUND",
                format!("Team '{team_name}' not found"),
            )
        })?;
    let obj = object(&body, INVALID)?;
    let message = required_text(&obj, "message", "INVALID_MESSAGE", MAX_TEXT)?;
    let mode = optional_text(&obj, "mode", INVALID)?.unwrap_or_else(|| "parallel".into());
    if !MODES.contains(&mode.as_str()) {
        return Err(Error::from(FdError::invalid(
            INVALID,
            "mode",
            format!("mode must be one of {}", MODES.join(", ")),
        )));
    }
    let prompt = match mode.as_str() {
        "brainstorm" => format!("Brainstorm: {message}"),
        _ => message.clone(),
    };
    let asks = team.agents.iter().map(|agent| {
        let st = state.get_ref().clone();
        let prompt = prompt.clone();
        let team_name = team_name.clone();
        let agent = agent.clone();
        async move {
            let g = core::graph(&st, &agent)?;
            let chat = fstore::chat_for_key(
                &st,
                &format!("fd:team:{team_name}:{agent}"),
                &agent,
                &format!("Team {team_name}"),
            )
            .await?;
            let a = core::ask(&st, &agent, &chat, &prompt, None, None).await;
            Ok::<_, AskError>((agent, core::agent_name(&g), a))
        }
    });
    let results = futures_util::future::join_all(asks).await;
    let mut responses = Vec::new();
    let mut answered = Vec::new();
    for r in results {
        let (agent, name, a) = r?;
        match a {
            Ok(a) => {
                answered.push((name.clone(), a.text.clone()));
                responses.push(json!({"agent_id": agent, "agent_name": name, "content": a.text}));
            }
            Err(e) => responses.push(json!({"agent_id": agent, "agent_name": name, "content": null, "error": e.to_string()})),
        }
    }
    if answered.is_empty() {
        return Err(Error::from(
            FdError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "AGENT_UNAVAILABLE",
                "No member of the team answered",
            )
            .details(json!({"responses": responses})),
        ));
    }
    let digest = answered
        .iter()
        .map(|(name, text)| format!("- {name}: {}", first_line(text)))
        .collect::<Vec<_>>()
        .join("\n");
    let summary = match &team.summary_agent {
        Some(agent) => {
            let chat = fstore::chat_for_key(
                &state,
                &format!("fd:team:{team_name}:summary:{agent}"),
                agent,
                &format!("Team {team_name} summary"),
            )
            .await?;
            let ask = format!("Summarise these answers to \"{message}\":\n{digest}");
            core::ask(&state, agent, &chat, &ask, None, None)
                .await?
                .text
        }
        None => format!(
            "{} of {} agents answered:\n{digest}",
            answered.len(),
            team.agents.len()
        ),
    };
    Ok(HttpResponse::Ok().json(
        json!({"responses": responses, "summary": summary, "mode": mode, "team_id": team_name}),
    ))
}

fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.chars().count() > 200 {
        line.chars().take(200).collect::<String>() + "…"
    } else {
        line.to_string()
    }
}
