//! The dispatch work queue: inputs → batches (per mode), claims with leases, heartbeat,
//! complete, fail with retry/backoff, lease expiry (an expired lease counts as an attempt), and
//! the deadline scheduler in [`scheduler`]; what the queue holds right now in [`queue`].

use crate::store::sql::args;
mod batching;
mod leases;
pub mod queue;
pub mod scheduler;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::error::StoreError;
use super::Store;
use crate::settings::DispatchMode;

/// Hard cap of claim-many, whatever the settings say.
pub const CLAIM_MANY_HARD_CAP: u32 = 50;
/// Shortest lease or heartbeat extension.
pub const MIN_LEASE_MS: u64 = 1000;
/// Longest lease, extension, retry delay or claim wait honoured (larger values are clamped, so
/// deadline arithmetic can never overflow): one year.
pub const MAX_DURATION_MS: u64 = 365 * 24 * 3600 * 1000;

/// Which batches a claim may take. Empty = any (the reference's behaviour).
#[derive(Debug, Clone, Default)]
pub struct ClaimFilter {
    /// Only this chat's batches.
    pub chat_id: Option<String>,
    /// Only batches of chats whose `agent_ids` contain this agent.
    pub agent_id: Option<String>,
}

/// A claim request, after validation and defaults.
#[derive(Debug, Clone)]
pub struct Claim {
    pub worker_id: String,
    pub lease_ms: u64,
    pub wait_ms: u64,
    pub limit: u32,
    pub filter: ClaimFilter,
}

/// A failure report.
#[derive(Debug, Clone)]
pub struct Failure {
    pub worker_id: String,
    pub reason: String,
    pub retryable: bool,
    pub retry_delay_ms: Option<u64>,
}

/// `(chat_id, status, lease_owner, lease_expires_at, attempt_count)`.
type LeaseRow = (String, String, Option<String>, Option<i64>, i64);

struct Input {
    id: String,
    source_kind: String,
    source_id: String,
    sender_id: String,
    content: String,
    trace_kind: Option<String>,
    media_ids: Vec<String>,
}

/// `compiledContent` from the items (see reference 4.7). Attachment names are always empty here
/// (media uploads are not implemented), so no `[attachments: ...]` line appears.
pub fn compile(items: &[Value]) -> String {
    let text = |it: &Value| -> String {
        let c = it["content"].as_str().unwrap_or("");
        if c.trim().is_empty() {
            "(no text)".to_string()
        } else {
            c.to_string()
        }
    };
    match items.len() {
        0 => String::new(),
        1 => text(&items[0]),
        _ => items
            .iter()
            .enumerate()
            .map(|(i, it)| {
                let mut block = format!("[Message {}]\n", i + 1);
                if let Some(names) = it["attachmentNames"].as_array().filter(|a| !a.is_empty()) {
                    block.push_str(&format!("[attachments: {}]\n", Value::Array(names.clone())));
                }
                block.push_str(&text(it));
                block
            })
            .collect::<Vec<_>>()
            .join("\n\n"),
    }
}

