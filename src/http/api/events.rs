//! `GET /events/stream`: SSE with replay by `?cursor=` or `Last-Event-ID`, live events,
//! keepalives, and bounded buffering (a client that falls behind is dropped).

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use super::validate::{query, query_int};
use super::{store, Result, StreamKey};
use crate::http::extract::Keyed;
use crate::http::sse::{self, Frame};
use crate::http::state::AppState;
use crate::store::{Event, Store};

/// Time between keepalive comments.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Live events allowed to queue up while a replay runs.
const REPLAY_QUEUE_MAX: usize = 512;
/// Frames buffered towards one client.
const CLIENT_BUFFER: usize = 64;
/// A client that accepts nothing for this long is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
const OVERFLOW: &str = "replay queue overflowed; reconnect required";

/// One event: `event:`, `data:`, `id:`.
fn frame(e: &Event) -> Bytes {
    Frame::new()
        .event(&e.kind)
        .data(&e.envelope().to_string())
        .id(&e.id)
        .bytes()
}

pub async fn stream(
    _: Keyed<StreamKey>,
    req: HttpRequest,
    st: web::Data<AppState>,
) -> Result<HttpResponse> {
    let s = store(&st).clone();
    let cursor = query(&req, "cursor").filter(|c| !c.is_empty()).or_else(|| {
        req.headers()
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    });
    let ephemeral = !matches!(query(&req, "ephemeral").as_deref(), Some("false"));
    let limit = query_int(&req, "limit", 200, 1, 200)?;
    let permit = st.admit_stream(&req)?;
    // Subscribe before reading the head so nothing falls between replay and live.
    let live = s.subscribe();
    let (after, head) = s.replay_bounds(cursor).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(CLIENT_BUFFER);
    actix_web::rt::spawn(pump(s, live, tx, after, head, limit, ephemeral));
    Ok(sse::held_response(
        permit,
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ))
}

/// Sends to the client; false when it is gone or too slow.
async fn send(tx: &mpsc::Sender<Bytes>, frame: Bytes) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, tx.send(frame)).await,
        Ok(Ok(()))
    )
}

async fn pump(
    store: Store,
    mut live: broadcast::Receiver<Arc<Event>>,
    tx: mpsc::Sender<Bytes>,
    after: Option<i64>,
    head: i64,
    limit: i64,
    ephemeral: bool,
) {
    if !send(&tx, sse::comment("stream opened")).await {
        return;
    }
    // Without a cursor only live events go out: everything up to `head` is skipped.
    let mut last = after.unwrap_or(head);
    while last < head {
        let page = match store.events_page(last, head, limit).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "event replay failed");
                return;
            }
        };
        let Some(end) = page.last().and_then(|e| e.seq) else {
            break;
        };
        for e in &page {
            if !send(&tx, frame(e)).await {
                return;
            }
        }
        last = end;
        if live.len() > REPLAY_QUEUE_MAX {
            let _ = send(&tx, sse::comment(OVERFLOW)).await;
            return;
        }
    }
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    loop {
        tokio::select! {
            got = live.recv() => match got {
                Ok(e) => {
                    if let Some(seq) = e.seq {
                        // Replayed already. Later ones are not compared with each other: nodes
                        // sharing a database commit their events in their own order.
                        if seq <= head {
                            continue;
                        }
                    } else if !ephemeral {
                        continue;
                    }
                    if !send(&tx, frame(&e)).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = send(&tx, sse::comment(OVERFLOW)).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = keepalive.tick() => {
                if !send(&tx, sse::comment("keepalive")).await {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}
