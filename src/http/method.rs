//! A known path with a method it does not serve: actix answers 405 with `Allow` and no body;
//! this middleware words that answer in the envelope of the path's API family, so a client sees
//! the same shape as every other error of the API it called (not the supervisor's everywhere).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, ALLOW};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use super::api::error::ApiError;
use super::fd_error::{ChatError, ConvError, FdError, V1Error};
use super::state::AppState;
use super::ten_error::TenError;

/// The 405 middleware; any other answer passes unchanged.
pub async fn method_envelope(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let res = next.call(req).await?;
    // An answer with an error attached is already in its family's envelope.
    if res.status() != StatusCode::METHOD_NOT_ALLOWED || res.response().error().is_some() {
        return Ok(res.map_into_boxed_body());
    }
    let allow = res.headers().get(ALLOW).cloned();
    let (req, _) = res.into_parts();
    let allowed = allow
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut answer = family_answer(&req, &allowed);
    if let Some(v) = allow {
        answer.headers_mut().insert(ALLOW, v);
    } else {
        answer
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(""));
    }
    Ok(ServiceResponse::new(req, answer))
}

/// The 405 in the envelope of the family that owns `req`'s path.
fn family_answer(req: &HttpRequest, allowed: &str) -> HttpResponse {
    let message = format!(
        "{} is not allowed on {}; allowed: {allowed}",
        req.method(),
        req.path()
    );
    let path = req.path();
    let fd = || {
        FdError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            &message,
        )
    };
    if path == "/api/v1" || path.starts_with("/api/v1/") {
        ApiError::MethodNotAllowed(message.clone()).error_response()
    } else if path.starts_with("/v1/agents/") {
        let agent = req.match_info().get("agent_id").unwrap_or_default();
        let quota = match req.app_data::<web::Data<AppState>>() {
            Some(st) => st.frontdoor.limits.peek(agent),
            None => return ChatError(fd()).error_response(),
        };
        V1Error { error: fd(), quota }.error_response()
    } else if ["/agents/", "/teams/", "/api/agents/", "/api/teams/"]
        .iter()
        .any(|p| path.starts_with(p))
    {
        ChatError(fd()).error_response()
    } else if path == "/conversations"
        || ["/conversations/", "/messages/", "/stream/"]
            .iter()
            .any(|p| path.starts_with(p))
        || path == "/events"
    {
        ConvError(fd()).error_response()
    } else {
        TenError::MethodNotAllowed(message).error_response()
    }
}
