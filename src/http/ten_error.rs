//! The TEN supervisor family's errors: the one place where supervisor failures meet the wire,
//! as TEN's envelope `{code, msg, data}` with string codes and honest HTTP statuses.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web;
use serde_json::{json, Value};
use thiserror::Error;

use super::state::AppState;
use crate::settings::SupervisorStatus;
use crate::supervisor::{ChannelError, StartError};

/// Everything a supervisor route can answer with other than success.
#[derive(Debug, Error)]
pub enum TenError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{}", super::auth::UNAUTHORIZED)]
    Unauthorized,
    /// 408: the body did not arrive within `BODY_TIMEOUT_MS`.
    #[error("the request body did not arrive in time (BODY_TIMEOUT_MS)")]
    BodyTimeout,
    /// A query parameter of agentd's own routes that is not valid.
    #[error("{0}")]
    BadParams(String),
    /// A known path with another method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// `/token/generate` could not make a token.
    #[error("{0}")]
    Token(crate::agora::TokenError),
    /// `/token/generate` without `AGORA_APP_ID`.
    #[error("AGORA_APP_ID is not set: agentd makes no Agora tokens")]
    TokenUnconfigured,
    /// agentd failed on its side (details in its log).
    #[error("{0}")]
    Internal(String),
    /// Too many event streams open: this client's cap (429) or the server's (503).
    #[error(transparent)]
    Streams(#[from] crate::http::sse::StreamRefused),
    /// Several nodes: the channel runs on another live node, which cannot be reached (502).
    #[error("channel {channel:?} runs on node {node:?}, which cannot be reached: {reason}")]
    NodeUnreachable {
        channel: String,
        node: String,
        reason: String,
    },
    /// The storage cannot be written (a full disk: 507; a read-only or deleted database: 503).
    #[error("{}", .0.message())]
    Storage(crate::store::Storage),
}

/// TEN's message for each code.
pub fn ten_msg(code: &str) -> &'static str {
    match code {
        "0" => "success",
        "10000" => "params invalid",
        "10001" => "workers limit",
        "10002" => "channel not existed",
        "10003" => "channel existed",
        "10004" => "channel empty",
        "10100" => "process property json failed",
        "10101" => "start worker failed",
        "10102" => "stop worker failed",
        "10005" => "generate token failed",
        "401" => "unauthorized",
        "500" => "internal error",
        "429" => "too many requests",
        "502" => "bad gateway",
        "503" => "service unavailable",
        "507" => "insufficient storage",
        "405" => "method not allowed",
        _ => "error",
    }
}

impl TenError {
    /// The TEN code and the HTTP status: the one place where errors meet the wire.
    pub fn code_and_status(&self) -> (&'static str, StatusCode) {
        use StartError as S;
        match self {
            TenError::Start(e) => match e {
                S::ShuttingDown | S::Unavailable(_) => ("10101", StatusCode::SERVICE_UNAVAILABLE),
                S::BlankChannel => ("10004", StatusCode::BAD_REQUEST),
                S::BadParams(_) | S::BadTimeout(_) | S::Refused { .. } | S::BadProperty { .. } => {
                    ("10000", StatusCode::BAD_REQUEST)
                }
                S::UnknownGraph { .. } => ("10100", StatusCode::NOT_FOUND),
                S::UnknownNodes { .. } | S::MissingEnv { .. } | S::UnknownAddon { .. } => {
                    ("10100", StatusCode::BAD_REQUEST)
                }
                S::ChannelExists(_) => ("10003", StatusCode::CONFLICT),
                S::WorkersLimit { .. } | S::GraphLimit { .. } => {
                    ("10001", StatusCode::TOO_MANY_REQUESTS)
                }
                // A full disk is the storage's failure, answered as such (see `Storage`).
                S::PropertyFile { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                    ("507", StatusCode::INSUFFICIENT_STORAGE)
                }
                S::Chat(_) | S::PropertyFile { .. } => ("10100", StatusCode::INTERNAL_SERVER_ERROR),
                S::Spawn { .. } => ("10101", StatusCode::INTERNAL_SERVER_ERROR),
                S::Exited { .. } => ("10101", StatusCode::BAD_GATEWAY),
                S::NotReady { .. } => ("10101", StatusCode::GATEWAY_TIMEOUT),
                S::StoppedDuringStart => ("10101", StatusCode::CONFLICT),
            },
            TenError::Channel(e) => match e {
                ChannelError::Blank => ("10004", StatusCode::BAD_REQUEST),
                ChannelError::BadParams(_) => ("10000", StatusCode::BAD_REQUEST),
                ChannelError::NotFound(_) => ("10002", StatusCode::NOT_FOUND),
            },
            TenError::Token(crate::agora::TokenError::ChannelEmpty) => {
                ("10004", StatusCode::BAD_REQUEST)
            }
            TenError::Token(e) if e.is_bad_request() => ("10000", StatusCode::BAD_REQUEST),
            TenError::Token(_) => ("10005", StatusCode::INTERNAL_SERVER_ERROR),
            TenError::MethodNotAllowed(_) => ("405", StatusCode::METHOD_NOT_ALLOWED),
            TenError::TokenUnconfigured => ("10005", StatusCode::SERVICE_UNAVAILABLE),
            TenError::TooLarge(_) => ("10000", StatusCode::PAYLOAD_TOO_LARGE),
            TenError::Unauthorized => ("401", StatusCode::UNAUTHORIZED),
            TenError::BodyTimeout => ("10000", StatusCode::REQUEST_TIMEOUT),
            TenError::BadParams(_) => ("10000", StatusCode::BAD_REQUEST),
            TenError::Internal(_) => ("500", StatusCode::INTERNAL_SERVER_ERROR),
            TenError::NodeUnreachable { .. } => ("502", StatusCode::BAD_GATEWAY),
            TenError::Storage(crate::store::Storage::Full) => {
                ("507", StatusCode::INSUFFICIENT_STORAGE)
            }
            TenError::Storage(_) => ("503", StatusCode::SERVICE_UNAVAILABLE),
            TenError::Streams(r) => match r.status() {
                StatusCode::TOO_MANY_REQUESTS => ("429", StatusCode::TOO_MANY_REQUESTS),
                _ => ("503", StatusCode::SERVICE_UNAVAILABLE),
            },
        }
    }

