//! Chat front doors: simple agent chat APIs over the same core (issue 5). STUB from the skeleton.

use actix_web::web;

/// Mounts the front-door routes at the root.
pub fn configure(_cfg: &mut web::ServiceConfig) {}
