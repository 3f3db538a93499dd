//! Slow clients: a request body must arrive within `BODY_TIMEOUT_MS` of its head. (actix cuts
//! off a head trickled in by itself, `CLIENT_REQUEST_TIMEOUT_MS`, but not a body.) Done once,
//! for every route, by swapping the request's payload for one with a deadline; the readers of
//! every family then see a timed-out body ([`is_timeout`]).

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::HttpMessage;
use bytes::Bytes;
use futures_util::StreamExt;

/// What a body that came too slowly reads as.
const TIMED_OUT: &str = "the request body did not arrive in time";

/// Runs `srv` on `req` with a body that ends in an error once `within` has passed.
pub fn body_deadline<S, B>(mut req: ServiceRequest, srv: &S, within: Duration) -> S::Future
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let payload = req.take_payload();
    let deadline = tokio::time::Instant::now() + within;
    let timed = futures_util::stream::unfold(Some(payload), move |state| async move {
        let mut payload = state?;
        match tokio::time::timeout_at(deadline, payload.next()).await {
            Ok(Some(chunk)) => Some((chunk, Some(payload))),
            Ok(None) => None,
            Err(_) => Some((
                Err(PayloadError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    TIMED_OUT,
                ))),
                None,
            )),
        }
    });
    let boxed: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, PayloadError>>>> =
        Box::pin(timed);
    req.set_payload(Payload::from(boxed));
    srv.call(req)
}

/// True when a payload error is the body deadline passing.
pub fn is_timeout(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}
