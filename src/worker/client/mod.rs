//! A client of the Opengram-compatible chat and dispatch API: just the calls an agent makes.
//!
//! Every call is one HTTP request; retrying is the caller's decision, because only some calls
//! are safe to repeat (chunks and message creation are not idempotent on the server).
//!
//! [`wire`] holds the shapes it reads, [`error`] how a call fails.

mod error;
mod wire;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub use error::{error_chain, parse_retry_after, ApiError};
pub use wire::{Batch, BatchItem, ClaimFilter, Message};

use error::error_message;

/// Per-request timeout of ordinary calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Extra time a long-polling claim gets beyond its `waitMs`.
const CLAIM_SLACK: Duration = Duration::from_secs(15);

/// The API client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
    /// `AGENTD_WORKER_TOKEN`: marks the calls as agentd's own worker's.
    worker_token: Option<String>,
}

impl Client {
    /// `base` is the API root (`http://host:port/api/v1`), `key` the bearer secret if any.
    pub fn new(base: &str, key: Option<String>, worker_token: Option<String>) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            key,
            worker_token,
        }
    }

    /// The API root this client talks to.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
        idempotency_key: Option<&str>,
    ) -> Result<Option<Value>, ApiError> {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .timeout(timeout);
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        if let Some(t) = &self.worker_token {
            req = req.header("x-agentd-worker-token", t);
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .map_err(|e| ApiError::Network(error_chain(&e)))?;
        let status = res.status();
        let retry_after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = res
            .text()
            .await
            .map_err(|e| ApiError::Network(error_chain(&e)))?;
        if status.is_success() {
            if status == StatusCode::NO_CONTENT || text.trim().is_empty() {
                return Ok(None);
            }
            return serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| ApiError::Decode(format!("{path}: {e}")));
        }
        let msg = error_message(&text);
        Err(match status.as_u16() {
            409 => ApiError::Conflict(msg),
            404 => ApiError::NotFound(msg),
            429 => ApiError::RateLimited(retry_after),
            s => ApiError::Status {
                status: s,
                body: msg,
            },
        })
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Option<Value>, ApiError> {
        self.call(Method::POST, path, Some(body), CALL_TIMEOUT, None)
            .await
    }

    fn decode<T: serde::de::DeserializeOwned>(v: Option<Value>, what: &str) -> Result<T, ApiError> {
        let v = v.ok_or_else(|| ApiError::Decode(format!("{what}: empty body")))?;
        serde_json::from_value(v).map_err(|e| ApiError::Decode(format!("{what}: {e}")))
    }

    /// `GET /health`: any success means the API is reachable.
    pub async fn health(&self) -> Result<(), ApiError> {
        self.call(Method::GET, "/health", None, Duration::from_secs(5), None)
            .await
            .map(|_| ())
    }

    /// `POST /dispatch/claim`: a batch, or `None` when nothing came within `wait`.
    pub async fn claim(
        &self,
        worker_id: &str,
        lease: Duration,
        wait: Duration,
        filter: &ClaimFilter,
    ) -> Result<Option<Batch>, ApiError> {
        let mut body = json!({
            "workerId": worker_id,
            "leaseMs": lease.as_millis() as u64,
            "waitMs": wait.as_millis() as u64,
        });
        if let Some(c) = &filter.chat_id {
            body["chatId"] = json!(c);
        }
        if let Some(a) = &filter.agent_id {
            body["agentId"] = json!(a);
        }
        let v = self
            .call(
                Method::POST,
                "/dispatch/claim",
                Some(&body),
                wait + CLAIM_SLACK,
                None,
            )
            .await?;
        match v {
            None => Ok(None),
            v => Self::decode(v, "claim").map(Some),
        }
    }

    /// `POST /dispatch/{id}/heartbeat`.
    pub async fn heartbeat(
        &self,
        batch_id: &str,
        worker_id: &str,
        extend: Duration,
    ) -> Result<(), ApiError> {
        self.post(
            &format!("/dispatch/{batch_id}/heartbeat"),
            &json!({"workerId": worker_id, "extendMs": extend.as_millis() as u64}),
        )
        .await
        .map(|_| ())
    }

    /// `POST /dispatch/{id}/complete`.
    pub async fn complete(&self, batch_id: &str, worker_id: &str) -> Result<(), ApiError> {
        self.post(
            &format!("/dispatch/{batch_id}/complete"),
            &json!({"workerId": worker_id}),
        )
        .await
        .map(|_| ())
    }

    /// `POST /dispatch/{id}/fail`.
    pub async fn fail(
        &self,
        batch_id: &str,
        worker_id: &str,
        reason: &str,
        retryable: bool,
        retry_delay: Option<Duration>,
    ) -> Result<(), ApiError> {
        let reason = if reason.trim().is_empty() {
            "worker error"
        } else {
            reason
        };
        let mut body = json!({"workerId": worker_id, "reason": reason, "retryable": retryable});
        if let Some(d) = retry_delay {
            body["retryDelayMs"] = json!(d.as_millis() as u64);
        }
        self.post(&format!("/dispatch/{batch_id}/fail"), &body)
            .await
            .map(|_| ())
    }

    /// `POST /chats/{id}/messages`.
    pub async fn create_message(&self, chat_id: &str, body: &Value) -> Result<Message, ApiError> {
        let v = self
            .post(&format!("/chats/{chat_id}/messages"), body)
            .await?;
        Self::decode(v, "message")
    }

    /// `POST /messages/{id}/chunks`.
    pub async fn chunk(&self, message_id: &str, delta: &str) -> Result<(), ApiError> {
        self.post(
            &format!("/messages/{message_id}/chunks"),
            &json!({"deltaText": delta}),
        )
        .await
        .map(|_| ())
    }

    /// `POST /messages/{id}/complete`, with the whole text as `finalText`. `report` goes as
    /// `trace` (an agentd extension; other servers ignore the unknown field).
    pub async fn complete_message(
        &self,
        message_id: &str,
        final_text: Option<&str>,
        report: Option<&Value>,
    ) -> Result<(), ApiError> {
        let mut body = match final_text {
            Some(t) => json!({"finalText": t}),
            None => json!({}),
        };
        if let Some(r) = report {
            body["trace"] = r.clone();
        }
        self.post(&format!("/messages/{message_id}/complete"), &body)
            .await
            .map(|_| ())
    }

    /// `POST /messages/{id}/cancel`.
    pub async fn cancel_message(&self, message_id: &str) -> Result<(), ApiError> {
        self.call(
            Method::POST,
            &format!("/messages/{message_id}/cancel"),
            None,
            CALL_TIMEOUT,
            None,
        )
        .await
        .map(|_| ())
    }

    /// `POST /chats/{id}/typing`.
    pub async fn typing(&self, chat_id: &str, agent_id: &str) -> Result<(), ApiError> {
        self.post(
            &format!("/chats/{chat_id}/typing"),
            &json!({"agentId": agent_id}),
        )
        .await
        .map(|_| ())
    }

    /// `GET /chats/{id}/messages?limit=N`: the newest messages, newest first.
    pub async fn list_messages(&self, chat_id: &str, limit: u32) -> Result<Vec<Message>, ApiError> {
        let limit = limit.clamp(1, 200);
        let v = self
            .call(
                Method::GET,
                &format!("/chats/{chat_id}/messages?limit={limit}"),
                None,
                CALL_TIMEOUT,
                None,
            )
            .await?;
        let data = v
            .and_then(|mut v| v.get_mut("data").map(Value::take))
            .unwrap_or(Value::Array(vec![]));
        Self::decode(Some(data), "message list")
    }

    /// One page of `GET /chats/{id}/messages` (newest first) from `cursor`, and the cursor of the
    /// older page when there is one.
    pub async fn messages_page(
        &self,
        chat_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<Message>, Option<String>), ApiError> {
        let mut path = format!("/chats/{chat_id}/messages?limit={}", limit.clamp(1, 200));
        if let Some(c) = cursor {
            path.push_str("&cursor=");
            path.extend(form_urlencoded::byte_serialize(c.as_bytes()));
        }
        let mut v = self
            .call(Method::GET, &path, None, CALL_TIMEOUT, None)
            .await?
            .unwrap_or(Value::Null);
        let next = match (&v["cursor"]["hasMore"], v["cursor"]["next"].as_str()) {
            (Value::Bool(true), Some(n)) => Some(n.to_string()),
            _ => None,
        };
        let data = v
            .get_mut("data")
            .map(Value::take)
            .unwrap_or(Value::Array(vec![]));
        Ok((Self::decode(Some(data), "message list")?, next))
    }

    /// `POST /chats/{id}/requests` with an `Idempotency-Key`, so a resend never asks twice.
    pub async fn create_request(
        &self,
        chat_id: &str,
        body: &Value,
        idempotency_key: &str,
    ) -> Result<Value, ApiError> {
        self.call(
            Method::POST,
            &format!("/chats/{chat_id}/requests"),
            Some(body),
            CALL_TIMEOUT,
            Some(idempotency_key),
        )
        .await?
        .ok_or_else(|| ApiError::Decode("request: empty body".into()))
    }

    /// `GET /chats/{id}/requests?status=all`.
    pub async fn list_requests(&self, chat_id: &str) -> Result<Vec<Value>, ApiError> {
        let v = self
            .call(
                Method::GET,
                &format!("/chats/{chat_id}/requests?status=all"),
                None,
                CALL_TIMEOUT,
                None,
            )
            .await?;
        Ok(
            v.and_then(|v| v.get("data").and_then(Value::as_array).cloned())
                .unwrap_or_default(),
        )
    }
}
