//! One answer to one batch: the messages and requests an addon writes, sent so that a retry never
//! doubles them.
//!
//! Message creation and chunks are not idempotent on the server, so they are resent only when the
//! server certainly did nothing (429); after an unclear failure (no answer, 5xx) the chat is read
//! back first. Every message carries `trace.batchId` and a per-reply `trace.reply` key for that.
//!
//! One piece: every method of [`Turn`] follows the same never-double rule over the same state (the
//! batch, the replies opened so far and what the chat is known to hold), so splitting it would
//! only spread that rule across files.

use std::future::Future;
use std::time::Duration;

use serde_json::{json, Value};

use super::client::{ApiError, Batch, Client, Message};

/// How many recent messages are read back to find an earlier write.
const LOOKBACK: u32 = 50;
/// Tries of one call before giving up on a transient failure.
const MAX_TRIES: u32 = 6;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why an answer failed.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The chat API failed (after retries).
    #[error("chat API: {0}")]
    Api(#[from] ApiError),
    /// The model provider (or the addon's own work) failed.
    #[error("{reason}")]
    Provider {
        reason: String,
        retryable: bool,
        retry_delay: Option<Duration>,
    },
}

impl TurnError {
    /// Whether the batch should be offered again.
    pub fn retryable(&self) -> bool {
        match self {
            TurnError::Api(_) => true,
            TurnError::Provider { retryable, .. } => *retryable,
        }
    }

    /// The delay to ask for in `fail`, if any.
    pub fn retry_delay(&self) -> Option<Duration> {
        match self {
            TurnError::Provider { retry_delay, .. } => *retry_delay,
            TurnError::Api(e) => e.retry_after(),
        }
    }
}

/// Calls `f` until it succeeds, fails for good, or has failed transiently `MAX_TRIES` times.
/// Only for calls that are safe to repeat.
pub async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut tries = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && tries + 1 < MAX_TRIES => {
                tries += 1;
                tracing::debug!("{what}: {e}; trying again");
                tokio::time::sleep(e.retry_after().unwrap_or(backoff)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => return Err(e),
        }
    }
}

/// A streaming message being written.
#[derive(Debug)]
struct Open {
    id: String,
    text: String,
}

/// The writer of one batch's answer.
pub struct Turn<'a> {
    client: &'a Client,
    /// The batch being answered.
    pub batch: &'a Batch,
    /// Sender id of the answer.
    pub agent_id: &'a str,
    worker_id: &'a str,
    /// `modelId` sent with messages.
    pub model_id: String,
    /// Unique per attempt, so the keys of this attempt differ from an earlier one's.
    attempt: String,
    replies: u32,
    requests: u32,
    open: Option<Open>,
    /// Key of a streaming message whose creation may have happened without us knowing its id.
    unsure: Option<String>,
    /// What the answer reports about itself (model, usage): merged into its trace.
    report: Option<Value>,
}

