//! The dispatch work queue: inputs → batches (per mode), claims with leases, heartbeat,
//! complete, fail with retry/backoff, lease expiry (an expired lease counts as an attempt), and
//! the deadline scheduler in [`scheduler`].

pub mod scheduler;

use std::time::{Duration, Instant};

use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

use super::db::new_id;
use super::error::StoreError;
use super::{Store, W};
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

impl W<'_> {
    fn mode(&self) -> DispatchMode {
        self.settings.dispatch.mode
    }

    /// The chat's own dispatch mode (front-door chats dispatch `sequential`), else `DISPATCH_MODE`.
    fn chat_mode(&self, chat_id: &str) -> Result<DispatchMode, StoreError> {
        let own: Option<String> = self
            .c
            .prepare_cached("SELECT dispatch_mode FROM chats WHERE id = ?1")?
            .query_row([chat_id], |r| r.get(0))
            .optional()?
            .flatten();
        Ok(match own.as_deref() {
            Some("immediate") => DispatchMode::Immediate,
            Some("sequential") => DispatchMode::Sequential,
            Some("batched_sequential") => DispatchMode::BatchedSequential,
            _ => self.mode(),
        })
    }

    /// Records a dispatch input (a user message or a request resolution). In `immediate` and
    /// `sequential` it becomes a batch at once; in `batched_sequential` it waits for the window.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_input(
        &mut self,
        chat_id: &str,
        source_kind: &str,
        source_id: &str,
        sender_id: &str,
        content: &str,
        trace_kind: Option<String>,
        media_ids: Option<Vec<String>>,
    ) -> Result<(), StoreError> {
        let input = Input {
            id: new_id(),
            source_kind: source_kind.into(),
            source_id: source_id.into(),
            sender_id: sender_id.into(),
            content: content.into(),
            trace_kind,
            media_ids: media_ids.unwrap_or_default(),
        };
        self.c
            .prepare_cached(
                "INSERT INTO dispatch_inputs (id, chat_id, source_kind, source_id, sender_id, content, trace_kind, \
                 media_ids, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9)",
            )?
            .execute(params![
                input.id,
                chat_id,
                input.source_kind,
                input.source_id,
                input.sender_id,
                input.content,
                input.trace_kind,
                json!(input.media_ids).to_string(),
                self.now
            ])?;
        match self.chat_mode(chat_id)? {
            DispatchMode::Immediate | DispatchMode::Sequential => {
                self.create_batch(chat_id, vec![input])?;
            }
            DispatchMode::BatchedSequential => {
                self.c
                    .prepare_cached(
                        "INSERT INTO dispatch_chat_state (chat_id, first_pending_at, last_input_at) VALUES (?1, ?2, ?2) \
                         ON CONFLICT (chat_id) DO UPDATE SET first_pending_at = COALESCE(first_pending_at, ?2), last_input_at = ?2",
                    )?
                    .execute(params![chat_id, self.now])?;
                self.kick_scheduler();
            }
        }
        Ok(())
    }

    /// Makes one pending batch out of `inputs` (oldest first).
    fn create_batch(&mut self, chat_id: &str, inputs: Vec<Input>) -> Result<String, StoreError> {
        let id = new_id();
        let kind = if inputs.iter().all(|i| i.source_kind == "request_resolved") {
            "request_batch"
        } else {
            "user_batch"
        };
        let items: Vec<Value> = inputs
            .iter()
            .map(|i| {
                let mut it = json!({
                    "inputId": i.id, "sourceKind": i.source_kind, "sourceId": i.source_id,
                    "senderId": i.sender_id, "content": i.content,
                    "mediaIds": i.media_ids, "attachmentNames": [],
                });
                if let Some(k) = &i.trace_kind {
                    it["traceKind"] = json!(k);
                }
                it
            })
            .collect();
        let compiled = compile(&items);
        self.c
            .prepare_cached(
                "INSERT INTO dispatch_batches (id, chat_id, kind, status, available_at, created_at, compiled_content, items) \
                 VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?5, ?6)",
            )?
            .execute(params![id, chat_id, kind, self.now, compiled, Value::Array(items).to_string()])?;
        for i in &inputs {
            self.c
                .prepare_cached(
                    "UPDATE dispatch_inputs SET state = 'batched', batch_id = ?2 WHERE id = ?1",
                )?
                .execute(params![i.id, id])?;
        }
        self.kick_claims();
        Ok(id)
    }

    /// Seals every pending input of a chat into one batch and resets its window.
    fn seal(&mut self, chat_id: &str) -> Result<(), StoreError> {
        let inputs: Vec<Input> = {
            let mut stmt = self.c.prepare_cached(
                "SELECT id, source_kind, source_id, sender_id, content, trace_kind, media_ids FROM dispatch_inputs \
                 WHERE chat_id = ?1 AND state = 'pending' ORDER BY seq",
            )?;
            let rows = stmt.query_map([chat_id], |r| {
                let media: String = r.get(6)?;
                Ok(Input {
                    id: r.get(0)?,
                    source_kind: r.get(1)?,
                    source_id: r.get(2)?,
                    sender_id: r.get(3)?,
                    content: r.get(4)?,
                    trace_kind: r.get(5)?,
                    media_ids: serde_json::from_str(&media).unwrap_or_default(),
                })
            })?;
            rows.collect::<Result<_, _>>()?
        };
        self.c
            .prepare_cached(
                "UPDATE dispatch_chat_state SET first_pending_at = NULL, last_input_at = NULL WHERE chat_id = ?1",
            )?
            .execute([chat_id])?;
        if !inputs.is_empty() {
            self.create_batch(chat_id, inputs)?;
        }
        Ok(())
    }

    /// Records user typing for the batching window (`batched_sequential` only).
    pub(crate) fn record_user_typing(&mut self, chat_id: &str) -> Result<(), StoreError> {
        if self.mode() == DispatchMode::BatchedSequential {
            self.c
                .prepare_cached(
                    "INSERT INTO dispatch_chat_state (chat_id, last_user_typing_at) VALUES (?1, ?2) \
                     ON CONFLICT (chat_id) DO UPDATE SET last_user_typing_at = ?2",
                )?
                .execute(params![chat_id, self.now])?;
            self.kick_scheduler();
        }
        Ok(())
    }

    /// Seals the chats whose window has closed; returns the earliest future seal deadline.
    fn seal_due(&mut self) -> Result<Option<i64>, StoreError> {
        if self.mode() != DispatchMode::BatchedSequential {
            return Ok(None);
        }
        let d = &self.settings.dispatch;
        let ms = |v: u64| v.min(MAX_DURATION_MS) as i64;
        let (debounce, grace, max_wait) = (
            ms(d.batch_debounce_ms),
            ms(d.typing_grace_ms),
            ms(d.max_batch_wait_ms),
        );
        let chats: Vec<(String, i64, i64, Option<i64>)> = {
            let mut stmt = self.c.prepare_cached(
                "SELECT s.chat_id, s.first_pending_at, COALESCE(s.last_input_at, s.first_pending_at), s.last_user_typing_at \
                 FROM dispatch_chat_state s WHERE s.first_pending_at IS NOT NULL AND NOT EXISTS ( \
                   SELECT 1 FROM dispatch_batches b WHERE b.chat_id = s.chat_id \
                   AND b.status IN ('pending', 'leased') AND b.status = 'leased')",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut next: Option<i64> = None;
        for (chat, first, last, typing) in chats {
            let hard = first + max_wait;
            let typing_at = typing
                .filter(|t| *t >= first)
                .map(|t| t + grace)
                .unwrap_or(0);
            let soft = (last + debounce).max(typing_at);
            let due = hard.min(soft);
            if self.now >= due {
                self.seal(&chat)?;
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        Ok(next)
    }

    /// Expired leases: back to pending, or a terminal failure once attempts are used up.
    fn expire_due(&mut self) -> Result<(), StoreError> {
        let expired: Vec<(String, String, i64)> = {
            let mut stmt = self.c.prepare_cached(
                "SELECT id, chat_id, attempt_count FROM dispatch_batches WHERE status = 'leased' AND lease_expires_at <= ?1",
            )?;
            let rows = stmt.query_map([self.now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        self.release(expired, "lease expired")
    }

    /// Hands back every lease of `worker` (its process is gone); returns how many.
    pub(crate) fn release_leases_of(&mut self, worker: &str) -> Result<usize, StoreError> {
        let leased: Vec<(String, String, i64)> = {
            let mut stmt = self.c.prepare_cached(
                "SELECT id, chat_id, attempt_count FROM dispatch_batches WHERE status = 'leased' AND lease_owner = ?1",
            )?;
            let rows = stmt.query_map([worker], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let n = leased.len();
        self.release(leased, "worker exited")?;
        Ok(n)
    }

    /// Ends leases that will not be completed: back to pending at once, or a terminal failure
    /// when the batch has used its attempts (an ended lease counts as one: no poison loops).
    fn release(
        &mut self,
        batches: Vec<(String, String, i64)>,
        reason: &str,
    ) -> Result<(), StoreError> {
        for (id, chat_id, attempts) in batches {
            if attempts >= self.settings.dispatch.max_attempts as i64 {
                self.terminal_failure(&id, &chat_id, attempts, reason)?;
            } else {
                self.c
                    .prepare_cached(
                        "UPDATE dispatch_batches SET status = 'pending', available_at = ?2, lease_owner = NULL, \
                         lease_expires_at = NULL, last_error = COALESCE(NULLIF(last_error, ''), ?3) WHERE id = ?1",
                    )?
                    .execute(params![id, self.now, reason])?;
                self.kick_claims();
            }
            tracing::info!(batch = %id, attempts, reason, "dispatch: lease ended");
        }
        Ok(())
    }

    /// Marks a batch failed for good and posts the system message into its chat.
    fn terminal_failure(
        &mut self,
        id: &str,
        chat_id: &str,
        attempts: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.c
            .prepare_cached(
                "UPDATE dispatch_batches SET status = 'failed', last_error = ?2, lease_owner = NULL, \
                 lease_expires_at = NULL, completed_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, reason, self.now])?;
        let text = format!("Dispatch failed after {attempts} attempts: {reason}");
        self.insert_message(
            chat_id,
            "system",
            "system",
            Some(text),
            None,
            "complete",
            Some(json!({ "dispatchFailure": true })),
            true,
        )?;
        self.kick_scheduler();
        self.kick_claims();
        Ok(())
    }

    /// One scheduler pass: expire leases, seal windows, sweep idle streams. Returns the next
    /// moment something is due (epoch ms): a seal, a lease expiry, a retry becoming available,
    /// or an idle stream timing out.
    pub(crate) fn tick(&mut self) -> Result<Option<i64>, StoreError> {
        self.expire_due()?;
        let seal = self.seal_due()?;
        let stream = self.sweep_streams()?;
        let lease: Option<i64> = self
            .c
            .prepare_cached(
                "SELECT MIN(lease_expires_at) FROM dispatch_batches WHERE status = 'leased'",
            )?
            .query_row([], |r| r.get(0))?;
        let retry: Option<i64> = self
            .c
            .prepare_cached("SELECT MIN(available_at) FROM dispatch_batches WHERE status = 'pending' AND available_at > ?1")?
            .query_row([self.now], |r| r.get(0))?;
        Ok([seal, stream, lease, retry].into_iter().flatten().min())
    }

    fn claim_tx(&mut self, c: &Claim) -> Result<Vec<Value>, StoreError> {
        self.expire_due()?;
        let ordered = self.mode() != DispatchMode::Immediate;
        // One statement per filter combination, so each can use its own index.
        let sql = format!(
            "SELECT b.id FROM dispatch_batches b WHERE b.status = 'pending' AND b.available_at <= ?1 {} {} {} \
             ORDER BY b.available_at, b.seq LIMIT ?4",
            if c.filter.chat_id.is_some() { "AND b.chat_id = ?2" } else { "AND ?2 IS NULL" },
            if c.filter.agent_id.is_some() {
                // A chat bound to a supervisor channel is left to that channel's own worker.
                "AND b.chat_id IN (SELECT ca.chat_id FROM chat_agents ca JOIN chats ch ON ch.id = ca.chat_id \
                 WHERE ca.agent_id = ?3 AND (ch.external_key IS NULL OR substr(ch.external_key, 1, 8) <> 'channel:'))"
            } else {
                "AND ?3 IS NULL"
            },
            if ordered {
                "AND NOT EXISTS (SELECT 1 FROM dispatch_batches e WHERE e.chat_id = b.chat_id \
                 AND e.status IN ('pending', 'leased') AND (e.status = 'leased' OR e.seq < b.seq))"
            } else {
                ""
            }
        );
        let ids: Vec<String> = {
            let mut stmt = self.c.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![
                    self.now,
                    c.filter.chat_id,
                    c.filter.agent_id,
                    c.limit as i64
                ],
                |r| r.get(0),
            )?;
            rows.collect::<Result<_, _>>()?
        };
        let expires = self.now + c.lease_ms.clamp(MIN_LEASE_MS, MAX_DURATION_MS) as i64;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            self.c
                .prepare_cached(
                    "UPDATE dispatch_batches SET status = 'leased', attempt_count = attempt_count + 1, lease_owner = ?2, \
                     lease_expires_at = ?3, started_at = COALESCE(started_at, ?4) WHERE id = ?1",
                )?
                .execute(params![id, c.worker_id, expires, self.now])?;
            let (chat_id, kind, compiled, items): (String, String, String, String) = self
                .c
                .prepare_cached("SELECT chat_id, kind, compiled_content, items FROM dispatch_batches WHERE id = ?1")?
                .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            let hint: Option<String> = self
                .c
                .prepare_cached(
                    "SELECT agent_id FROM chat_agents WHERE chat_id = ?1 ORDER BY position LIMIT 1",
                )?
                .query_row([&chat_id], |r| r.get(0))
                .optional()?;
            out.push(json!({
                "batchId": id, "chatId": chat_id, "kind": kind, "agentIdHint": hint,
                "compiledContent": compiled,
                "items": serde_json::from_str::<Value>(&items).unwrap_or(json!([])),
                "attachments": [],
            }));
        }
        if !out.is_empty() {
            // The scheduler must be awake when these leases expire.
            self.wake_by(expires);
        }
        Ok(out)
    }

    /// The batch's `(chat_id, attempt_count)` if `worker` holds a live lease on it; 404/409 otherwise.
    fn owned(&mut self, batch_id: &str, worker: &str) -> Result<(String, i64), StoreError> {
        let row: Option<LeaseRow> = self
            .c
            .prepare_cached(
                "SELECT chat_id, status, lease_owner, lease_expires_at, attempt_count FROM dispatch_batches WHERE id = ?1",
            )?
            .query_row([batch_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .optional()?;
        let Some((chat_id, status, owner, expires, attempts)) = row else {
            return Err(StoreError::not_found("Dispatch batch not found.", None));
        };
        let live = status == "leased"
            && owner.as_deref() == Some(worker)
            && expires.is_some_and(|e| e > self.now);
        if !live {
            return Err(StoreError::conflict(
                "Dispatch lease is no longer owned by this worker.",
                Some(json!({ "batchId": batch_id, "workerId": worker })),
            ));
        }
        Ok((chat_id, attempts))
    }
}

impl Store {
    /// Claims up to `limit` batches, waiting up to `wait_ms` for one to become claimable (woken
    /// at once by new work, not by a tick). An empty result means nothing came in time.
    pub async fn claim(&self, c: Claim) -> Result<Vec<Value>, StoreError> {
        let deadline = Instant::now() + Duration::from_millis(c.wait_ms.min(MAX_DURATION_MS));
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
            w.c.prepare_cached("UPDATE dispatch_batches SET lease_expires_at = ?2 WHERE id = ?1")?
                .execute(params![id, w.now + ext])?;
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
            w.c.prepare_cached(
                "UPDATE dispatch_batches SET status = 'completed', lease_owner = NULL, lease_expires_at = NULL, \
                 completed_at = ?2 WHERE id = ?1",
            )?
            .execute(params![id, w.now])?;
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
                w.c.prepare_cached(
                    "UPDATE dispatch_batches SET status = 'pending', available_at = ?2, last_error = ?3, \
                     lease_owner = NULL, lease_expires_at = NULL WHERE id = ?1",
                )?
                .execute(params![id, w.now + delay, reason])?;
                w.wake_by(w.now + delay);
                w.kick_claims();
            } else {
                w.terminal_failure(&id, &chat_id, attempts, &reason)?;
            }
            Ok(())
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
