//! The provider's answer as it streams: each SSE `data:` payload read into a [`Frame`], and the
//! text deltas of one completion, with the stream's end, breakage and silence told apart.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde_json::Value;

use super::ProviderError;
use crate::worker::client::error_chain;

/// Longest silence of the provider's stream before it counts as broken.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What one SSE `data:` payload of a chat completion stream says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    /// `[DONE]`.
    pub done: bool,
    /// Text of `choices[0].delta.content`.
    pub delta: Option<String>,
    /// A `finish_reason` was given.
    pub finished: bool,
    pub usage: Option<Value>,
    /// An `error` object inside the stream.
    pub error: Option<String>,
}

/// Parses one SSE data payload.
pub fn parse_frame(data: &str) -> Frame {
    let data = data.trim();
    if data == "[DONE]" {
        return Frame {
            done: true,
            ..Frame::default()
        };
    }
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return Frame::default();
    };
    if let Some(e) = v.get("error") {
        return Frame {
            error: Some(
                e.get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string()),
            ),
            ..Frame::default()
        };
    }
    let choice = v.get("choices").and_then(|c| c.get(0));
    Frame {
        done: false,
        delta: choice
            .and_then(|c| c.get("delta"))
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        finished: choice
            .and_then(|c| c.get("finish_reason"))
            .is_some_and(|f| !f.is_null()),
        usage: v.get("usage").filter(|u| !u.is_null()).cloned(),
        error: None,
    }
}

pub(super) type EventStream = Pin<
    Box<
        dyn Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// The text deltas of one streamed completion.
pub struct Deltas {
    events: EventStream,
    ended: bool,
    finished: bool,
    /// The usage frame, once seen.
    pub usage: Option<Value>,
}

impl Deltas {
    pub(super) fn new(events: EventStream) -> Deltas {
        Deltas {
            events,
            ended: false,
            finished: false,
            usage: None,
        }
    }

    /// The next piece of text; `None` at the end; an error when the stream broke.
    pub async fn next(&mut self) -> Option<Result<String, ProviderError>> {
        loop {
            if self.ended {
                return None;
            }
            let ev = match tokio::time::timeout(IDLE_TIMEOUT, self.events.next()).await {
                Err(_) => {
                    self.ended = true;
                    return Some(Err(ProviderError::Broken(format!(
                        "no data for {} s",
                        IDLE_TIMEOUT.as_secs()
                    ))));
                }
                Ok(None) => {
                    self.ended = true;
                    if self.finished {
                        return None;
                    }
                    return Some(Err(ProviderError::Broken(
                        "the stream ended before [DONE]".into(),
                    )));
                }
                Ok(Some(Err(e))) => {
                    self.ended = true;
                    return Some(Err(ProviderError::Broken(error_chain(&e))));
                }
                Ok(Some(Ok(ev))) => ev,
            };
            let f = parse_frame(&ev.data);
            if f.done {
                self.ended = true;
                return None;
            }
            if let Some(e) = f.error {
                self.ended = true;
                return Some(Err(ProviderError::Broken(e)));
            }
            if f.usage.is_some() {
                self.usage = f.usage;
            }
            self.finished |= f.finished;
            if let Some(d) = f.delta {
                return Some(Ok(d));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(
            parse_frame(
                r#"{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#
            ),
            Frame::default()
        );
        let f = parse_frame(
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
        );
        assert_eq!(f.delta.as_deref(), Some("Hel"));
        assert!(!f.finished);
        let f = parse_frame(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#);
        assert!(f.finished && f.delta.is_none());
        let f = parse_frame(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
        );
        assert_eq!(f.usage.unwrap()["total_tokens"], 5);
        assert!(parse_frame(" [DONE]").done);
        assert_eq!(
            parse_frame(r#"{"error":{"message":"overloaded","type":"server_error"}}"#)
                .error
                .as_deref(),
            Some("overloaded")
        );
        assert_eq!(parse_frame("not json"), Frame::default());
    }
}
