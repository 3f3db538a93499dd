//! The chat API's domain: each agent's conversations (chats keyed `fd:chat:<agent>:...`, with a
//! default one), its inbox of unread answers, and team chat (every member asked at once, then a
//! summary).

use serde_json::Value;

use super::{agent_name, internal, AskError, FrontDoor};
use crate::catalog::Team;
use crate::store::{HistoryItem, KeyedChat, Unread};

/// Key prefix of an agent's conversations (chats) made through the chat API.
fn prefix(agent: &str) -> String {
    format!("fd:chat:{agent}:")
}

/// Team chat modes: every member answers in parallel in both; they differ in what is asked.
pub const TEAM_MODES: &[&str] = &["parallel", "brainstorm"];

/// One member's part of a team answer.
#[derive(Debug)]
pub struct MemberAnswer {
    pub agent: String,
    pub name: String,
    /// The answer, or why there is none.
    pub outcome: Result<String, String>,
}

/// A team's answer: every member's, and a summary.
#[derive(Debug)]
pub struct TeamAnswer {
    pub members: Vec<MemberAnswer>,
    pub summary: String,
}

/// Why a team could not answer.
#[derive(Debug)]
pub enum TeamError {
    NotFound(String),
    /// No member answered; each member's outcome.
    NoAnswer(Vec<MemberAnswer>),
    Ask(AskError),
}

impl From<AskError> for TeamError {
    fn from(e: AskError) -> TeamError {
        TeamError::Ask(e)
    }
}

impl FrontDoor {
    /// The chat of a conversation of `agent`: the one named (`None` when it is not one of the
    /// agent's), else the agent's default conversation.
    pub async fn agent_chat(
        &self,
        agent: &str,
        conversation: Option<String>,
    ) -> Result<Option<String>, AskError> {
        match conversation {
            Some(id) => Ok(self.owns(agent, &id).await?.then_some(id)),
            None => self
                .chat_for_key(
                    &format!("{}default", prefix(agent)),
                    agent,
                    "Default conversation",
                )
                .await
                .map(Some),
        }
    }

    /// True when `chat_id` is a conversation of `agent` (which must exist).
    pub async fn owns(&self, agent: &str, chat_id: &str) -> Result<bool, AskError> {
        self.graph(agent)?;
        let key = self.store.chat_key(chat_id).await.map_err(internal)?;
        Ok(key.is_some_and(|k| k.starts_with(&prefix(agent))))
    }

    /// The last `limit` messages of a chat, oldest first.
    pub async fn history(&self, chat_id: &str, limit: usize) -> Result<Vec<HistoryItem>, AskError> {
        self.store.history(chat_id, limit).await.map_err(internal)
    }

    /// The conversations of `agent`, newest activity first.
    pub async fn agent_conversations(&self, agent: &str) -> Result<Vec<KeyedChat>, AskError> {
        self.store
            .chats_by_key_prefix(&prefix(agent))
            .await
            .map_err(internal)
    }

    /// One conversation (any chat) by id.
    pub async fn conversation_of_chat(&self, chat_id: &str) -> Result<Option<KeyedChat>, AskError> {
        self.store.keyed_chat(chat_id).await.map_err(internal)
    }

    /// Starts a new conversation with `agent`; returns its id.
    pub async fn new_agent_conversation(
        &self,
        agent: &str,
        title: &str,
    ) -> Result<String, AskError> {
        let key = format!("{}{}", prefix(agent), crate::ids::new_id());
        self.chat_for_key(&key, agent, title).await
    }

    /// Renames a chat (title source `manual`, as a `PATCH /chats/:id` would).
    pub async fn rename_chat(&self, chat_id: &str, title: &str) -> Result<(), AskError> {
        let mut patch = serde_json::Map::new();
        patch.insert("title".into(), Value::String(title.to_string()));
        self.store
            .patch_chat(chat_id, patch)
            .await
            .map(|_| ())
            .map_err(internal)
    }

    /// Deletes a chat and all it holds; returns how many messages went.
    pub async fn delete_chat(&self, chat_id: &str) -> Result<usize, AskError> {
        self.store.delete_chat(chat_id).await.map_err(internal)
    }

    /// Unread answers across the conversations of `agent`.
    pub async fn inbox(&self, agent: &str) -> Result<Vec<Unread>, AskError> {
        self.store
            .unread_agent_messages(&prefix(agent))
            .await
            .map_err(internal)
    }

    /// Marks a chat read; returns how many unread messages it had.
    pub async fn mark_read(&self, chat_id: &str) -> Result<i64, AskError> {
        let chat = self.store.get_chat(chat_id).await.map_err(internal)?;
        let unread = chat
            .get("unread_count")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        self.store.set_read(chat_id, true).await.map_err(internal)?;
        Ok(unread)
    }

    /// The team called `name`.
    pub fn team(&self, name: &str) -> Option<Team> {
        self.catalog.current().team(name).cloned()
    }

    /// Asks every member of `team_name` at once (each in its own chat), then summarises: through
    /// the team's summary agent when it has one, else as a digest of first lines.
    pub async fn team_chat(
        &self,
        team_name: &str,
        message: &str,
        mode: &str,
    ) -> Result<TeamAnswer, TeamError> {
        let team = self
            .team(team_name)
            .ok_or_else(|| TeamError::NotFound(team_name.to_string()))?;
        let prompt = match mode {
            "brainstorm" => format!("Brainstorm: {message}"),
            _ => message.to_string(),
        };
        let asks = team.agents.iter().map(|agent| {
            let prompt = prompt.clone();
            async move {
                let g = self.graph(agent)?;
                let chat = self
                    .chat_for_key(
                        &format!("fd:team:{team_name}:{agent}"),
                        agent,
                        &format!("Team {team_name}"),
                    )
                    .await?;
                let a = self.ask(agent, &chat, &prompt, None).await;
                Ok::<_, AskError>(MemberAnswer {
                    agent: agent.clone(),
                    name: agent_name(&g),
                    outcome: a.map(|a| a.text).map_err(|e| e.to_string()),
                })
            }
        });
        let members = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let answered: Vec<(&str, &str)> = members
            .iter()
            .filter_map(|m| m.outcome.as_deref().ok().map(|t| (m.name.as_str(), t)))
            .collect();
        if answered.is_empty() {
            return Err(TeamError::NoAnswer(members));
        }
        let digest = answered
            .iter()
            .map(|(name, text)| format!("- {name}: {}", first_line(text)))
            .collect::<Vec<_>>()
            .join("\n");
        let summary = match &team.summary_agent {
            Some(agent) => {
                let chat = self
                    .chat_for_key(
                        &format!("fd:team:{team_name}:summary:{agent}"),
                        agent,
                        &format!("Team {team_name} summary"),
                    )
                    .await?;
                let ask = format!("Summarise these answers to \"{message}\":\n{digest}");
                self.ask(agent, &chat, &ask, None).await?.text
            }
            None => format!(
                "{} of {} agents answered:\n{digest}",
                answered.len(),
                team.agents.len()
            ),
        };
        Ok(TeamAnswer { members, summary })
    }
}

fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.chars().count() > 200 {
        line.chars().take(200).collect::<String>() + "…"
    } else {
        line.to_string()
    }
}
