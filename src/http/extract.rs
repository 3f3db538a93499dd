//! What every handler does first, in one place: the key check (an extractor, [`Keyed`], with a
//! [`Guard`] per API family saying where the key may come from and how a refusal looks) and
//! reading a JSON body ([`read_body`], [`parse_json`]; each family words the failures itself).

use std::future::{ready, Ready};
use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, ResponseError};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::auth::{is_authorized, Accept};
use super::state::AppState;

/// One family's access rule.
pub trait Guard {
    type Error: ResponseError + 'static;
    /// `Ok` when the request may go on.
    fn check(req: &HttpRequest, st: &AppState) -> Result<(), Self::Error>;
}

/// Extracting this runs `G`'s check before the handler (and before its body is read).
pub struct Keyed<G>(PhantomData<G>);

impl<G: Guard> FromRequest for Keyed<G> {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(st) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(actix_web::error::ErrorInternalServerError(
                "the server state is missing",
            )));
        };
        ready(
            G::check(req, st)
                .map(|()| Keyed(PhantomData))
                .map_err(actix_web::Error::from),
        )
    }
}

/// True when the request carries the server's key in an accepted place (or no key is set).
pub fn has_key(req: &HttpRequest, st: &AppState, accept: Accept) -> bool {
    is_authorized(req, st.settings.api_key.as_deref(), accept)
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Larger than the limit (which it carries).
    TooLarge(usize),
    /// The connection failed mid-body.
    Unreadable(String),
    /// The body did not arrive within `BODY_TIMEOUT_MS` (a slow or stalled client).
    TimedOut,
}

/// Reads the request body, up to `limit` bytes (an extractor's `dev::Payload` or a
/// handler's `web::Payload`).
pub async fn read_body<P>(mut payload: P, limit: usize) -> Result<Bytes, BodyError>
where
    P: futures_util::Stream<Item = Result<Bytes, actix_web::error::PayloadError>> + Unpin,
{
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => BodyError::TooLarge(limit),
            e if super::slow::is_timeout(&e) => BodyError::TimedOut,
            e => BodyError::Unreadable(e.to_string()),
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Parses a JSON body; `Ok(None)` when it is empty or only whitespace.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<Option<T>, serde_json::Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some)
}

/// A query parameter, decoded.
pub fn query(req: &HttpRequest, name: &str) -> Option<String> {
    form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
