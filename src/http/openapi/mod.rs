//! The OpenAPI 3.1 document of every route (`GET /openapi.json`) and a page that renders it
//! (`GET /docs`). Both are public: they describe the API and hold no data.
//!
//! The operations are declared in [`paths`], the wire types in [`schemas`]; here the document is
//! finished (who needs the key for what) and served. The page is `console/docs.html` with its
//! script and style, built into the binary like the console, and fetches nothing but this
//! document.

pub mod paths;
pub mod schemas;

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{guard, web, HttpRequest, HttpResponse};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, SecurityRequirement};

/// Routes anyone may call: health checks, this document and its page, the console's files.
pub const PUBLIC: &[&str] = &[
    "/",
    "/health",
    "/api/v1/health",
    "/openapi.json",
    "/docs",
    "/console",
    "/console/{file}",
];

/// Routes that also take the key as `?token=` (event streams a browser opens, and `/api/v1`).
fn takes_query_token(path: &str) -> bool {
    path.starts_with("/api/v1/")
        || path.starts_with("/ops/")
        || path.starts_with("/stream/")
        || path == "/events"
        || path.ends_with("/messages/stream")
}

/// The document, finished: version, security schemes, and each operation's key requirement.
pub fn document() -> OpenApi {
    use utoipa::OpenApi as _;
    let mut doc = paths::ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components.add_security_scheme(
        "api_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
    );
    components.add_security_scheme(
        "token",
        SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("token"))),
    );
    // The chat API also answers under `/api` (TEN's playground calls it there): the same
    // operations, each with an id of its own.
    let aliases: Vec<(String, utoipa::openapi::PathItem)> = doc
        .paths
        .paths
        .iter()
        .filter(|(p, _)| p.starts_with("/agents/") || p.starts_with("/teams/"))
        .map(|(p, item)| {
            let mut item = item.clone();
            for op in operations(&mut item) {
                op.operation_id = op.operation_id.take().map(|id| format!("api_{id}"));
            }
            (format!("/api{p}"), item)
        })
        .collect();
    doc.paths.paths.extend(aliases);
    for (path, item) in doc.paths.paths.iter_mut() {
        if PUBLIC.contains(&path.as_str()) {
            continue;
        }
        let mut schemes = vec!["bearer", "api_key"];
        if takes_query_token(path) {
            schemes.push("token");
        }
        let requirement: Vec<SecurityRequirement> = schemes
            .iter()
            .map(|s| SecurityRequirement::new(*s, Vec::<String>::new()))
            .collect();
        for op in operations(item) {
            op.security = Some(requirement.clone());
        }
    }
    doc
}

/// Every operation of a path.
fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.patch,
        &mut item.delete,
    ]
    .into_iter()
    .flatten()
}

/// The document as JSON, made once.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        // Serialising types made of strings and maps cannot fail; an empty object is the
        // fallback all the same.
        document().to_json().unwrap_or_else(|_| "{}".into())
    })
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    let get_or_head = || web::route().guard(guard::Any(guard::Get()).or(guard::Head()));
    // Resources, not guarded routes: another method is a 405 with `Allow`, not a 404.
    cfg.service(web::resource("/openapi.json").route(get_or_head().to(openapi_json)))
        .service(web::resource("/docs").route(get_or_head().to(docs)));
}

async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .content_type("application/json")
        .body(json())
}

async fn docs(req: HttpRequest) -> HttpResponse {
    super::console::serve(req, "docs.html").await
}
