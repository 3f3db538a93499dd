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

/// Chats whose key the relay remembers; past this the memory starts afresh (a cache: every
/// entry can be read again from the store).
const CHAT_CACHE_MAX: usize = 4096;
/// Stored events read per page while the relay catches up.
const CATCH_UP_PAGE: i64 = 500;

/// What the relay remembers of each chat: the conversation and bot of a bot's hidden chat, or
/// `None` for every other chat.
type ChatKeys = HashMap<String, Option<(String, String)>>;

/// Copies bots' answers from their hidden chats into the conversations, as they complete. Runs for
/// the life of the server. When it falls behind the live bus (`Lagged`), it reads the events it
/// missed from the store, by their position, so no answer is lost.
pub async fn relay(fd: Arc<FrontDoor>) {
    let store = &fd.store;
    // Subscribe before reading the head so nothing falls between the two.
    let mut rx = store.subscribe();
    let mut last = loop {
        match store.replay_bounds(None).await {
            Ok((_, head)) => break head,
            Err(e) => {
                tracing::error!(error = %e, "conversation relay: cannot read the event log; retrying");
                if store.is_closed() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    let mut keys = ChatKeys::new();
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "conversation relay fell behind; reading what it missed from the store"
                );
                catch_up(store, &mut keys, &mut last).await;
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if let Some(seq) = ev.seq {
            if seq <= last {
                continue; // handled while catching up
            }
            last = seq;
        }
        handle(store, &mut keys, &ev).await;
    }
}

/// Handles every stored event after `last`, page by page, up to the newest.
async fn catch_up(store: &crate::store::Store, keys: &mut ChatKeys, last: &mut i64) {
    loop {
        let page = match store.events_page(*last, i64::MAX, CATCH_UP_PAGE).await {
            Ok(p) => p,
            Err(e) => {
                if store.is_closed() {
                    return;
                }
                tracing::error!(error = %e, "conversation relay: cannot read missed events; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        for ev in &page {
            *last = ev.seq.unwrap_or(*last).max(*last);
            handle(store, keys, ev).await;
        }
        if (page.len() as i64) < CATCH_UP_PAGE {
            return;
        }
    }
}

/// Copies one completed bot answer into its conversation; other events are ignored.
async fn handle(store: &crate::store::Store, keys: &mut ChatKeys, ev: &crate::store::Event) {
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
        return;
    }
    let (Some(chat), Some(message_id)) = (
        p.get("chatId").and_then(Value::as_str),
        p.get("messageId").and_then(Value::as_str),
    ) else {
        return;
    };
    if !keys.contains_key(chat) {
        let key = store.chat_key(chat).await.ok().flatten();
        let parsed = key.and_then(|k| {
            let rest = k.strip_prefix("fd:conv:")?;
            let (conv, bot) = rest.split_once(':')?;
            Some((conv.to_string(), bot.to_string()))
        });
        if keys.len() >= CHAT_CACHE_MAX {
            keys.clear();
        }
        keys.insert(chat.to_string(), parsed);
    }
    let Some((conv, bot)) = keys.get(chat).cloned().flatten() else {
        return;
    };
    let text = match store.message_text(message_id).await {
        Ok(Some(t)) => t,
        _ => return,
    };
    if let Err(e) = store.add_bot_answer(&conv, &bot, text, message_id).await {
        tracing::error!(error = %e, "cannot copy a bot answer into its conversation");
    }
}
