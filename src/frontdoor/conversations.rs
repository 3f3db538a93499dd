//! The conversations front door's domain: a participant's message goes into the conversation and
//! to every enabled bot (each bot has a hidden chat per conversation, `fd:conv:<conv>:<bot>`, in
//! the dispatch API), and [`relay`] copies the bots' answers back into the conversation whenever
//! they come, even after a restart of the bot's worker.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::{internal, AskError, FrontDoor};
use crate::store::conversations::NewConvMessage;

fn bot_chat_key(conv: &str, bot: &str) -> String {
    format!("fd:conv:{conv}:{bot}")
}

impl FrontDoor {
    /// Stores a participant's message; bots answer text (and media with a caption), never pings
    /// and never each other. Each enabled bot is invoked in the background; returns the message.
    pub async fn post_to_conversation(
        self: &Arc<Self>,
        m: NewConvMessage,
    ) -> Result<Value, AskError> {
        let to_bots = m.kind != "ping" && !m.content.trim().is_empty();
        let (conv, from, text) = (m.conversation.clone(), m.from.clone(), m.content.clone());
        let posted = self
            .store
            .post_conversation_message(m, to_bots)
            .await
            .map_err(internal)?;
        for (bot, log_id) in posted.deliveries {
            let fd = self.clone();
            let (conv, from, text) = (conv.clone(), from.clone(), text.clone());
            tokio::spawn(async move { fd.invoke_bot(conv, bot, log_id, from, text).await });
        }
        Ok(posted.message)
    }

    /// Sends a participant's message to one bot: into the bot's hidden chat of this
    /// conversation, with the bot's worker started on demand. The answer comes back through
    /// [`relay`].
    async fn invoke_bot(
        &self,
        conv: String,
        bot: String,
        log_id: String,
        from: String,
        text: String,
    ) {
        let result = async {
            let chat = self
                .chat_for_key(&bot_chat_key(&conv, &bot), &bot, &format!("Conversation {conv}"))
                .await?;
            let trace = json!({"frontdoor": "conversations", "conversationId": conv, "from": from, "deliveryId": log_id});
            self.store
                .post_user_message(&chat, &text, Some(trace))
                .await
                .map_err(internal)?;
            self.ensure_running(&bot).await
        }
        .await;
        let (status, detail) = match result {
            Ok(()) => ("sent", None),
            Err(e @ AskError::Unavailable { .. }) => ("unavailable", Some(e.to_string())),
            Err(e) => ("failed", Some(e.to_string())),
        };
        if let Err(e) = self.store.update_delivery(&log_id, status, detail).await {
            tracing::error!(error = %e, "cannot record a delivery status");
        }
    }
}

/// Copies bots' answers from their hidden chats into the conversations, as they complete. Runs for
/// the life of the server.
pub async fn relay(fd: Arc<FrontDoor>) {
    let store = &fd.store;
    let mut rx = store.subscribe();
    let mut keys: HashMap<String, Option<(String, String)>> = HashMap::new();
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "conversation relay fell behind; some bot answers may be late"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let p = &ev.payload;
        let done = match ev.kind.as_str() {
            "message.created" => {
                p.get("role").and_then(Value::as_str) == Some("agent")
                    && p.get("streamState").and_then(Value::as_str) != Some("streaming")
            }
            "message.streaming.complete" => {
                p.get("streamState").and_then(Value::as_str) == Some("complete")
            }
            _ => false,
        };
        if !done {
            continue;
        }
        let (Some(chat), Some(message_id)) = (
            p.get("chatId").and_then(Value::as_str),
            p.get("messageId").and_then(Value::as_str),
        ) else {
            continue;
        };
        if !keys.contains_key(chat) {
            let key = store.chat_key(chat).await.ok().flatten();
            let parsed = key.and_then(|k| {
                let rest = k.strip_prefix("fd:conv:")?;
                let (conv, bot) = rest.split_once(':')?;
                Some((conv.to_string(), bot.to_string()))
            });
            keys.insert(chat.to_string(), parsed);
        }
        let Some((conv, bot)) = keys.get(chat).cloned().flatten() else {
            continue;
        };
        let text = match store.message_text(message_id).await {
            Ok(Some(t)) => t,
            _ => continue,
        };
        if let Err(e) = store.add_bot_answer(&conv, &bot, text, message_id).await {
            tracing::error!(error = %e, "cannot copy a bot answer into its conversation");
        }
    }
}
