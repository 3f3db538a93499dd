//! Chat front doors, as a service: simple agent chat APIs that existing clients already speak,
//! over the same store and supervisor as everything else. An agent is a graph, a conversation is
//! a chat, and the agent's worker is started on demand when a message arrives and reaped when
//! idle. Nothing here speaks HTTP: `crate::http` turns these calls into the doors' routes.
//!
//! - [`deliver`]: store the message, make sure the agent runs, wait for its answer.
//! - [`chat`]: the chat API's conversations per agent, and team chat.
//! - [`messages`]: the agent messages API's conversations (one per user and room).
//! - [`conversations`]: conversations between participants, with bots and their relay.
//! - [`limits`]: per-agent request limits.

pub mod chat;
pub mod conversations;
pub mod deliver;
pub mod limits;
pub mod messages;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Mutex;

use crate::catalog::watch::CatalogHandle;
use crate::catalog::Graph;
use crate::settings::{DispatchMode, Settings};
use crate::store::{Store, StoreError};
use crate::supervisor::Supervisor;

pub use deliver::{Answer, AnswerItem, AskError, Delivered};

/// The front doors' shared service: its dependencies, per-agent limits, and start locks.
pub struct FrontDoor {
    store: Store,
    supervisor: Supervisor,
    catalog: CatalogHandle,
    settings: Arc<Settings>,
    /// Per-agent limits of the agent messages API.
    pub limits: limits::AgentLimits,
    /// One lock per agent so concurrent first messages start one worker.
    starting: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl FrontDoor {
    pub fn new(
        store: Store,
        supervisor: Supervisor,
        catalog: CatalogHandle,
        settings: Arc<Settings>,
    ) -> Arc<FrontDoor> {
        Arc::new(FrontDoor {
            limits: limits::AgentLimits::new(
                settings.agent_rate_limit_per_minute,
                settings.agent_max_concurrent,
            ),
            store,
            supervisor,
            catalog,
            settings,
            starting: Mutex::new(HashMap::new()),
        })
    }

    /// Starts the background work: the relay of bot answers into conversations, and keeping
    /// busy on-demand workers alive.
    pub fn start(self: &Arc<Self>) {
        tokio::spawn(conversations::relay(self.clone()));
        tokio::spawn(deliver::keep_busy_alive(self.clone()));
    }

    /// The graph of `agent`, or `AgentNotFound`.
    pub fn graph(&self, agent: &str) -> Result<Arc<Graph>, AskError> {
        self.catalog
            .current()
            .get(agent)
            .cloned()
            .ok_or_else(|| AskError::AgentNotFound(agent.to_string()))
    }

    /// Finds or creates the chat with this external key (agent = `agent`). A new chat dispatches
    /// `sequential`: each message is claimable at once, one at a time per chat.
    pub async fn chat_for_key(
        &self,
        key: &str,
        agent: &str,
        title: &str,
    ) -> Result<String, AskError> {
        // The common case (the chat exists) stays a read, off the writer.
        match self.store.chat_by_key(key).await.map_err(internal)? {
            Some(id) => Ok(id),
            None => self
                .store
                .chat_for_key(key, agent, title, Some(DispatchMode::Sequential))
                .await
                .map_err(internal),
        }
    }
}

/// A display name for `agent`.
pub fn agent_name(g: &Graph) -> String {
    g.display_name.clone().unwrap_or_else(|| g.name.clone())
}

/// The model an agent answers with, as far as its graph says (the `model` property of an
/// `openai_chat` node, resolved like the worker resolves placeholders), else the agent id.
pub fn model_of(g: &Graph) -> String {
    let model = g
        .nodes()
        .iter()
        .filter(|n| n.get("addon").and_then(Value::as_str) == Some("openai_chat"))
        .find_map(|n| n.pointer("/property/model").and_then(Value::as_str));
    let Some(m) = model else {
        return g.name.clone();
    };
    match crate::contract::placeholder::parse(m) {
        Some(p) => p
            .value(|var| std::env::var(var).ok())
            .unwrap_or_else(|| g.name.clone()),
        None => m.to_string(),
    }
}

/// Escapes a caller-chosen id for use inside a chat key (`:` separates key parts).
pub fn key_part(s: &str) -> String {
    s.replace('%', "%25").replace(':', "%3A")
}

/// A store failure as seen by a front door: logged here, answered as a bare internal error.
pub(crate) fn internal(e: StoreError) -> AskError {
    if let Some(storage) = e.storage() {
        tracing::warn!(error = %e, "front door: the storage cannot be written");
        return AskError::Storage(storage);
    }
    tracing::error!(error = %e, "front door store error");
    AskError::Internal("Unexpected server error.".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph_with_model(model: &str) -> Arc<Graph> {
        let dir = tempfile::tempdir().unwrap();
        let doc = serde_json::json!({
            "name": "g", "nodes": [{"type": "extension", "name": "llm", "addon": "openai_chat",
            "extension_group": "default", "property": {"model": model}}]
        });
        std::fs::write(dir.path().join("g.json"), doc.to_string()).unwrap();
        let cat = crate::catalog::Catalog::load(&dir.path().join("none.json"), dir.path()).unwrap();
        cat.get("g").cloned().unwrap()
    }

    #[test]
    fn model_of_reads_placeholders_like_the_worker() {
        assert_eq!(model_of(&graph_with_model("gpt-x")), "gpt-x");
        let unset = "AGENTD_TEST_MODEL_UNSET_7F3A";
        assert_eq!(
            model_of(&graph_with_model(&format!("${{env:{unset}|mini}}"))),
            "mini"
        );
        // An escaped `|` belongs to the variable's name, not to a default.
        assert_eq!(
            model_of(&graph_with_model(&format!("${{env:{unset}\\|x}}"))),
            "g"
        );
        assert_eq!(
            model_of(&graph_with_model(&format!("${{env:{unset}}}"))),
            "g"
        );
    }
}
