//! The conversations feed as SSE, shared by `/stream/:id` (one conversation) and `/events` (all):
//! a replay of stored events after a cursor, then live events, with `event: ping` heartbeats. A
//! client that does not read falls behind the live bus and is disconnected (bounded memory).

use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::broadcast;

use super::extract::query;
use super::sse::{self, Frame};
use super::state::AppState;
use crate::store::ConvEvent;

/// Frames buffered towards one client.
const CLIENT_BUFFER: usize = 64;
/// Stored events read per replay page.
const REPLAY_PAGE: i64 = 200;

/// One event as a frame. The per-conversation stream names events with `_` and sends messages
/// flat, as its clients expect; the global feed sends every event whole.
fn frame(e: &ConvEvent, conversation_stream: bool) -> Bytes {
    if conversation_stream && e.kind == "message.created" {
        let p = &e.payload;
        let data = json!({
            "conversationId": e.conversation_id,
            "messageId": p["id"],
            "type": p["type"],
            "from": p["from"],
            "to": p["to"],
            "content": p["content"],
            "attachments": p["attachments"],
            "isAutomated": p["isAutomated"],
            "createdAt": p["createdAt"],
        });
        Frame::new()
            .event("message")
            .id(p["id"].as_str().unwrap_or_default())
            .data(&data.to_string())
            .bytes()
    } else {
        let name = if conversation_stream {
            e.kind.replace('.', "_")
        } else {
            e.kind.clone()
        };
        Frame::new()
            .event(&name)
            .id(&e.id)
            .data(&e.json().to_string())
            .bytes()
    }
}

/// `Last-Event-ID`, or `?lastEventId=` for clients that cannot set headers.
pub fn last_event_id(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query(req, "lastEventId"))
}

/// The feed of one conversation (`conv`) or of all, replaying stored events after `after`.
pub fn feed(
    st: AppState,
    permit: sse::StreamPermit,
    conv: Option<String>,
    after: Option<i64>,
) -> HttpResponse {
    let interval = st.settings.sse_ping_interval;
    let store = st.store;
    let mut live = store.subscribe_conversations();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(CLIENT_BUFFER);
    let conversation_stream = conv.is_some();
    tokio::spawn(async move {
        let _ = tx.send(sse::comment("connected")).await;
        let mut last = after.unwrap_or(i64::MAX);
        if let Some(mut cursor) = after {
            loop {
                let page = match store
                    .conversation_events(conv.clone(), cursor, REPLAY_PAGE)
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(error = %e, "front door store error");
                        return;
                    }
                };
                for e in &page {
                    if tx.send(frame(e, conversation_stream)).await.is_err() {
                        return;
                    }
                    cursor = e.seq;
                }
                if (page.len() as i64) < REPLAY_PAGE {
                    break;
                }
            }
            last = cursor;
        }
        let mut ping = tokio::time::interval(interval);
        ping.tick().await;
        loop {
            tokio::select! {
                ev = live.recv() => match ev {
                    Ok(e) => {
                        if conv.as_deref().is_some_and(|c| c != e.conversation_id) || (last != i64::MAX && e.seq <= last) {
                            continue;
                        }
                        if tx.send(frame(&e, conversation_stream)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.try_send(sse::comment("fell behind; reconnect with Last-Event-ID"));
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ping.tick() => {
                    let ts = crate::store::iso(chrono::Utc::now().timestamp_millis());
                    let frame = Frame::new().event("ping").data(&json!({"ts": ts}).to_string()).bytes();
                    if tx.send(frame).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    sse::held_response(permit, tokio_stream::wrappers::ReceiverStream::new(rx))
}
