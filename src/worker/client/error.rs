//! How a call of the API failed, and reading the server's (or a provider's) error answers.

use std::time::Duration;

use serde_json::Value;

/// How a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 409: for dispatch calls the lease is gone; for messages the message is not streaming.
    #[error("conflict (409): {0}")]
    Conflict(String),
    #[error("not found (404): {0}")]
    NotFound(String),
    /// 429: nothing was done; try again after the hint.
    #[error("rate limited (429)")]
    RateLimited(Option<Duration>),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    /// No answer (connection refused, reset, timed out): the call may or may not have happened.
    #[error("network: {0}")]
    Network(String),
    #[error("unexpected answer: {0}")]
    Decode(String),
}

impl ApiError {
    /// True when trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Network(_) | ApiError::RateLimited(_) => true,
            ApiError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// True when the server certainly did nothing (so even a non-idempotent call can be resent).
    pub fn surely_not_done(&self) -> bool {
        matches!(self, ApiError::RateLimited(_))
    }

    /// The server's own wait hint, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited(d) => *d,
            _ => None,
        }
    }
}

/// `Retry-After` as seconds (the HTTP-date form is rare for APIs and read as "soon").
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    if let Ok(s) = v.parse::<f64>() {
        if s.is_finite() && s >= 0.0 {
            return Some(Duration::from_secs_f64(s));
        }
    }
    chrono::DateTime::parse_from_rfc2822(v).ok().map(|t| {
        let ms = (t.timestamp_millis() - chrono::Utc::now().timestamp_millis()).max(0);
        Duration::from_millis(ms as u64)
    })
}

/// The `message` of an error envelope, or the body itself (cut short).
pub(super) fn error_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| {
            v.get("error")
                .and_then(|e| e.get("message").or(Some(e)))
                .map(|m| {
                    m.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| m.to_string())
                })
        })
        .unwrap_or_else(|| text.chars().take(300).collect())
}

/// An error with its causes, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(" 1.5 "),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn error_envelope_message() {
        assert_eq!(
            error_message(
                r#"{"error":{"code":"CONFLICT","message":"Dispatch lease is no longer owned by this worker."}}"#
            ),
            "Dispatch lease is no longer owned by this worker."
        );
        assert_eq!(error_message("Not Found"), "Not Found");
    }
}
