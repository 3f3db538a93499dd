//! TEN-compatible HTTP routes. STUB from the skeleton.

use actix_web::{web, HttpResponse};
use serde_json::json;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health));
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"code": "0", "msg": "ok", "data": null}))
}

/// Answer for a route that does not exist.
pub async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(json!({
        "code": "404",
        "msg": format!("no route for {} {}", req.method(), req.path()),
        "data": null
    }))
}
