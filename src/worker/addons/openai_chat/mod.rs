//! `openai_chat`: any OpenAI-compatible `POST {base_url}/chat/completions`, streamed over SSE
//! token by token into the chat. [`stream`] reads the provider's event stream.

mod stream;

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use serde_json::{json, Value};

use super::PropertyError;
use crate::contract::addons::property::{boolean, http_url, number, text, uint};
use crate::worker::client::{error_chain, parse_retry_after, Message};
use crate::worker::turn::{Turn, TurnError};

pub use stream::{parse_frame, Deltas, Frame};

/// Least time between two chunks written to the chat.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Longest wait for the provider's response headers.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);

/// The addon's properties.
#[derive(Debug, Clone)]
pub struct OpenAiChat {
    pub base_url: String,
    pub api_key: String,
    pub model: String,
    pub system_prompt: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u64>,
    /// How many earlier messages of the chat go with the request.
    pub memory: u64,
    /// Stream into the chat (default) or post the whole answer at the end.
    pub stream: bool,
    http: reqwest::Client,
}

/// How a provider call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// 401/403: the key is wrong; trying again will not help.
    #[error("the model provider rejected the request (HTTP {status}): {message}")]
    Auth { status: u16, message: String },
    /// 429, with the provider's wait hint.
    #[error("the model provider is rate limiting (HTTP 429): {message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// 5xx, 408: the provider's own trouble.
    #[error("the model provider failed (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    /// Other 4xx: our request is wrong for this provider.
    #[error("the model provider refused the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("cannot reach the model provider: {0}")]
    Network(String),
    /// The stream stopped before its end.
    #[error("the model provider's stream broke: {0}")]
    Broken(String),
}

impl ProviderError {
    /// The same error with `f` applied to its text.
    fn map_text(self, f: impl Fn(String) -> String) -> ProviderError {
        use ProviderError as P;
        match self {
            P::Auth { status, message } => P::Auth {
                status,
                message: f(message),
            },
            P::RateLimited {
                retry_after,
                message,
            } => P::RateLimited {
                retry_after,
                message: f(message),
            },
            P::Server { status, message } => P::Server {
                status,
                message: f(message),
            },
            P::Rejected { status, message } => P::Rejected {
                status,
                message: f(message),
            },
            P::Network(m) => P::Network(f(m)),
            P::Broken(m) => P::Broken(f(m)),
        }
    }

    pub fn retryable(&self) -> bool {
        !matches!(
            self,
            ProviderError::Auth { .. } | ProviderError::Rejected { .. }
        )
    }
}

impl From<ProviderError> for TurnError {
    fn from(e: ProviderError) -> TurnError {
        TurnError::Provider {
            retryable: e.retryable(),
            retry_delay: match &e {
                ProviderError::RateLimited { retry_after, .. } => *retry_after,
                _ => None,
            },
            reason: e.to_string(),
        }
    }
}

