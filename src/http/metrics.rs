//! `GET /metrics` (the Prometheus scrape) and the middleware that counts every HTTP request by
//! its matched route pattern. What is counted and how it is written is [`crate::observe`]'s; this
//! file only reads the services at scrape time and knows about HTTP.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};

use super::extract::{Guard, Keyed};
use super::state::AppState;
use super::ten_error::TenError;
use crate::observe::{self, QueueSample, Snapshot, WorkerSample};
use crate::supervisor::WorkerState;

/// The supervisor's key from headers, or none for a loopback peer with
/// `METRICS_PUBLIC_LOOPBACK=true`.
pub struct MetricsKey;
impl Guard for MetricsKey {
    type Error = TenError;
    fn check(req: &HttpRequest, st: &AppState) -> Result<(), TenError> {
        let loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
        if st.settings.metrics_public_loopback && loopback {
            return Ok(());
        }
        // Otherwise the supervisor's own rule: the key, from headers only.
        super::supervisor::TenKey::check(req, st)
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // A resource, not a guarded route: another method is a 405 with `Allow`, not a 404.
    cfg.service(web::resource("/metrics").route(web::get().to(scrape)));
}

/// Counts the request under its route pattern (never the raw path: ids would make a series
/// each) once the answer's head is ready.
pub async fn count(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let began = Instant::now();
    let method = req.method().as_str().to_string();
    let res = next.call(req).await?;
    let route = res.request().match_pattern();
    observe::http_answered(
        &method,
        route.as_deref(),
        res.status().as_u16(),
        began.elapsed(),
    );
    Ok(res)
}

fn state_name(s: WorkerState) -> &'static str {
    match s {
        WorkerState::Starting => "starting",
        WorkerState::Running => "running",
        WorkerState::Stopping => "stopping",
        WorkerState::Restarting => "restarting",
    }
}

/// `GET /metrics`: the counters, and the workers and the dispatch queue as they are now.
async fn scrape(_: Keyed<MetricsKey>, st: web::Data<AppState>) -> HttpResponse {
    let workers = st
        .supervisor
        .list()
        .into_iter()
        .map(|w| WorkerSample {
            state: state_name(w.state),
            channel: w.channel,
            graph: w.graph,
            memory_bytes: w.memory_bytes,
            cpu_seconds: w.cpu_seconds,
        })
        .collect();
    let queue = match st.store.queue_state().await {
        Ok(q) => {
            let age = |oldest: Option<i64>| oldest.map(|t| (q.at - t).max(0) as f64 / 1000.0);
            vec![
                QueueSample {
                    kind: "inputs",
                    state: "pending",
                    count: q.inputs_pending.count,
                    oldest_age_secs: age(q.inputs_pending.oldest_at),
                },
                QueueSample {
                    kind: "batches",
                    state: "pending",
                    count: q.batches_pending.count,
                    oldest_age_secs: age(q.batches_pending.oldest_at),
                },
                QueueSample {
                    kind: "batches",
                    state: "delayed",
                    count: q.batches_delayed,
                    oldest_age_secs: None,
                },
                QueueSample {
                    kind: "batches",
                    state: "leased",
                    count: q.batches_leased.count,
                    oldest_age_secs: age(q.batches_leased.oldest_at),
                },
            ]
        }
        Err(e) => {
            // The rest of the scrape is still worth having.
            tracing::warn!(error = %e, "metrics: cannot read the dispatch queue");
            Vec::new()
        }
    };
    let text = observe::render(&Snapshot { workers, queue });
    HttpResponse::Ok()
        .insert_header(("content-type", observe::CONTENT_TYPE))
        .insert_header(("cache-control", "no-store"))
        .body(text)
}
