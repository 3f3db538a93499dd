//! What can go wrong in the supervisor, and the one place that maps it to TEN codes and HTTP
//! statuses.

use actix_web::http::StatusCode;
use serde_json::{json, Value};
use thiserror::Error;

/// Why `/start` (or [`crate::supervisor::Supervisor::start`]) refused or failed.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("agentd is shutting down")]
    ShuttingDown,
    #[error("channel_name is empty")]
    BlankChannel,
    #[error("{0}")]
    BadParams(String),
    #[error("timeout {0} is not valid: use 0 or nothing (the default), a positive number of seconds, or -1 (never)")]
    BadTimeout(i64),
    #[error("graph {0:?} does not exist")]
    UnknownGraph(String),
    #[error("graph {graph:?} has no node named {unknown:?}; its nodes are {nodes:?}")]
    UnknownNodes {
        graph: String,
        unknown: Vec<String>,
        nodes: Vec<String>,
    },
    #[error("graph {graph:?} needs environment variables that are not set and have no default: {vars:?}")]
    MissingEnv { graph: String, vars: Vec<String> },
    #[error("graph {graph:?} runs on agentd's built-in worker, which has no addon {addon:?} (node {node:?}); known addons: {known:?}")]
    UnknownAddon {
        graph: String,
        node: String,
        addon: String,
        known: Vec<String>,
    },
    #[error("channel {0:?} already has a worker")]
    ChannelExists(String),
    #[error("{max} workers are starting or running (WORKERS_MAX)")]
    WorkersLimit { max: usize },
    #[error("graph {graph:?} already has {max} workers (runtime.max_workers)")]
    GraphLimit { graph: String, max: usize },
    #[error("cannot find or create the chat of this channel: {0}")]
    Chat(String),
    #[error("cannot write the per-worker property file {path}: {source}")]
    PropertyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("the worker exited ({status}) before it was ready")]
    Exited { status: String, output: Vec<String> },
    #[error("the worker was not ready within {timeout_ms} ms ({how})")]
    NotReady {
        timeout_ms: u64,
        how: &'static str,
        output: Vec<String>,
    },
    #[error("the worker was stopped before it was ready")]
    StoppedDuringStart,
}

/// Why `/ping` or `/stop` failed.
#[derive(Debug, Error)]
pub enum ChannelError {
    #[error("channel_name is empty")]
    Blank,
    #[error("{0}")]
    BadParams(String),
    #[error("channel {0:?} has no worker")]
    NotFound(String),
}

/// Everything a supervisor route can answer with other than success.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("missing or wrong API key: send Authorization: Bearer <key> or x-api-key: <key>")]
    Unauthorized,
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
        "401" => "unauthorized",
        _ => "error",
    }
}

impl ApiError {
    /// The TEN code and the HTTP status: the one place where errors meet the wire.
    pub fn code_and_status(&self) -> (&'static str, StatusCode) {
        use StartError as S;
        match self {
            ApiError::Start(e) => match e {
                S::ShuttingDown => ("10101", StatusCode::SERVICE_UNAVAILABLE),
                S::BlankChannel => ("10004", StatusCode::BAD_REQUEST),
                S::BadParams(_) | S::BadTimeout(_) => ("10000", StatusCode::BAD_REQUEST),
                S::UnknownGraph(_) => ("10100", StatusCode::NOT_FOUND),
                S::UnknownNodes { .. } | S::MissingEnv { .. } | S::UnknownAddon { .. } => {
                    ("10100", StatusCode::BAD_REQUEST)
                }
                S::ChannelExists(_) => ("10003", StatusCode::CONFLICT),
                S::WorkersLimit { .. } | S::GraphLimit { .. } => {
                    ("10001", StatusCode::TOO_MANY_REQUESTS)
                }
                S::Chat(_) | S::PropertyFile { .. } => ("10100", StatusCode::INTERNAL_SERVER_ERROR),
                S::Spawn { .. } => ("10101", StatusCode::INTERNAL_SERVER_ERROR),
                S::Exited { .. } => ("10101", StatusCode::BAD_GATEWAY),
                S::NotReady { .. } => ("10101", StatusCode::GATEWAY_TIMEOUT),
                S::StoppedDuringStart => ("10101", StatusCode::CONFLICT),
            },
            ApiError::Channel(e) => match e {
                ChannelError::Blank => ("10004", StatusCode::BAD_REQUEST),
                ChannelError::BadParams(_) => ("10000", StatusCode::BAD_REQUEST),
                ChannelError::NotFound(_) => ("10002", StatusCode::NOT_FOUND),
            },
            ApiError::TooLarge(_) => ("10000", StatusCode::PAYLOAD_TOO_LARGE),
            ApiError::Unauthorized => ("401", StatusCode::UNAUTHORIZED),
        }
    }

    /// The `data` of the envelope: the HTTP status (where TEN put it), the reason, and details.
    fn data(&self, status: StatusCode) -> Value {
        let mut data = json!({"status": status.as_u16(), "detail": self.to_string()});
        let extra = match self {
            ApiError::Start(StartError::Exited { status, output }) => {
                json!({"exit_status": status, "output": output})
            }
            ApiError::Start(StartError::NotReady { output, .. }) => json!({"output": output}),
            ApiError::Start(StartError::UnknownNodes { nodes, unknown, .. }) => {
                json!({"nodes": nodes, "unknown": unknown})
            }
            ApiError::Start(StartError::MissingEnv { vars, .. }) => json!({"variables": vars}),
            ApiError::Start(StartError::UnknownAddon { node, addon, .. }) => {
                json!({"node": node, "addon": addon})
            }
            _ => Value::Null,
        };
        if let (Some(d), Value::Object(e)) = (data.as_object_mut(), extra) {
            d.extend(e);
        }
        data
    }
}

impl actix_web::ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code_and_status().1
    }

    fn error_response(&self) -> actix_web::HttpResponse {
        let (code, status) = self.code_and_status();
        if status.is_server_error() {
            tracing::warn!(code, %status, "{self}");
        }
        actix_web::HttpResponse::build(status).json(json!({
            "code": code,
            "msg": ten_msg(code),
            "data": self.data(status),
        }))
    }
}
