//! `GET /events`: the conversations feed of every conversation, as a JSON page or (with
//! `Accept: text/event-stream`) as SSE.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::conv_feed::{feed, last_event_id};
use super::conversations::{internal, Reply, INVALID};
use super::extract::Keyed;
use super::fd_error::{ConvStreamKey, FdError};
use super::state::AppState;
use crate::store::ConvEvent;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/events").route(web::get().to(events)));
}

async fn events(_: Keyed<ConvStreamKey>, req: HttpRequest, st: web::Data<AppState>) -> Reply {
    let wants_sse = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    let q: HashMap<String, String> = form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let after = match (q.get("after"), last_event_id(&req)) {
        (Some(a), _) => Some(a.parse::<i64>().map_err(|_| {
            FdError::invalid(INVALID, "after", "after must be an event seq number")
        })?),
        (None, Some(id)) => Some(
            st.store
                .conversation_event_seq(&id)
                .await
                .map_err(internal)?
                .ok_or_else(|| FdError::invalid(INVALID, "Last-Event-ID", "unknown event id"))?,
        ),
        (None, None) => None,
    };
    if wants_sse {
        let permit = st.admit_stream(&req).map_err(FdError::streams)?;
        return Ok(feed(st.get_ref().clone(), permit, None, after));
    }
    let limit = match q.get("limit") {
        None => 100,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=500).contains(&n) => n,
            _ => {
                return Err(FdError::invalid(
                    INVALID,
                    "limit",
                    "limit must be a whole number from 1 to 500",
                )
                .into())
            }
        },
    };
    let list = st
        .store
        .conversation_events(None, after.unwrap_or(0), limit)
        .await
        .map_err(internal)?;
    let next = list.last().map(|e| e.seq);
    let list: Vec<Value> = list.iter().map(ConvEvent::json).collect();
    Ok(HttpResponse::Ok().json(json!({"events": list, "next": next})))
}
