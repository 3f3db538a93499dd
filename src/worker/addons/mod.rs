//! The graph nodes the built-in worker runs, chosen by the node's `addon`.

pub mod echo;
pub mod openai_chat;
pub mod rules;

use super::config::Node;
use super::turn::{Turn, TurnError};
use crate::contract::addons::{self, ECHO, OPENAI_CHAT, RULES};

pub use crate::contract::addons::PropertyError;

/// A ready-to-run addon.
#[derive(Debug, Clone)]
pub enum Addon {
    Echo(echo::Echo),
    Rules(rules::Rules),
    OpenAiChat(openai_chat::OpenAiChat),
}

impl Addon {
    /// Builds the addon of `node` from its (resolved) properties, checked first against the
    /// addon's schema: the check `/start` made, so what passed there starts here.
    pub fn from_node(node: &Node) -> Result<Addon, PropertyError> {
        let p = &node.property;
        addons::check(&node.addon, p)?;
        match node.addon.as_str() {
            ECHO => echo::Echo::from_property(p).map(Addon::Echo),
            RULES => rules::Rules::from_property(p).map(Addon::Rules),
            OPENAI_CHAT => openai_chat::OpenAiChat::from_property(p).map(Addon::OpenAiChat),
            other => Err(PropertyError::new(
                "addon",
                format!("names {other:?}, which the built-in worker does not run"),
            )),
        }
    }

    /// The `modelId` its messages carry, when it is not the agent id.
    pub fn model_id(&self) -> Option<&str> {
        match self {
            Addon::OpenAiChat(o) => Some(&o.model),
            _ => None,
        }
    }

    /// Answers the batch of `turn`.
    pub async fn answer(&self, turn: &mut Turn<'_>) -> Result<(), TurnError> {
        match self {
            Addon::Echo(a) => a.answer(turn).await,
            Addon::Rules(a) => a.answer(turn).await,
            Addon::OpenAiChat(a) => a.answer(turn).await,
        }
    }
}
