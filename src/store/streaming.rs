//! Streamed messages: chunks appended as they come (held in memory for a while, see
//! [`super::tails`]), completion, cancellation, and the sweep of streams left open past
//! `STREAM_TIMEOUT_SECONDS`.

use std::sync::Arc;

use crate::store::sql::{args, Db};

use serde_json::{json, Value};

use super::chats::{cut, ensure_chat, PREVIEW_MAX_CHARS};
use super::db::{iso, now_ms};
use super::error::StoreError;
use super::events::Event;
use super::messages::load_message;
use super::{Store, W};

/// The message, 404 if unknown, 409 unless it is streaming.
fn load_streaming(c: &dyn Db, id: &str) -> Result<Value, StoreError> {
    let m = load_message(c, id)?;
    if m["stream_state"] != "streaming" {
        return Err(StoreError::conflict(
            "Message is not in streaming state.",
            Some(json!({ "messageId": id, "streamState": m["stream_state"] })),
        ));
    }
    Ok(m)
}

impl W<'_> {
    /// Ends a stream: `complete` (with the final text) or `cancelled`; emits
    /// `message.streaming.complete`.
    fn finish_stream(
        &mut self,
        m: &Value,
        final_text: Option<String>,
        cancel: bool,
        with_role: bool,
    ) -> Result<Value, StoreError> {
        let id = m["id"].as_str().unwrap_or_default().to_string();
        let chat_id = m["chat_id"].as_str().unwrap_or_default().to_string();
        // The text streamed so far: the tail's, which has what the database may not have yet.
        let held = self.tails.close(&id);
        if held.is_some() {
            let (tails, id) = (self.tails.clone(), id.clone());
            self.after(move |committed| tails.closed(&id, committed));
        }
        let final_text = if cancel {
            None
        } else {
            Some(final_text.unwrap_or_else(|| {
                held.clone()
                    .unwrap_or_else(|| m["content_partial"].as_str().unwrap_or("").to_string())
            }))
        };
        if cancel {
            self.c.execute(
                "UPDATE messages SET stream_state = 'cancelled', updated_at = ?2, \
                 content_partial = COALESCE(?3, content_partial) WHERE id = ?1",
                args![id, self.now, held],
            )?;
        } else {
            self.c
                .execute("UPDATE messages SET stream_state = 'complete', content_final = ?2, content_partial = NULL, updated_at = ?3 WHERE id = ?1", args![id, final_text, self.now])?;
            if let Some(t) = final_text.as_deref().filter(|t| !t.is_empty()) {
                self.c.execute(
                    "UPDATE chats SET last_message_preview = ?2, updated_at = ?3 WHERE id = ?1",
                    args![chat_id, cut(t, PREVIEW_MAX_CHARS), self.now],
                )?;
            }
        }
        let mut payload = json!({
            "chatId": chat_id, "messageId": id,
            "streamState": if cancel { "cancelled" } else { "complete" },
            "finalText": final_text,
        });
        if with_role {
            payload["role"] = m["role"].clone();
        }
        self.emit("message.streaming.complete", payload)?;
        load_message(self.c, &id)
    }

    /// Cancels streaming messages idle since before `now - timeout`; returns the next deadline.
    pub(crate) fn sweep_streams(&mut self) -> Result<Option<i64>, StoreError> {
        let timeout_ms = self
            .settings
            .stream_timeout_secs
            .saturating_mul(1000)
            .min(super::dispatch::MAX_DURATION_MS) as i64;
        let stale: Vec<String> = {
            self.c.all("SELECT id FROM messages WHERE stream_state = 'streaming' AND updated_at <= ?1 LIMIT 500", args![self.now - timeout_ms])?
        };
        // A stream whose last chunks are still only in memory is not idle: it is due when its
        // tail says.
        let mut held_due: Option<i64> = None;
        for id in stale {
            if let Some(at) = self
                .tails
                .updated_at(&id)
                .filter(|at| *at > self.now - timeout_ms)
            {
                held_due = Some(held_due.map_or(at, |d| d.min(at)));
                continue;
            }
            let m = load_message(self.c, &id)?;
            self.finish_stream(&m, None, true, true)?;
        }
        let oldest: Option<i64> = self.c.one(
            "SELECT MIN(updated_at) FROM messages WHERE stream_state = 'streaming'",
            args![],
        )?;
        let due = oldest.map(|t| t + timeout_ms);
        Ok(match held_due {
            // Rows the database calls stale are held ones, which their next flush updates: look
            // again when the earliest of them is due, or a second from now at the latest.
            Some(at) => {
                Some((at + timeout_ms).min(due.map_or(i64::MAX, |d| d.max(self.now + 1000))))
            }
            None => due,
        })
    }
}

/// The ephemeral `message.streaming.chunk` event of one chunk.
fn chunk_event(chat: &Value, id: &str, delta: &str, now: i64) -> Event {
    Event {
        seq: None,
        id: crate::ids::new_id(),
        kind: "message.streaming.chunk".into(),
        timestamp: iso(now),
        payload: json!({ "chatId": chat, "messageId": id, "deltaText": delta }),
    }
}

/// Writes the streamed text held in memory at most `STREAM_FLUSH_MS` after it came, until the
/// store closes.
pub(super) async fn run_flusher(store: Store) {
    let Some(every) = store.inner.tails.flush_every() else {
        return;
    };
    loop {
        store.inner.tails.wait_dirty().await;
        if store.is_closed() {
            return;
        }
        tokio::time::sleep(every).await;
        if store.is_closed() {
            return;
        }
        if let Err(e) = store.flush_tails().await {
            tracing::warn!(error = %e, "streamed text could not be written; trying again");
            store.inner.tails.wake();
        }
    }
}

