//! `echo`: answers with the text it received.

use std::time::Duration;

use serde_json::Value;

use super::PropertyError;
use crate::contract::addons::property::{boolean, text, uint};
use crate::worker::turn::{Turn, TurnError};

/// The echo addon's properties.
#[derive(Debug, Clone)]
pub struct Echo {
    /// Put before the echoed text.
    pub prefix: String,
    /// Stream word by word (default) or post whole.
    pub stream: bool,
    /// Pause between streamed words.
    pub chunk_delay: Duration,
}

impl Echo {
    pub fn from_property(p: &Value) -> Result<Echo, PropertyError> {
        Ok(Echo {
            prefix: text(p, "prefix")?.unwrap_or_default(),
            stream: boolean(p, "stream")?.unwrap_or(true),
            chunk_delay: Duration::from_millis(uint(p, "chunk_delay_ms")?.unwrap_or(0)),
        })
    }

    pub async fn answer(&self, turn: &mut Turn<'_>) -> Result<(), TurnError> {
        let text = format!("{}{}", self.prefix, turn.batch.compiled_content);
        turn.answer(&text, self.stream, self.chunk_delay).await
    }
}
