//! `GET /health` and `GET /config`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{ok, store, Read, Result};
use crate::http::state::AppState;
use crate::store::{DEFAULT_MODEL, MODELS};

pub async fn health(st: web::Data<AppState>) -> HttpResponse {
    ok(json!({
        "service": "agentd", "status": "ok",
        "version": env!("CARGO_PKG_VERSION"), "uptime": store(&st).uptime_secs(),
    }))
}

/// Agents (the catalog's graphs), models, and the dispatch settings; never a secret.
pub async fn config(_: Read, st: web::Data<AppState>) -> Result<HttpResponse> {
    let s = store(&st);
    let catalog = s.catalog();
    let agents: Vec<_> = catalog
        .graphs()
        .iter()
        .map(|g| {
            json!({
                "id": g.name,
                "name": g.display_name.clone().unwrap_or_else(|| g.name.clone()),
                "description": g.description.clone().unwrap_or_default(),
                "defaultModelId": DEFAULT_MODEL,
            })
        })
        .collect();
    let models: Vec<_> = MODELS
        .iter()
        .map(
            |(id, name, description)| json!({ "id": id, "name": name, "description": description }),
        )
        .collect();
    let set = s.settings();
    let d = &set.dispatch;
    Ok(ok(json!({
        "appName": "agentd",
        "agents": agents,
        "models": models,
        "defaultModelIdForNewChats": DEFAULT_MODEL,
        "titleMaxChars": crate::store::TITLE_MAX_CHARS,
        "security": {
            "instanceSecretEnabled": set.api_key.is_some(),
            "readEndpointsRequireInstanceSecret": set.reads_require_key,
        },
        "server": {
            "streamTimeoutSeconds": set.stream_timeout_secs,
            "idempotencyTtlSeconds": set.idempotency_ttl_secs,
            "writeRateLimit": { "max": set.write_rate_limit_max, "windowMs": set.write_rate_limit_window_ms },
            "dispatch": {
                "mode": d.mode.as_str(),
                "batchDebounceMs": d.batch_debounce_ms,
                "typingGraceMs": d.typing_grace_ms,
                "maxBatchWaitMs": d.max_batch_wait_ms,
                "leaseMs": d.lease_ms,
                "heartbeatIntervalMs": d.heartbeat_interval_ms,
                "claimWaitMs": d.claim_wait_ms,
                "retryBaseMs": d.retry_base_ms,
                "retryMaxMs": d.retry_max_ms,
                "maxAttempts": d.max_attempts,
                "claim": { "claimManyLimit": d.claim_many_limit },
            },
        },
    })))
}