impl OpenAiChat {
    pub fn from_property(p: &Value) -> Result<OpenAiChat, PropertyError> {
        let base_url =
            http_url(p, "base_url")?.unwrap_or_else(|| "https://api.openai.com/v1".into());
        let model = text(p, "model")?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| PropertyError::new("model", "is required (a string)"))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| PropertyError::new("base_url", e.to_string()))?;
        Ok(OpenAiChat {
            base_url,
            api_key: text(p, "api_key")?.unwrap_or_default(),
            model,
            system_prompt: text(p, "system_prompt")?.filter(|s| !s.trim().is_empty()),
            temperature: number(p, "temperature")?,
            max_tokens: uint(p, "max_tokens")?,
            memory: uint(p, "memory")?.unwrap_or(10),
            stream: boolean(p, "stream")?.unwrap_or(true),
            http,
        })
    }

    /// Takes the key and the provider's address out of an error's text (a provider may quote
    /// them back): the error goes to the worker's log and, as a failed batch's reason, into the
    /// chat, and both come from the graph's configuration, often from secrets.
    fn redact(&self, e: ProviderError) -> ProviderError {
        e.map_text(|mut text| {
            for secret in [&self.api_key, &self.base_url] {
                if secret.len() >= 4 {
                    text = text.replace(secret.as_str(), "[redacted]");
                }
            }
            text
        })
    }

    /// The request body for `messages`.
    pub fn body(&self, messages: &[Value]) -> Value {
        let mut body = json!({"model": self.model, "messages": messages, "stream": true});
        if let Some(t) = self.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(m) = self.max_tokens {
            body["max_tokens"] = json!(m);
        }
        body
    }

    /// Starts a streamed completion; errors before the first byte of the stream come back here.
    pub async fn start(&self, messages: &[Value]) -> Result<Deltas, ProviderError> {
        let mut req = self
            .http
            .post(format!("{}/chat/completions", self.base_url))
            .header("Accept", "text/event-stream")
            .json(&self.body(messages));
        if !self.api_key.is_empty() {
            req = req.bearer_auth(&self.api_key);
        }
        let res = match tokio::time::timeout(FIRST_BYTE_TIMEOUT, req.send()).await {
            Err(_) => {
                return Err(ProviderError::Network(format!(
                    "no answer within {} s",
                    FIRST_BYTE_TIMEOUT.as_secs()
                )))
            }
            Ok(Err(e)) => return Err(ProviderError::Network(error_chain(&e.without_url()))),
            Ok(Ok(res)) => res,
        };
        let status = res.status().as_u16();
        if !(200..300).contains(&status) {
            let headers = res.headers().clone();
            let text = tokio::time::timeout(Duration::from_secs(10), res.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let message = provider_message(&text);
            return Err(match status {
                401 | 403 => ProviderError::Auth { status, message },
                429 => ProviderError::RateLimited {
                    retry_after: retry_hint(&headers),
                    message,
                },
                408 | 500..=599 => ProviderError::Server { status, message },
                _ => ProviderError::Rejected { status, message },
            });
        }
        Ok(Deltas::new(Box::pin(res.bytes_stream().eventsource())))
    }

    /// The chat messages to send: system prompt, up to `memory` earlier messages, the batch.
    pub fn messages(&self, history: &[Message], batch_sources: &[&str], input: &str) -> Vec<Value> {
        let mut out = Vec::new();
        if let Some(s) = &self.system_prompt {
            out.push(json!({"role": "system", "content": s}));
        }
        // `history` is newest first, as the API lists it. Messages newer than the batch (sent
        // while it was being formed or worked on) belong to the next batch.
        let from = history
            .iter()
            .position(|m| batch_sources.contains(&m.id.as_str()))
            .unwrap_or(0);
        let mut earlier: Vec<Value> = history[from..]
            .iter()
            .filter(|m| !batch_sources.contains(&m.id.as_str()))
            .filter(|m| m.stream_state == "complete" || m.stream_state == "none")
            .filter_map(|m| {
                let role = match m.role.as_str() {
                    "user" => "user",
                    "agent" => "assistant",
                    _ => return None,
                };
                let text = m
                    .content_final
                    .as_deref()
                    .filter(|t| !t.trim().is_empty())?;
                Some(json!({"role": role, "content": text}))
            })
            .take(self.memory as usize)
            .collect();
        earlier.reverse();
        out.extend(earlier);
        // Context sent with the batch's messages (e.g. by the agent messages front door).
        for m in history
            .iter()
            .rev()
            .filter(|m| batch_sources.contains(&m.id.as_str()))
        {
            if let Some(ctx) = m
                .trace
                .as_ref()
                .and_then(|t| t.get("context"))
                .filter(|c| c.is_object())
            {
                out.push(json!({"role": "system", "content": format!("Context of the next message: {ctx}")}));
            }
        }
        out.push(json!({"role": "user", "content": input}));
        out
    }

    pub async fn answer(&self, turn: &mut Turn<'_>) -> Result<(), TurnError> {
        let batch = turn.batch;
        // Read even with no memory: the batch's own messages may carry context.
        let history = {
            let want = (self.memory as usize + batch.items.len() + 5).min(200) as u32;
            turn.client()
                .list_messages(&batch.chat_id, want)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!("cannot read the chat history, answering without it: {e}");
                    vec![]
                })
        };
        let sources: Vec<&str> = batch.items.iter().map(|i| i.source_id.as_str()).collect();
        let messages = self.messages(&history, &sources, &batch.compiled_content);

        let mut deltas = self.start(&messages).await.map_err(|e| self.redact(e))?;
        let mut whole = String::new();
        // Deltas are sent at most every FLUSH_EVERY: every chunk is a write, and writes share the
        // server's rate limit with every other worker.
        let mut pending = String::new();
        let mut last_flush: Option<Instant> = None;
        loop {
            let next = if pending.is_empty() {
                deltas.next().await
            } else {
                let left =
                    last_flush.map_or(Duration::ZERO, |t| FLUSH_EVERY.saturating_sub(t.elapsed()));
                match tokio::time::timeout(left, deltas.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        turn.push(&std::mem::take(&mut pending)).await?;
                        last_flush = Some(Instant::now());
                        continue;
                    }
                }
            };
            let Some(d) = next else { break };
            let d = d.map_err(|e| self.redact(e))?;
            if !self.stream {
                whole.push_str(&d);
                continue;
            }
            pending.push_str(&d);
            if flush_due(last_flush) {
                turn.push(&std::mem::take(&mut pending)).await?;
                last_flush = Some(Instant::now());
            }
        }
        if !pending.is_empty() {
            turn.push(&pending).await?;
        }
        let mut report = json!({"model": self.model});
        if let Some(u) = &deltas.usage {
            tracing::info!(usage = %u, "completion done");
            report["usage"] = u.clone();
        }
        turn.report(report);
        if self.stream {
            if !turn.is_streaming() {
                tracing::warn!("the model answered with no text");
            }
            turn.end_stream().await
        } else {
            turn.say(&whole).await
        }
    }
}