impl<'a> Turn<'a> {
    pub fn new(
        client: &'a Client,
        batch: &'a Batch,
        agent_id: &'a str,
        worker_id: &'a str,
    ) -> Turn<'a> {
        Turn {
            client,
            batch,
            agent_id,
            worker_id,
            model_id: agent_id.to_string(),
            attempt: nanoid::nanoid!(10),
            replies: 0,
            requests: 0,
            open: None,
            unsure: None,
            report: None,
        }
    }

    /// The API client (for reads such as the chat history).
    pub fn client(&self) -> &'a Client {
        self.client
    }

    /// Whether a streaming message is open.
    pub fn is_streaming(&self) -> bool {
        self.open.is_some()
    }

    /// The text streamed so far into the open message.
    pub fn streamed_text(&self) -> &str {
        self.open.as_ref().map(|o| o.text.as_str()).unwrap_or("")
    }

    fn next_key(&mut self) -> String {
        self.replies += 1;
        format!("{}:{}:{}", self.batch.batch_id, self.attempt, self.replies)
    }

    fn trace(&self, key: &str) -> Value {
        let mut t =
            json!({"batchId": self.batch.batch_id, "reply": key, "workerId": self.worker_id});
        if let Some(r) = &self.report {
            json_patch::merge(&mut t, r);
        }
        t
    }

    /// Sets what the answer reports about itself (e.g. `{"model", "usage"}`); it goes into the
    /// trace of a whole answer, or with the completion of a streamed one.
    pub fn report(&mut self, report: Value) {
        self.report = Some(report);
    }

    /// Finds our message with reply key `key` among the chat's recent messages.
    async fn find(&self, key: &str) -> Option<Message> {
        let chat = &self.batch.chat_id;
        let list = retry("read back messages", || {
            self.client.list_messages(chat, LOOKBACK)
        })
        .await
        .ok()?;
        list.into_iter().find(|m| m.trace_str("reply") == Some(key))
    }

    /// Creates a message exactly once, reading back after an unclear failure.
    async fn create_once(&self, key: &str, body: &Value) -> Result<Message, ApiError> {
        let chat = &self.batch.chat_id;
        let mut backoff = FIRST_BACKOFF;
        let mut tries = 0;
        loop {
            match self.client.create_message(chat, body).await {
                Ok(m) => return Ok(m),
                Err(e) if e.is_transient() && tries + 1 < MAX_TRIES => {
                    tries += 1;
                    tokio::time::sleep(e.retry_after().unwrap_or(backoff)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    if !e.surely_not_done() {
                        if let Some(m) = self.find(key).await {
                            return Ok(m);
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Posts `text` as one whole message. Empty text posts nothing.
    pub async fn say(&mut self, text: &str) -> Result<(), TurnError> {
        if text.trim().is_empty() {
            return Ok(());
        }
        let key = self.next_key();
        let body = json!({
            "role": "agent",
            "senderId": self.agent_id,
            "content": text,
            "modelId": self.model_id,
            "trace": self.trace(&key),
        });
        self.create_once(&key, &body).await?;
        Ok(())
    }

    /// Opens a streaming message (created without `content`, as the protocol wants).
    pub async fn start_stream(&mut self) -> Result<(), TurnError> {
        if self.open.is_some() {
            return Ok(());
        }
        let key = self.next_key();
        let body = json!({
            "role": "agent",
            "senderId": self.agent_id,
            "streaming": true,
            "modelId": self.model_id,
            "trace": self.trace(&key),
        });
        self.unsure = Some(key.clone());
        let m = self.create_once(&key, &body).await?;
        self.unsure = None;
        self.open = Some(Open {
            id: m.id,
            text: String::new(),
        });
        Ok(())
    }

    /// Appends `delta` to the streaming message, opening it first if needed.
    pub async fn push(&mut self, delta: &str) -> Result<(), TurnError> {
        if delta.is_empty() {
            return Ok(());
        }
        if self.open.is_none() {
            self.start_stream().await?;
        }
        let Some(open) = self.open.as_ref() else {
            return Ok(());
        };
        let id = open.id.clone();
        let mut backoff = FIRST_BACKOFF;
        let mut tries = 0;
        loop {
            match self.client.chunk(&id, delta).await {
                Ok(()) => break,
                Err(e) if e.is_transient() && tries + 1 < MAX_TRIES => {
                    tries += 1;
                    tokio::time::sleep(e.retry_after().unwrap_or(backoff)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    if e.surely_not_done() {
                        continue;
                    }
                    // Unclear: see whether the chunk landed before sending it again.
                    match self.partial_of(&id).await {
                        Some(p) if p == self.streamed_text() => continue,
                        // It landed, or we cannot tell: do not risk a doubled chunk; the final
                        // text set at completion is exact either way.
                        _ => break,
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(open) = self.open.as_mut() {
            open.text.push_str(delta);
        }
        Ok(())
    }

    async fn partial_of(&self, id: &str) -> Option<String> {
        let list = self
            .client
            .list_messages(&self.batch.chat_id, LOOKBACK)
            .await
            .ok()?;
        list.into_iter()
            .find(|m| m.id == id)
            .map(|m| m.content_partial.unwrap_or_default())
    }

    /// Completes the streaming message with its whole text; an empty one is cancelled instead.
    pub async fn end_stream(&mut self) -> Result<(), TurnError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        if open.text.trim().is_empty() {
            let _ = retry("cancel empty message", || {
                self.client.cancel_message(&open.id)
            })
            .await;
            return Ok(());
        }
        let mut first = true;
        let r = retry("complete message", || {
            let again = !first;
            first = false;
            let fut =
                self.client
                    .complete_message(&open.id, Some(&open.text), self.report.as_ref());
            async move {
                match fut.await {
                    // A resend after an unclear failure: the first one did it.
                    Err(ApiError::Conflict(_)) if again => Ok(()),
                    r => r,
                }
            }
        })
        .await;
        r.map_err(TurnError::from)
    }

    /// Streams `text` in word-sized pieces (with `delay` between them) and completes it.
    pub async fn stream_text(&mut self, text: &str, delay: Duration) -> Result<(), TurnError> {
        if text.trim().is_empty() {
            return Ok(());
        }
        self.start_stream().await?;
        for (i, piece) in words(text).enumerate() {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            self.push(piece).await?;
        }
        self.end_stream().await
    }

    /// Posts `text` streamed or whole.
    pub async fn answer(
        &mut self,
        text: &str,
        stream: bool,
        delay: Duration,
    ) -> Result<(), TurnError> {
        if stream {
            self.stream_text(text, delay).await
        } else {
            self.say(text).await
        }
    }

    /// Asks the user an interactive request (`{type, title, body?, config}`). The
    /// `Idempotency-Key` is derived from the batch, so a later attempt never asks twice.
    pub async fn ask(&mut self, request: &Value) -> Result<Value, TurnError> {
        self.requests += 1;
        let key = format!("agentd:{}:request:{}", self.batch.batch_id, self.requests);
        let mut body = request.clone();
        if let Some(obj) = body.as_object_mut() {
            obj.entry("trace")
                .or_insert_with(|| json!({"batchId": self.batch.batch_id}));
        }
        let chat = &self.batch.chat_id;
        let r = retry("create request", || {
            self.client.create_request(chat, &body, &key)
        })
        .await?;
        Ok(r)
    }

    /// Cancels whatever this attempt left streaming. Best effort: used on failure and shutdown.
    pub async fn abort(&mut self) {
        if let Some(open) = self.open.take() {
            if let Err(e) = retry("cancel message", || self.client.cancel_message(&open.id)).await {
                tracing::warn!("cannot cancel streaming message {}: {e}", open.id);
            }
        }
        if let Some(key) = self.unsure.take() {
            if let Some(m) = self.find(&key).await {
                if m.stream_state == "streaming" {
                    let _ = self.client.cancel_message(&m.id).await;
                }
            }
        }
    }
}

/// Splits text into pieces that each end after a run of whitespace ("a b" → "a ", "b").
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len();
        let mut seen_space = false;
        for (i, c) in rest.char_indices() {
            if c.is_whitespace() {
                seen_space = true;
            } else if seen_space {
                end = i;
                break;
            }
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_every_character() {
        let v: Vec<_> = words("hello  big\nworld").collect();
        assert_eq!(v, ["hello  ", "big\n", "world"]);
        assert_eq!(words("  lead").collect::<Vec<_>>(), ["  ", "lead"]);
        assert_eq!(words("").count(), 0);
        let s = "héllo wörld ✓";
        assert_eq!(words(s).collect::<String>(), s);
    }
}
