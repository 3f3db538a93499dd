//! One log line per request: at debug for every answer (method, path, status, ms), at info for
//! a 4xx with its reason, so a refused client request always leaves a trace without turning
//! on debug logging.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

/// The access-log middleware; the path is logged without its query (which may carry a key).
pub async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_string();
    let res = next.call(req).await?;
    let status = res.status();
    let ms = started.elapsed().as_millis() as u64;
    if status.is_client_error() {
        let reason = match res.response().error() {
            Some(e) => e.to_string(),
            None => status.canonical_reason().unwrap_or_default().to_string(),
        };
        tracing::info!(target: "agentd::access", %method, path, status = status.as_u16(), ms, reason, "request refused");
    } else {
        tracing::debug!(target: "agentd::access", %method, path, status = status.as_u16(), ms, "request");
    }
    Ok(res)
}