impl Store {
    /// Writes every streamed text held in memory that the database does not have yet.
    pub(super) async fn flush_tails(&self) -> Result<(), StoreError> {
        if !self.inner.tails.enabled() {
            return Ok(());
        }
        self.write(|w| {
            let mut written = Vec::new();
            let mut gone = Vec::new();
            for f in w.tails.dirty() {
                let n = w.c.execute(
                    "UPDATE messages SET content_partial = ?2, updated_at = ?3 WHERE id = ?1 AND stream_state = 'streaming'",
                    args![f.id, f.text, f.updated_at],
                )?;
                if n == 0 {
                    gone.push(f.id);
                } else {
                    written.push(f);
                }
            }
            let tails = w.tails.clone();
            w.after(move |committed| {
                if committed {
                    for f in &written {
                        tails.flushed(f);
                    }
                    for id in &gone {
                        tails.forget(id);
                    }
                }
            });
            Ok(())
        })
        .await
    }

    /// Appends a chunk to a streaming message; emits ephemeral `message.streaming.chunk`.
    pub async fn append_chunk(&self, message_id: &str, delta: String) -> Result<Value, StoreError> {
        let tails = self.inner.tails.clone();
        if tails.enabled() {
            let bus = self.inner.events.clone();
            let publish = move |chat: &Value, id: &str, delta: &str, now: i64| {
                let _ = bus.send(Arc::new(chunk_event(chat, id, delta, now)));
            };
            let now = now_ms();
            let shown = tails.append(message_id, &delta, now, |chat| {
                publish(chat, message_id, &delta, now)
            });
            if let Some(m) = shown {
                return Ok(m);
            }
            // No open tail (a restart, or the stream is ending): decided by the writer. Should its
            // group roll back (a full disk), this chunk's caller gets the error but the tail opened
            // here keeps its text: the stored text plus chunks others may have appended since.
            let id = message_id.to_string();
            return self
                .write(move |w| {
                    let now = w.now;
                    if let Some(m) = w
                        .tails
                        .append(&id, &delta, now, |chat| publish(chat, &id, &delta, now))
                    {
                        return Ok(m);
                    }
                    let m = load_streaming(w.c, &id)?;
                    let chat = m["chat_id"].clone();
                    w.tails
                        .open(&m, Some(&delta), now, || publish(&chat, &id, &delta, now))
                        .ok_or_else(|| StoreError::Internal("streamed text is not held".into()))
                })
                .await;
        }
        let id = message_id.to_string();
        self.write(move |w| {
            let m = load_streaming(w.c, &id)?;
            w.c.execute("UPDATE messages SET content_partial = COALESCE(content_partial, '') || ?2, updated_at = ?3 WHERE id = ?1", args![id, delta, w.now])?;
            w.ephemeral(
                "message.streaming.chunk",
                json!({ "chatId": m["chat_id"], "messageId": id, "deltaText": delta }),
            );
            load_message(w.c, &id)
        })
        .await
    }

    /// Completes a streaming message with `final_text`, or the accumulated text. `trace` (an
    /// agentd extension: what the agent reports at the end, such as model and usage) is merged
    /// into the message's trace as a JSON Merge Patch.
    pub async fn complete_stream(
        &self,
        message_id: &str,
        final_text: Option<String>,
        trace: Option<serde_json::Map<String, Value>>,
    ) -> Result<Value, StoreError> {
        let id = message_id.to_string();
        self.write(move |w| {
            let m = load_streaming(w.c, &id)?;
            if let Some(t) = trace {
                // Merged here rather than in SQL: PostgreSQL has no JSON Merge Patch.
                let old: Option<String> =
                    w.c.one("SELECT trace FROM messages WHERE id = ?1", args![id])?;
                let mut trace = old
                    .and_then(|o| serde_json::from_str::<Value>(&o).ok())
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({}));
                json_patch::merge(&mut trace, &Value::Object(t));
                w.c.execute(
                    "UPDATE messages SET trace = ?2 WHERE id = ?1",
                    args![id, trace.to_string()],
                )?;
            }
            w.finish_stream(&m, final_text, false, true)
        })
        .await
    }

    /// Cancels a streaming message (its partial text is kept).
    pub async fn cancel_message(&self, message_id: &str) -> Result<Value, StoreError> {
        let id = message_id.to_string();
        self.write(move |w| {
            let m = load_streaming(w.c, &id)?;
            w.finish_stream(&m, None, true, true)
        })
        .await
    }

    /// Cancels every streaming message of a chat; returns their ids.
    pub async fn cancel_streaming(&self, chat_id: &str) -> Result<Vec<String>, StoreError> {
        let chat_id = chat_id.to_string();
        self.write(move |w| {
            ensure_chat(w.c, &chat_id)?;
            let ids: Vec<String> = {
                w.c.all("SELECT id FROM messages WHERE chat_id = ?1 AND stream_state = 'streaming' ORDER BY seq", args![&chat_id])?
            };
            for id in &ids {
                let m = load_message(w.c, id)?;
                w.finish_stream(&m, None, true, false)?;
            }
            Ok(ids)
        })
        .await
    }
}
