//! Dispatch routes: claim, claim-many, heartbeat, complete, fail.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::validate::Fields;
use super::{no_content, ok, store, write_body, Result, Write};
use crate::http::state::AppState;
use crate::store::dispatch::{
    Claim, ClaimFilter, Failure, CLAIM_MANY_HARD_CAP, MAX_DURATION_MS, MIN_LEASE_MS,
};

fn read_claim(f: &mut Fields, st: &AppState, many: bool) -> Option<Claim> {
    let d = &st.settings.dispatch;
    let worker = f.req_str("workerId", 1);
    let lease = f.opt_uint("leaseMs", 0);
    let wait = f.opt_uint("waitMs", 0);
    let limit = if many { f.opt_uint("limit", 1) } else { None };
    let chat_id = f.opt_str("chatId").filter(|s| !s.is_empty());
    let agent_id = f.opt_str("agentId").filter(|s| !s.is_empty());
    let cap = d.claim_many_limit.min(CLAIM_MANY_HARD_CAP);
    Some(Claim {
        worker_id: worker?,
        lease_ms: lease
            .unwrap_or(d.lease_ms)
            .clamp(MIN_LEASE_MS, MAX_DURATION_MS),
        wait_ms: wait.unwrap_or(d.claim_wait_ms).min(MAX_DURATION_MS),
        limit: if many {
            limit.map_or(cap, |l| (l.min(u32::MAX as u64) as u32).min(cap))
        } else {
            1
        },
        filter: ClaimFilter { chat_id, agent_id },
    })
}

pub async fn claim(
    _: Write,
    req: HttpRequest,
    st: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let mut f = write_body(&req, &st, payload).await?;
    let c = read_claim(&mut f, &st, false);
    f.finish()?;
    let Some(c) = c else { return Ok(no_content()) };
    let mut got = store(&st).claim(c).await?;
    Ok(match got.pop() {
        Some(b) => ok(b),
        None => no_content(),
    })
}

pub async fn claim_many(
    _: Write,
    req: HttpRequest,
    st: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let mut f = write_body(&req, &st, payload).await?;
    let c = read_claim(&mut f, &st, true);
    f.finish()?;
    let Some(c) = c else { return Ok(no_content()) };
    let got = store(&st).claim(c).await?;
    Ok(if got.is_empty() {
        no_content()
    } else {
        ok(json!({ "batches": got }))
    })
}

pub async fn heartbeat(
    _: Write,
    req: HttpRequest,
    st: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let mut f = write_body(&req, &st, payload).await?;
    let worker = f.req_str("workerId", 1);
    let extend = f.opt_uint("extendMs", 0);
    f.finish()?;
    store(&st)
        .heartbeat(&id, &worker.unwrap_or_default(), extend)
        .await?;
    Ok(no_content())
}

pub async fn complete(
    _: Write,
    req: HttpRequest,
    st: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let mut f = write_body(&req, &st, payload).await?;
    let worker = f.req_str("workerId", 1);
    f.finish()?;
    store(&st)
        .complete(&id, &worker.unwrap_or_default())
        .await?;
    Ok(no_content())
}

pub async fn fail(
    _: Write,
    req: HttpRequest,
    st: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let mut f = write_body(&req, &st, payload).await?;
    let worker = f.req_str("workerId", 1);
    let reason = f.req_str("reason", 1);
    if reason.as_deref().is_some_and(|r| r.trim().is_empty()) {
        f.err("reason", "String must contain at least 1 character(s)");
    }
    let retryable = f.req_bool("retryable");
    let delay = f.opt_uint("retryDelayMs", 0);
    f.finish()?;
    let failure = Failure {
        worker_id: worker.unwrap_or_default(),
        reason: reason.unwrap_or_default(),
        retryable: retryable.unwrap_or(false),
        retry_delay_ms: delay,
    };
    store(&st).fail(&id, failure).await?;
    Ok(no_content())
}
