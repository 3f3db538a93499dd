//! Batching: inputs arrive and are grouped into batches per chat as the chat's mode says
//! (immediate, sequential, or batched with debounce, typing grace and a longest wait).

use crate::store::sql::args;

use serde_json::{json, Value};

use super::{compile, Input, MAX_DURATION_MS};
use crate::ids::new_id;
use crate::settings::DispatchMode;
use crate::store::error::StoreError;
use crate::store::W;

impl W<'_> {
    pub(super) fn mode(&self) -> DispatchMode {
        self.settings.dispatch.mode
    }

    /// The chat's own dispatch mode (front-door chats dispatch `sequential`), else `DISPATCH_MODE`.
    pub(super) fn chat_mode(&self, chat_id: &str) -> Result<DispatchMode, StoreError> {
        let own: Option<String> = self
            .c
            .opt(
                "SELECT dispatch_mode FROM chats WHERE id = ?1",
                args![chat_id],
            )?
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
            .execute("INSERT INTO dispatch_inputs (id, chat_id, source_kind, source_id, sender_id, content, trace_kind, \
                 media_ids, state, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9)", args![
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
                    .execute("INSERT INTO dispatch_chat_state (chat_id, first_pending_at, last_input_at) VALUES (?1, ?2, ?2) \
                         ON CONFLICT (chat_id) DO UPDATE SET first_pending_at = COALESCE(dispatch_chat_state.first_pending_at, ?2), last_input_at = ?2", args![chat_id, self.now])?;
                self.kick_scheduler();
            }
        }
        Ok(())
    }

    /// Makes one pending batch out of `inputs` (oldest first).
    pub(super) fn create_batch(
        &mut self,
        chat_id: &str,
        inputs: Vec<Input>,
    ) -> Result<String, StoreError> {
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
            .execute("INSERT INTO dispatch_batches (id, chat_id, kind, status, available_at, created_at, compiled_content, items) \
                 VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?5, ?6)", args![id, chat_id, kind, self.now, compiled, Value::Array(items).to_string()])?;
        for i in &inputs {
            self.c.execute(
                "UPDATE dispatch_inputs SET state = 'batched', batch_id = ?2 WHERE id = ?1",
                args![i.id, id],
            )?;
        }
        self.kick_claims();
        Ok(id)
    }

    /// Seals every pending input of a chat into one batch and resets its window.
    pub(super) fn seal(&mut self, chat_id: &str) -> Result<(), StoreError> {
        // An input another node is adding to this chat either commits before this (and is read
        // below) or waits for the seal (and opens the next window): the window row is the lock.
        self.c.query(
            &format!(
                "SELECT chat_id FROM dispatch_chat_state WHERE chat_id = ?1{}",
                self.c.dialect().for_update()
            ),
            args![chat_id],
        )?;
        let inputs: Vec<Input> = {
            self.c.all_map("SELECT id, source_kind, source_id, sender_id, content, trace_kind, media_ids FROM dispatch_inputs \
                 WHERE chat_id = ?1 AND state = 'pending' ORDER BY seq", args![chat_id], |r| {
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
            })?
        };
        self.c
            .execute("UPDATE dispatch_chat_state SET first_pending_at = NULL, last_input_at = NULL WHERE chat_id = ?1", args![chat_id])?;
        if !inputs.is_empty() {
            self.create_batch(chat_id, inputs)?;
        }
        Ok(())
    }

    /// Records user typing for the batching window (`batched_sequential` only).
    pub(crate) fn record_user_typing(&mut self, chat_id: &str) -> Result<(), StoreError> {
        if self.mode() == DispatchMode::BatchedSequential {
            self.c.execute(
                "INSERT INTO dispatch_chat_state (chat_id, last_user_typing_at) VALUES (?1, ?2) \
                     ON CONFLICT (chat_id) DO UPDATE SET last_user_typing_at = ?2",
                args![chat_id, self.now],
            )?;
            self.kick_scheduler();
        }
        Ok(())
    }

    /// Seals the chats whose window has closed; returns the earliest future seal deadline.
    pub(super) fn seal_due(&mut self) -> Result<Option<i64>, StoreError> {
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
            self.c.all_map("SELECT s.chat_id, s.first_pending_at, COALESCE(s.last_input_at, s.first_pending_at), s.last_user_typing_at \
                 FROM dispatch_chat_state s WHERE s.first_pending_at IS NOT NULL AND NOT EXISTS ( \
                   SELECT 1 FROM dispatch_batches b WHERE b.chat_id = s.chat_id \
                   AND b.status IN ('pending', 'leased') AND b.status = 'leased')", args![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
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
}
