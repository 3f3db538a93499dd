//! The web console at `/console`: the files of `console/` in the repository, built into the
//! binary (no build step, no CDN: plain HTML, CSS and ES modules). The page holds no data, so it
//! is served without the key; every call it makes carries the key itself.
//!
//! Caching: `no-cache` with an `ETag` (a hash of the file), so a browser asks again each time
//! and gets a 304 while the binary is the same, and never runs a console older than its server.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{guard, web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use super::supervisor::not_found;

/// One file of the console.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! assets {
    ($($name:literal => $ty:expr),* $(,)?) => {
        &[$(Asset {
            name: $name,
            content_type: $ty,
            body: include_bytes!(concat!("../../console/", $name)),
        }),*]
    };
}

const JS_TYPE: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = assets![
    "index.html" => "text/html; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "app.js" => JS_TYPE,
    "api.js" => JS_TYPE,
    "dom.js" => JS_TYPE,
    "workers.js" => JS_TYPE,
    "logs.js" => JS_TYPE,
    "chats.js" => JS_TYPE,
    "requests.js" => JS_TYPE,
    "dispatch.js" => JS_TYPE,
    "docs.html" => "text/html; charset=utf-8",
    "docs.css" => "text/css; charset=utf-8",
    "docs.js" => JS_TYPE,
];

/// Only scripts and styles of this origin, calls to this origin, no frames, no plug-ins.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Resources, not guarded routes: a known path with another method is then a 405 with
    // `Allow` (see `super::method`), not the 404 of an unknown path.
    let get_or_head = || web::route().guard(guard::Any(guard::Get()).or(guard::Head()));
    cfg.service(web::resource(["/console", "/console/"]).route(get_or_head().to(index)))
        .service(web::resource("/console/{file}").route(get_or_head().to(file)));
}

/// The `ETag` of each asset, in the order of [`ASSETS`].
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let hash = Sha256::digest(a.body);
                let hex: String = hash[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

async fn index(req: HttpRequest) -> HttpResponse {
    serve(req, "index.html").await
}

async fn file(req: HttpRequest, name: web::Path<String>) -> HttpResponse {
    serve(req, &name).await
}

/// One asset by name, with its caching and security headers; the TEN 404 when there is none.
pub(super) async fn serve(req: HttpRequest, name: &str) -> HttpResponse {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return not_found(req).await;
    };
    let asset = &ASSETS[i];
    let etag = etags()[i].as_str();
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP));
    if fresh {
        return res.finish();
    }
    res.content_type(asset.content_type).body(asset.body)
}