/// Whether the next chunk may go out now.
fn flush_due(last: Option<Instant>) -> bool {
    last.map_or(true, |t| t.elapsed() >= FLUSH_EVERY)
}

/// OpenAI's `retry-after-ms`, else `Retry-After`.
fn retry_hint(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = h
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
    {
        return Some(Duration::from_millis(ms as u64));
    }
    h.get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

fn provider_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| {
            v.get("error").map(|e| {
                e.get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string())
            })
        })
        .unwrap_or_else(|| {
            text.chars()
                .take(300)
                .collect::<String>()
                .trim()
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_retryable_or_not() {
        let auth: TurnError = ProviderError::Auth {
            status: 401,
            message: "bad key".into(),
        }
        .into();
        assert!(!auth.retryable());
        let rl: TurnError = ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            message: String::new(),
        }
        .into();
        assert!(rl.retryable());
        assert_eq!(rl.retry_delay(), Some(Duration::from_secs(7)));
        let s: TurnError = ProviderError::Server {
            status: 503,
            message: String::new(),
        }
        .into();
        assert!(s.retryable());
        let b: TurnError = ProviderError::Broken("cut".into()).into();
        assert!(b.retryable());
    }

    #[test]
    fn properties_and_body() {
        let o = OpenAiChat::from_property(&json!({
            "base_url": "http://127.0.0.1:9/v1/", "api_key": "k", "model": "m",
            "temperature": "0.5", "max_tokens": 64, "memory": 2, "stream": false
        }))
        .unwrap();
        assert_eq!(o.base_url, "http://127.0.0.1:9/v1");
        let b = o.body(&[json!({"role": "user", "content": "hi"})]);
        assert_eq!(b["stream"], true);
        assert_eq!(b["temperature"], 0.5);
        assert_eq!(b["max_tokens"], 64);
        assert!(!o.stream);
        assert!(OpenAiChat::from_property(&json!({"base_url": "ftp://x"})).is_err());
    }

    #[test]
    fn errors_lose_the_key_and_the_address() {
        let o = OpenAiChat::from_property(&json!({
            "base_url": "https://llm.internal/v1", "api_key": "sk-live-123", "model": "m"
        }))
        .unwrap();
        let e = o.redact(ProviderError::Auth {
            status: 401,
            message: "Incorrect API key provided: sk-live-123 for https://llm.internal/v1".into(),
        });
        let text = e.to_string();
        assert!(
            !text.contains("sk-live-123") && !text.contains("llm.internal"),
            "{text}"
        );
        assert!(matches!(e, ProviderError::Auth { status: 401, .. }));
    }

    #[test]
    fn history_is_oldest_first_and_skips_the_batch() {
        let o = OpenAiChat::from_property(
            &json!({"model": "m", "memory": 2, "system_prompt": "be brief"}),
        )
        .unwrap();
        let m = |id: &str, role: &str, text: &str, state: &str| Message {
            id: id.into(),
            role: role.into(),
            sender_id: String::new(),
            content_final: Some(text.into()),
            content_partial: None,
            stream_state: state.into(),
            trace: None,
        };
        let history = [
            m("5", "user", "next batch", "complete"),
            m("4", "user", "now", "complete"),
            m("3", "agent", "half", "cancelled"),
            m("2", "agent", "a2", "complete"),
            m("1", "user", "q1", "complete"),
            m("0", "user", "too old", "complete"),
        ];
        let msgs = o.messages(&history, &["4"], "now");
        let roles: Vec<_> = msgs.iter().map(|v| v["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(msgs[1]["content"], "q1");
        assert_eq!(msgs[2]["content"], "a2");
        assert_eq!(msgs[3]["content"], "now");
    }
}
