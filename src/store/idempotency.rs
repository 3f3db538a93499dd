//! `Idempotency-Key`: a creation repeated with the same key and payload answers what the first
//! one did; the same key with another payload is a conflict. Keys expire after
//! `IDEMPOTENCY_TTL_SECONDS`.

use serde_json::{json, Value};

use super::error::StoreError;
use super::sql::args;
use super::W;

impl W<'_> {
    /// Looks up an idempotency key: `Some(body)` to replay, 409 when the payload differs.
    pub(crate) fn idem_lookup(&mut self, key: &str, fp: &str) -> Result<Option<Value>, StoreError> {
        let ttl_ms = self
            .settings
            .idempotency_ttl_secs
            .saturating_mul(1000)
            .min(i64::MAX as u64 / 2) as i64;
        self.c.execute(
            "DELETE FROM idempotency WHERE created_at < ?1",
            args![self.now - ttl_ms],
        )?;
        let row: Option<(String, String)> = self.c.opt(
            "SELECT fingerprint, body FROM idempotency WHERE key = ?1",
            args![key],
        )?;
        match row {
            None => Ok(None),
            Some((f, body)) if f == fp => Ok(serde_json::from_str(&body).ok()),
            Some(_) => Err(StoreError::Conflict {
                message: "Idempotency-Key already used with a different request payload.".into(),
                details: Some(json!({ "field": "Idempotency-Key", "key": key })),
            }),
        }
    }

    /// Remembers the 201 answer for an idempotency key (same transaction as the creation).
    pub(crate) fn idem_store(
        &mut self,
        key: &str,
        fp: &str,
        body: &Value,
    ) -> Result<(), StoreError> {
        self.c.execute(
            "INSERT INTO idempotency (key, fingerprint, status, body, created_at) VALUES (?1, ?2, 201, ?3, ?4) \
             ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, status = excluded.status, \
             body = excluded.body, created_at = excluded.created_at",
            args![key, fp, body.to_string(), self.now],
        )?;
        Ok(())
    }
}
