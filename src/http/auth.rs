//! The shared API key check, and the one sentence every API family answers a 401 with (each in
//! its own envelope).

use actix_web::HttpRequest;
use subtle::ConstantTimeEq;

/// The message of every 401, whichever the family.
pub const UNAUTHORIZED: &str =
    "Missing or invalid API key: send Authorization: Bearer <key> or x-api-key: <key>.";

/// Where a credential may come from.
#[derive(Debug, Clone, Copy)]
pub struct Accept {
    /// `Authorization: Bearer <key>`.
    pub bearer: bool,
    /// `x-api-key: <key>`.
    pub x_api_key: bool,
    /// `?token=<key>` in the query string.
    pub query_token: bool,
}

/// True when `key` is `None` (auth off) or the request carries it in an accepted place.
pub fn is_authorized(req: &HttpRequest, key: Option<&str>, accept: Accept) -> bool {
    let Some(key) = key else { return true };
    let matches = |given: &str| -> bool { given.as_bytes().ct_eq(key.as_bytes()).into() };
    if accept.bearer {
        if let Some(v) = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        {
            if let Some(token) = v.strip_prefix("Bearer ") {
                if matches(token) {
                    return true;
                }
            }
        }
    }
    if accept.x_api_key {
        if let Some(v) = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
            if matches(v) {
                return true;
            }
        }
    }
    if accept.query_token {
        let from_query = form_urlencoded::parse(req.query_string().as_bytes())
            .any(|(k, v)| k == "token" && matches(&v));
        if from_query {
            return true;
        }
    }
    false
}
