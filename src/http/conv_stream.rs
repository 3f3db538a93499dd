//! `GET /stream/:conversationId`: one conversation's events as SSE, resumable by `Last-Event-ID`.

use actix_web::{web, HttpRequest};

use super::conv_feed::{feed, last_event_id};
use super::conversations::{exists, internal, Reply, INVALID};
use super::extract::Keyed;
use super::fd_error::{ConvStreamKey, FdError};
use super::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/stream/{id}").route(web::get().to(stream)));
}

async fn stream(
    _: Keyed<ConvStreamKey>,
    req: HttpRequest,
    st: web::Data<AppState>,
    path: web::Path<String>,
) -> Reply {
    let conv = path.into_inner();
    exists(&st, &conv).await?;
    let after = match last_event_id(&req) {
        Some(id) => Some(
            st.store
                .conversation_event_seq(&id)
                .await
                .map_err(internal)?
                .ok_or_else(|| FdError::invalid(INVALID, "Last-Event-ID", "unknown event id"))?,
        ),
        None => None,
    };
    let permit = st.admit_stream(&req).map_err(FdError::streams)?;
    Ok(feed(st.get_ref().clone(), permit, Some(conv), after))
}