    /// The `data` of the envelope: the HTTP status (where TEN put it), the reason, and details.
    fn data(&self, status: StatusCode) -> Value {
        let mut data = json!({"status": status.as_u16(), "detail": self.to_string()});
        let extra = match self {
            TenError::Start(StartError::Exited { status, output }) => {
                json!({"exit_status": status, "output": output})
            }
            TenError::Start(StartError::NotReady { output, .. }) => json!({"output": output}),
            TenError::Start(StartError::UnknownNodes { nodes, unknown, .. }) => {
                json!({"nodes": nodes, "unknown": unknown})
            }
            TenError::Start(StartError::UnknownGraph { available, .. }) => {
                json!({ "graphs": available })
            }
            TenError::Start(StartError::MissingEnv { vars, .. }) => json!({"variables": vars}),
            TenError::Start(StartError::UnknownAddon { node, addon, .. }) => {
                json!({"node": node, "addon": addon})
            }
            TenError::Start(StartError::Refused { key, .. }) => json!({ "key": key }),
            TenError::NodeUnreachable { node, .. } => json!({ "node": node }),
            TenError::Start(StartError::BadProperty { node, problem, .. }) => {
                let mut d = json!({
                    "key": format!("properties.{node}.{}", problem.key),
                    "node": node,
                    "property": problem.key,
                });
                if let Some(kind) = problem.message.strip_prefix("must be ") {
                    d["expected"] = kind.into();
                }
                d
            }
            _ => Value::Null,
        };
        if let (Some(d), Value::Object(e)) = (data.as_object_mut(), extra) {
            d.extend(e);
        }
        data
    }
}

impl actix_web::ResponseError for TenError {
    fn status_code(&self) -> StatusCode {
        self.code_and_status().1
    }

    fn error_response(&self) -> actix_web::HttpResponse {
        let (code, status) = self.code_and_status();
        if status.is_server_error() {
            tracing::warn!(code, %status, "{self}");
        }
        let mut res = actix_web::HttpResponse::build(status);
        if let TenError::Streams(_) = self {
            let wait = crate::http::sse::StreamRefused::RETRY_AFTER_SECS;
            res.insert_header(("retry-after", wait.to_string()));
        }
        res.json(json!({
            "code": code,
            "msg": ten_msg(code),
            "data": self.data(status),
        }))
    }
}

/// The routes TEN's server has; agentd's own (`/ops/...`) keep honest statuses in every mode.
const TEN_ROUTES: &[&str] = &[
    "/",
    "/health",
    "/start",
    "/stop",
    "/ping",
    "/list",
    "/graphs",
    "/token/generate",
];

/// With `SUPERVISOR_STATUS=ten`, turns the HTTP status of every supervisor error into 200, as
/// TEN's server answers: TEN's frontends (axios) throw on any other status before they read
/// `code`. The envelope is unchanged; `data.status` still carries the honest status.
pub async fn ten_status(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let ten = TEN_ROUTES.contains(&req.path())
        && req
            .app_data::<web::Data<AppState>>()
            .is_some_and(|st| st.settings.supervisor_status == SupervisorStatus::Ten);
    let mut res = next.call(req).await?;
    if ten
        && res
            .response()
            .error()
            .is_some_and(|e| e.as_error::<TenError>().is_some())
    {
        *res.response_mut().status_mut() = StatusCode::OK;
    }
    Ok(res)
}
