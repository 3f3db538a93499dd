//! Leases: claims take ready batches under a lease; leases end by completion, failure (with
//! retry and backoff), expiry (counted as an attempt) or the worker's death.

use crate::store::sql::args;

use serde_json::{json, Value};

use super::{Claim, LeaseRow, MAX_DURATION_MS, MIN_LEASE_MS};
use crate::settings::DispatchMode;
use crate::store::error::StoreError;
use crate::store::W;

/// Advisory lock name of a scheduler pass: one pass at a time across the nodes sharing a
/// PostgreSQL schema.
const SCHEDULER_LOCK: &str = "agentd.scheduler";
/// When the lock is taken, how soon to try the pass again.
const SCHEDULER_BUSY_RETRY_MS: i64 = 200;

impl W<'_> {
    /// True when this transaction may run a scheduler pass: always on SQLite (one writer), and
    /// on PostgreSQL when no other node's pass holds the lock (never waited for: a pass that
    /// waited inside a group commit could deadlock with the other node's group).
    fn scheduler_lock(&mut self) -> Result<bool, StoreError> {
        match self.c.dialect() {
            crate::store::sql::Dialect::Sqlite => Ok(true),
            crate::store::sql::Dialect::Postgres => self.c.one(
                "SELECT pg_try_advisory_xact_lock(hashtext(current_schema()), hashtext(?1))",
                args![SCHEDULER_LOCK],
            ),
        }
    }

    /// Expired leases: back to pending, or a terminal failure once attempts are used up.
    pub(super) fn expire_due(&mut self) -> Result<(), StoreError> {
        let expired: Vec<(String, String, i64)> = {
            // Rows another node is ending right now are its business.
            self.c.all(
                &format!(
                    "SELECT id, chat_id, attempt_count FROM dispatch_batches WHERE status = 'leased' AND lease_expires_at <= ?1{}",
                    self.c.dialect().skip_locked()
                ),
                args![self.now],
            )?
        };
        for _ in &expired {
            crate::observe::lease_expired();
        }
        self.release(expired, "lease expired")
    }

    /// Hands back every lease of `worker` (its process is gone); returns how many.
    pub(crate) fn release_leases_of(&mut self, worker: &str) -> Result<usize, StoreError> {
        let leased: Vec<(String, String, i64)> = {
            self.c.all(
                &format!(
                    "SELECT id, chat_id, attempt_count FROM dispatch_batches WHERE status = 'leased' AND lease_owner = ?1{}",
                    self.c.dialect().for_update()
                ),
                args![worker],
            )?
        };
        let n = leased.len();
        self.release(leased, "worker exited")?;
        Ok(n)
    }

    /// Ends leases that will not be completed: back to pending at once, or a terminal failure
    /// when the batch has used its attempts (an ended lease counts as one: no poison loops).
    pub(super) fn release(
        &mut self,
        batches: Vec<(String, String, i64)>,
        reason: &str,
    ) -> Result<(), StoreError> {
        for (id, chat_id, attempts) in batches {
            if attempts >= self.settings.dispatch.max_attempts as i64 {
                self.terminal_failure(&id, &chat_id, attempts, reason)?;
            } else {
                self.c
                    .execute("UPDATE dispatch_batches SET status = 'pending', available_at = ?2, lease_owner = NULL, \
                         lease_expires_at = NULL, last_error = COALESCE(NULLIF(last_error, ''), ?3) WHERE id = ?1", args![id, self.now, reason])?;
                self.kick_claims();
            }
            tracing::info!(batch = %id, attempts, reason, "dispatch: lease ended");
        }
        Ok(())
    }

    /// Marks a batch failed for good and posts the system message into its chat.
    pub(super) fn terminal_failure(
        &mut self,
        id: &str,
        chat_id: &str,
        attempts: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        crate::observe::dispatch_failed_for_good();
        self.c.execute(
            "UPDATE dispatch_batches SET status = 'failed', last_error = ?2, lease_owner = NULL, \
                 lease_expires_at = NULL, completed_at = ?3 WHERE id = ?1",
            args![id, reason, self.now],
        )?;
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
        if !self.scheduler_lock()? {
            // Another node's scheduler is in its pass; look again in a moment.
            return Ok(Some(self.now + SCHEDULER_BUSY_RETRY_MS));
        }
        self.expire_due()?;
        let seal = self.seal_due()?;
        let stream = self.sweep_streams()?;
        let lease: Option<i64> = self.c.one(
            "SELECT MIN(lease_expires_at) FROM dispatch_batches WHERE status = 'leased'",
            args![],
        )?;
        let retry: Option<i64> = self
            .c
            .one("SELECT MIN(available_at) FROM dispatch_batches WHERE status = 'pending' AND available_at > ?1", args![self.now])?;
        Ok([seal, stream, lease, retry].into_iter().flatten().min())
    }

    pub(super) fn claim_tx(&mut self, c: &Claim) -> Result<Vec<Value>, StoreError> {
        self.expire_due()?;
        let ordered = self.mode() != DispatchMode::Immediate;
        // One statement per filter combination, so each can use its own index.
        let sql = format!(
            "SELECT b.id FROM dispatch_batches b WHERE b.status = 'pending' AND b.available_at <= ?1 {} {} {} \
             ORDER BY b.available_at, b.seq LIMIT ?4{}",
            if c.filter.chat_id.is_some() { "AND b.chat_id = ?2" } else { "AND CAST(?2 AS TEXT) IS NULL" },
            if c.filter.agent_id.is_some() {
                // A chat bound to a supervisor channel is left to that channel's own worker.
                "AND b.chat_id IN (SELECT ca.chat_id FROM chat_agents ca JOIN chats ch ON ch.id = ca.chat_id \
                 WHERE ca.agent_id = ?3 AND (ch.external_key IS NULL OR substr(ch.external_key, 1, 8) <> 'channel:'))"
            } else {
                "AND CAST(?3 AS TEXT) IS NULL"
            },
            if ordered {
                "AND NOT EXISTS (SELECT 1 FROM dispatch_batches e WHERE e.chat_id = b.chat_id \
                 AND e.status IN ('pending', 'leased') AND (e.status = 'leased' OR e.seq < b.seq))"
            } else {
                ""
            },
            // Another node's claim of the same batch skips it instead of waiting.
            self.c.dialect().skip_locked(),
        );
        let ids: Vec<String> = {
            self.c.all(
                &sql,
                args![
                    self.now,
                    c.filter.chat_id,
                    c.filter.agent_id,
                    c.limit as i64
                ],
            )?
        };
        let expires = self.now + c.lease_ms.clamp(MIN_LEASE_MS, MAX_DURATION_MS) as i64;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            self.c
                .execute("UPDATE dispatch_batches SET status = 'leased', attempt_count = attempt_count + 1, lease_owner = ?2, \
                     lease_expires_at = ?3, started_at = COALESCE(started_at, ?4) WHERE id = ?1", args![id, c.worker_id, expires, self.now])?;
            let (chat_id, kind, compiled, items): (String, String, String, String) = self.c.one(
                "SELECT chat_id, kind, compiled_content, items FROM dispatch_batches WHERE id = ?1",
                args![&id],
            )?;
            let hint: Option<String> = self.c.opt(
                "SELECT agent_id FROM chat_agents WHERE chat_id = ?1 ORDER BY position LIMIT 1",
                args![&chat_id],
            )?;
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
    pub(super) fn owned(
        &mut self,
        batch_id: &str,
        worker: &str,
    ) -> Result<(String, i64), StoreError> {
        let row: Option<LeaseRow> = self
            .c
            .opt(
                &format!(
                    "SELECT chat_id, status, lease_owner, lease_expires_at, attempt_count FROM dispatch_batches WHERE id = ?1{}",
                    // Decided on the row as it is, not as another node is changing it.
                    self.c.dialect().for_update()
                ),
                args![batch_id],
            )?;
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