impl Store {
    /// Claims up to `limit` batches, waiting up to `wait_ms` for one to become claimable (woken
    /// at once by new work, not by a tick). An empty result means nothing came in time.
    pub async fn claim(&self, c: Claim) -> Result<Vec<Value>, StoreError> {
        let deadline = Instant::now() + Duration::from_millis(c.wait_ms.min(MAX_DURATION_MS));
        let _waiting = crate::observe::claim_waiting();
        loop {
            let notified = self.inner.claims.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let req = c.clone();
            let inner = self.inner.clone();
            let got = self
                .write(move |w| {
                    // Checked in the write transaction: a worker declared gone before it never
                    // gets a lease, and one declared gone after has its lease released.
                    if inner.is_gone(&req.worker_id) {
                        return Ok(Vec::new());
                    }
                    w.claim_tx(&req)
                })
                .await?;
            if self.inner.is_gone(&c.worker_id) {
                return Ok(got);
            }
            if !got.is_empty() || Instant::now() >= deadline || self.is_closed() {
                return Ok(got);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    /// Resets a live lease's expiry to now + max(1000, `extend_ms` or the lease setting).
    pub async fn heartbeat(
        &self,
        batch_id: &str,
        worker_id: &str,
        extend_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        let (id, worker) = (batch_id.to_string(), worker_id.to_string());
        self.write(move |w| {
            w.owned(&id, &worker)?;
            let ext = extend_ms
                .unwrap_or(w.settings.dispatch.lease_ms)
                .clamp(MIN_LEASE_MS, MAX_DURATION_MS) as i64;
            w.c.execute(
                "UPDATE dispatch_batches SET lease_expires_at = ?2 WHERE id = ?1",
                args![id, w.now + ext],
            )?;
            // A shorter extension moves the expiry earlier than the scheduler may plan for.
            w.wake_by(w.now + ext);
            Ok(())
        })
        .await
    }

    /// Completes a leased batch.
    pub async fn complete(&self, batch_id: &str, worker_id: &str) -> Result<(), StoreError> {
        let (id, worker) = (batch_id.to_string(), worker_id.to_string());
        self.write(move |w| {
            w.owned(&id, &worker)?;
            w.c.execute("UPDATE dispatch_batches SET status = 'completed', lease_owner = NULL, lease_expires_at = NULL, \
                 completed_at = ?2 WHERE id = ?1", args![id, w.now])?;
            w.kick_claims();
            if w.mode() == DispatchMode::BatchedSequential {
                w.kick_scheduler();
            }
            Ok(())
        })
        .await
    }

    /// Fails a leased batch: retried after a delay when retryable and attempts remain, else
    /// terminal (with the system message).
    pub async fn fail(&self, batch_id: &str, f: Failure) -> Result<(), StoreError> {
        let id = batch_id.to_string();
        self.write(move |w| {
            let (chat_id, attempts) = w.owned(&id, &f.worker_id)?;
            let reason = f.reason.trim().to_string();
            let d = &w.settings.dispatch;
            if f.retryable && attempts < d.max_attempts as i64 {
                let backoff = d
                    .retry_base_ms
                    .saturating_mul(1u64 << (attempts - 1).clamp(0, 40))
                    .min(d.retry_max_ms);
                let delay = f.retry_delay_ms.unwrap_or(backoff).min(MAX_DURATION_MS) as i64;
                crate::observe::dispatch_retried();
                w.c.execute("UPDATE dispatch_batches SET status = 'pending', available_at = ?2, last_error = ?3, \
                     lease_owner = NULL, lease_expires_at = NULL WHERE id = ?1", args![id, w.now + delay, reason])?;
                w.wake_by(w.now + delay);
                w.kick_claims();
                // Whoever waits for this chat's answer learns why it is late, and when the
                // next try is (a front door gives up at once when that is past its deadline).
                w.ephemeral(
                    "dispatch.failed",
                    json!({
                        "chatId": chat_id,
                        "batchId": id,
                        "reason": reason,
                        "attempt": attempts,
                        "retryable": true,
                        "willRetry": true,
                        "retryInMs": delay,
                    }),
                );
            } else {
                w.terminal_failure(&id, &chat_id, attempts, &reason)?;
            }
            Ok(())
        })
        .await
    }

    /// Agents with work in hand: a batch pending or leased, or an input not yet batched, in one
    /// of their chats. Their on-demand workers are kept alive while it lasts. Chats bound to a
    /// supervisor channel do not count: that channel's own worker serves them.
    pub async fn agents_with_work(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c, _, _| {
            c.all(
                "SELECT ca.agent_id FROM chat_agents ca JOIN chats ch ON ch.id = ca.chat_id \
                 WHERE (ch.external_key IS NULL OR substr(ch.external_key, 1, 8) <> 'channel:') \
                 AND ca.chat_id IN ( \
                 SELECT chat_id FROM dispatch_batches WHERE status IN ('pending', 'leased') \
                 UNION SELECT chat_id FROM dispatch_inputs WHERE state = 'pending') \
                 GROUP BY ca.agent_id",
                args![],
            )
        })
        .await
    }

    /// User typing: extends the batching window and emits ephemeral `chat.user_typing`.
    pub async fn user_typing(&self, chat_id: &str) -> Result<(), StoreError> {
        let id = chat_id.to_string();
        self.write(move |w| {
            super::chats::ensure_chat(w.c, &id)?;
            w.record_user_typing(&id)?;
            w.ephemeral(
                "chat.user_typing",
                json!({ "chatId": id, "senderId": "user:primary" }),
            );
            Ok(())
        })
        .await
    }
}
