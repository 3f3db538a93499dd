//! `POST /token/generate`, TEN's route for the Agora token its frontends join the real-time
//! channel with: body `{request_id, channel_name, uid}`, answer `{appId, token, channel_name,
//! uid}` in TEN's envelope. The token is [`crate::agora`]'s AccessToken2 (RTC and RTM, one day),
//! or the App ID itself when no certificate is set, as TEN's server answers.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::state::AppState;
use super::supervisor::{json_body, ok, Key};
use super::ten_error::TenError;
use crate::agora::uid_from_i64;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/token/generate").route(web::post().to(generate)));
}

async fn generate(
    _: Key,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, TenError> {
    let body: Value = json_body(&state, payload).await?;
    let Value::Object(o) = body else {
        return Err(TenError::BadParams("the body must be a JSON object".into()));
    };
    let channel = match o.get("channel_name") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(TenError::BadParams("channel_name must be a string".into())),
    };
    // TEN reads `uid` as a Go uint32: absent is 0.
    let uid = match o.get("uid") {
        None | Some(Value::Null) => 0,
        Some(v) => {
            let raw = v.as_i64().ok_or_else(|| {
                TenError::BadParams("uid must be a whole number from 0 to 4294967295".into())
            })?;
            uid_from_i64(raw).map_err(TenError::Token)?
        }
    };
    if channel.trim().is_empty() {
        return Err(TenError::Token(crate::agora::TokenError::ChannelEmpty));
    }
    let Some(creds) = &state.settings.agora else {
        return Err(TenError::TokenUnconfigured);
    };
    let token = creds.token(&channel, uid).map_err(TenError::Token)?;
    if let Some(id) = o.get("request_id").and_then(Value::as_str) {
        tracing::debug!(request_id = id, channel, uid, "token generated");
    }
    Ok(ok(json!({
        "appId": creds.app_id(),
        "token": token,
        "channel_name": channel,
        "uid": uid,
    })))
}
