//! agentd's own operator routes, under `/ops` (the console is built on them): the live worker
//! feed, a worker's recent log lines (and new ones as they come), and the dispatch queue.
//!
//! Under a prefix of their own because every other root belongs to a protocol agentd mimics and
//! does not own: TEN's routes are top-level verbs and TEN has added new ones over its versions
//! (`/token/generate`, `/vector/...`), Opengram's live under `/api/v1`, and the front doors hold
//! `/agents`, `/teams`, `/v1`, `/conversations`, `/messages`, `/stream` and `/events`. A bare
//! `/workers` or `/dispatch` could be claimed by any of them later; `/ops` will not be.
//!
//! They answer in the supervisor's envelope and need its key; the key may also come as
//! `?token=`, because a browser's `EventSource` cannot send headers.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::auth::Accept;
use super::extract::{has_key, query, Guard, Keyed};
use super::sse::{self, Frame};
use super::state::AppState;
use super::supervisor::{not_found, ok};
use super::ten_error::TenError;
use crate::store::dispatch::queue::Bucket;
use crate::store::iso;
use crate::supervisor::{LogLines, Supervisor, WorkerChange, RECENT_LINES};

/// Time between keepalive comments on the streams.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Frames buffered towards one client.
const CLIENT_BUFFER: usize = 64;
/// A client that accepts nothing for this long is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Log lines given when `lines` is not.
const DEFAULT_LINES: usize = 100;

/// The supervisor's key, from headers or `?token=`.
pub struct OpsKey;
impl Guard for OpsKey {
    type Error = TenError;
    fn check(req: &HttpRequest, st: &AppState) -> Result<(), TenError> {
        let accept = Accept {
            bearer: true,
            x_api_key: true,
            query_token: true,
        };
        has_key(req, st, accept)
            .then_some(())
            .ok_or(TenError::Unauthorized)
    }
}
type Key = Keyed<OpsKey>;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/ops")
            // Resources, not guarded routes: another method on a known path is a 405 with
            // `Allow`, not the scope's 404.
            .service(web::resource("/workers/stream").route(web::get().to(workers_stream)))
            .service(web::resource("/workers/{channel}/logs").route(web::get().to(logs)))
            .service(web::resource("/dispatch").route(web::get().to(dispatch)))
            .default_service(web::to(not_found)),
    );
}

/// Sends to the client; false when it is gone or too slow.
async fn send(tx: &mpsc::Sender<Bytes>, frame: Bytes) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, tx.send(frame)).await,
        Ok(Ok(()))
    )
}

fn event(name: &str, data: &Value) -> Bytes {
    Frame::new().event(name).data(&data.to_string()).bytes()
}

fn keepalive() -> tokio::time::Interval {
    tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE)
}

/// `GET /ops/workers/stream`: `snapshot` (`{"workers": [...]}`, the `/list` entries), then
/// `worker.started`, `worker.changed`, `worker.restarted` and `worker.gone`, each with the
/// worker's entry.
async fn workers_stream(
    _: Key,
    req: HttpRequest,
    st: web::Data<AppState>,
) -> Result<HttpResponse, TenError> {
    let permit = st.admit_stream(&req)?;
    let (tx, rx) = mpsc::channel::<Bytes>(CLIENT_BUFFER);
    actix_web::rt::spawn(feed_workers(st.supervisor.clone(), tx));
    Ok(sse::held_response(permit, ReceiverStream::new(rx)))
}

