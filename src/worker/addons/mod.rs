//! The graph nodes the built-in worker runs, chosen by the node's `addon`.

pub mod echo;
pub mod openai_chat;
pub mod rules;

use serde_json::Value;

use super::config::Node;
use super::turn::{Turn, TurnError};
use crate::contract::addons::{ECHO, OPENAI_CHAT, RULES};

/// A node property with the wrong type or value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("property {key:?}: {message}")]
pub struct PropertyError {
    pub key: String,
    pub message: String,
}

impl PropertyError {
    pub fn new(key: &str, message: impl Into<String>) -> PropertyError {
        PropertyError {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// A ready-to-run addon.
#[derive(Debug, Clone)]
pub enum Addon {
    Echo(echo::Echo),
    Rules(rules::Rules),
    OpenAiChat(openai_chat::OpenAiChat),
}

impl Addon {
    /// Builds the addon of `node` from its (resolved) properties.
    pub fn from_node(node: &Node) -> Result<Addon, PropertyError> {
        let p = &node.property;
        match node.addon.as_str() {
            ECHO => echo::Echo::from_property(p).map(Addon::Echo),
            RULES => rules::Rules::from_property(p).map(Addon::Rules),
            OPENAI_CHAT => openai_chat::OpenAiChat::from_property(p).map(Addon::OpenAiChat),
            other => Err(PropertyError::new(
                "addon",
                format!("unknown addon {other:?}"),
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

pub(crate) fn opt_str(p: &Value, key: &str) -> Result<Option<String>, PropertyError> {
    match p.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(PropertyError::new(key, "must be a string")),
    }
}

pub(crate) fn opt_bool(p: &Value, key: &str) -> Result<Option<bool>, PropertyError> {
    match p.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        // Placeholders always resolve to strings.
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
        Some(_) => Err(PropertyError::new(key, "must be true or false")),
    }
}

pub(crate) fn opt_u64(p: &Value, key: &str) -> Result<Option<u64>, PropertyError> {
    match p.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| PropertyError::new(key, "must be a whole number >= 0")),
        Some(Value::String(s)) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| PropertyError::new(key, "must be a whole number >= 0")),
        Some(Value::String(_)) => Ok(None),
        Some(_) => Err(PropertyError::new(key, "must be a whole number >= 0")),
    }
}

pub(crate) fn opt_f64(p: &Value, key: &str) -> Result<Option<f64>, PropertyError> {
    match p.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| PropertyError::new(key, "must be a number")),
        Some(Value::String(_)) => Ok(None),
        Some(_) => Err(PropertyError::new(key, "must be a number")),
    }
}