async fn feed_workers(sup: Supervisor, tx: mpsc::Sender<Bytes>) {
    if !send(&tx, sse::comment("stream opened")).await {
        return;
    }
    // Each round starts with a snapshot: the first, and after the client fell behind the
    // changes (a new snapshot is cheaper for both sides than replaying what it missed).
    loop {
        let (workers, mut changes) = sup.watch();
        let entries: Vec<Value> = workers.iter().map(|w| w.to_json()).collect();
        if !send(&tx, event("snapshot", &json!({ "workers": entries }))).await {
            return;
        }
        let mut keepalive = keepalive();
        loop {
            tokio::select! {
                got = changes.recv() => match got {
                    Ok(change) => {
                        // Changes come in bursts (200 workers reaped at once): the ones already
                        // waiting go out with this one, in one write.
                        let (frames, lagged) = with_waiting(change, &mut changes);
                        if !send(&tx, frames).await {
                            return;
                        }
                        if lagged {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
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
}

/// Most changes sent in one write.
const CHANGES_PER_WRITE: usize = 64;

/// The event of `first` and of the changes already waiting after it (up to
/// [`CHANGES_PER_WRITE`]); true when this client lagged behind meanwhile (a new snapshot is due).
fn with_waiting(
    first: WorkerChange,
    changes: &mut broadcast::Receiver<WorkerChange>,
) -> (Bytes, bool) {
    let mut frames = change_event(&first).to_vec();
    for _ in 1..CHANGES_PER_WRITE {
        match changes.try_recv() {
            Ok(change) => frames.extend_from_slice(&change_event(&change)),
            Err(broadcast::error::TryRecvError::Lagged(_)) => return (frames.into(), true),
            Err(_) => break,
        }
    }
    (frames.into(), false)
}

/// The feed's event of one change.
fn change_event(change: &WorkerChange) -> Bytes {
    let (name, info) = match change {
        WorkerChange::Started(i) => ("worker.started", i),
        WorkerChange::Changed(i) => ("worker.changed", i),
        WorkerChange::Restarted(i) => ("worker.restarted", i),
        WorkerChange::Gone(i) => ("worker.gone", i),
    };
    event(name, &info.to_json())
}

/// `GET /ops/workers/{channel}/logs?lines=N`: the last N lines as JSON; with `&follow`, as SSE:
/// `tail` with those lines, `lines` as new ones are written, `lagged` when this client missed
/// some, and `end` once the worker is gone for good.
async fn logs(
    _: Key,
    req: HttpRequest,
    path: web::Path<String>,
    st: web::Data<AppState>,
) -> Result<HttpResponse, TenError> {
    let channel = path.into_inner();
    let n = match query(&req, "lines") {
        None => DEFAULT_LINES,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=RECENT_LINES).contains(n))
            .ok_or_else(|| {
                TenError::BadParams(format!(
                    "lines must be a whole number from 1 to {RECENT_LINES}, not {v:?}"
                ))
            })?,
    };
    let follow = match query(&req, "follow").as_deref() {
        None | Some("false" | "0") => false,
        Some("" | "true" | "1") => true,
        Some(v) => {
            return Err(TenError::BadParams(format!(
                "follow must be true, false, 1, 0 or empty, not {v:?}"
            )))
        }
    };
    if !follow {
        let lines = st.supervisor.log_lines(&channel, n)?;
        return Ok(ok(json!({ "channel_name": channel, "lines": lines })));
    }
    let permit = st.admit_stream(&req)?;
    let (lines, rx) = st.supervisor.follow_log(&channel, n)?;
    let (tx, out) = mpsc::channel::<Bytes>(CLIENT_BUFFER);
    actix_web::rt::spawn(feed_log(channel, lines, rx, tx));
    Ok(sse::held_response(permit, ReceiverStream::new(out)))
}

async fn feed_log(
    channel: String,
    tail: Vec<String>,
    mut rx: broadcast::Receiver<LogLines>,
    tx: mpsc::Sender<Bytes>,
) {
    // Lines go out as JSON: a carriage return inside a line would end an SSE field early.
    if !send(&tx, event("tail", &json!({ "lines": tail }))).await {
        return;
    }
    let mut keepalive = keepalive();
    loop {
        tokio::select! {
            got = rx.recv() => {
                let frame = match got {
                    Ok(lines) => event("lines", &json!({ "lines": &*lines })),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        event("lagged", &json!({ "missed_writes": n }))
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        let _ = send(&tx, event("end", &json!({ "channel_name": channel }))).await;
                        return;
                    }
                };
                if !send(&tx, frame).await {
                    return;
                }
            }
            _ = keepalive.tick() => {
                if !send(&tx, sse::comment("keepalive")).await {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}

/// `GET /ops/dispatch`: counts and oldest age of the dispatch queue's open states.
async fn dispatch(_: Key, st: web::Data<AppState>) -> Result<HttpResponse, TenError> {
    let q = st
        .store
        .queue_state()
        .await
        .map_err(|e| TenError::Internal(e.to_string()))?;
    let bucket = |b: Bucket| {
        json!({
            "count": b.count,
            "oldest_at": b.oldest_at.map(iso),
            "oldest_age_ms": b.oldest_at.map(|t| (q.at - t).max(0)),
        })
    };
    let mut pending = bucket(q.batches_pending);
    pending["delayed"] = q.batches_delayed.into();
    Ok(ok(json!({
        "mode": st.settings.dispatch.mode.as_str(),
        "at": iso(q.at),
        "inputs": { "pending": bucket(q.inputs_pending) },
        "batches": { "pending": pending, "leased": bucket(q.batches_leased) },
    })))
}
