//! The front doors: the chat API (`/agents/:id/...`, `/teams/:id/chat`), agent messages
//! (`/v1/agents/:id/messages`) and conversations (`/conversations`, `/messages/:id`,
//! `/stream/:id`, `/events`).

use serde_json::{json, Value};

use super::app::{Reply, TestApp};
use super::sse::EventStream;

impl TestApp {
    // ---------------------------------------------------------------- chat API

    /// `POST /agents/{id}/chat`.
    pub async fn agent_chat(&self, agent: &str, body: Value) -> Reply {
        self.post(&format!("/agents/{agent}/chat"), body).await
    }

    /// `POST /agents/{id}/chat/stream`: its frames, or the answer if it is not a stream.
    pub async fn agent_chat_stream(&self, agent: &str, body: Value) -> Result<EventStream, Reply> {
        self.post_stream(&format!("/agents/{agent}/chat/stream"), body)
            .await
    }

    /// `GET /agents/{id}/history{query}`.
    pub async fn agent_history(&self, agent: &str, query: &str) -> Reply {
        self.get(&format!("/agents/{agent}/history{query}")).await
    }

    /// `POST /agents/{id}/conversations`.
    pub async fn create_agent_conversation(&self, agent: &str, body: Value) -> Reply {
        self.post(&format!("/agents/{agent}/conversations"), body)
            .await
    }

    /// `GET /agents/{id}/conversations`.
    pub async fn agent_conversations(&self, agent: &str) -> Reply {
        self.get(&format!("/agents/{agent}/conversations")).await
    }

    /// `PUT /agents/{id}/conversations/{conversation}`.
    pub async fn update_agent_conversation(&self, agent: &str, id: &str, body: Value) -> Reply {
        self.put(&format!("/agents/{agent}/conversations/{id}"), body)
            .await
    }

    /// `DELETE /agents/{id}/conversations/{conversation}`.
    pub async fn delete_agent_conversation(&self, agent: &str, id: &str) -> Reply {
        self.delete(&format!("/agents/{agent}/conversations/{id}"))
            .await
    }

    /// `GET /agents/{id}/inbox`.
    pub async fn agent_inbox(&self, agent: &str) -> Reply {
        self.get(&format!("/agents/{agent}/inbox")).await
    }

    /// `POST /agents/{id}/mark-read`.
    pub async fn agent_mark_read(&self, agent: &str) -> Reply {
        self.post(&format!("/agents/{agent}/mark-read"), json!({}))
            .await
    }

    /// `POST /teams/{id}/chat`.
    pub async fn team_chat(&self, team: &str, body: Value) -> Reply {
        self.post(&format!("/teams/{team}/chat"), body).await
    }

    // ---------------------------------------------------------------- agent messages

    /// `POST /v1/agents/{id}/messages`.
    pub async fn agent_message(&self, agent: &str, body: Value) -> Reply {
        self.post(&format!("/v1/agents/{agent}/messages"), body)
            .await
    }

    /// `POST /v1/agents/{id}/messages/stream`: its frames, or the answer if it is not a stream.
    pub async fn agent_message_stream(
        &self,
        agent: &str,
        body: Value,
    ) -> Result<EventStream, Reply> {
        self.post_stream(&format!("/v1/agents/{agent}/messages/stream"), body)
            .await
    }

    // ---------------------------------------------------------------- conversations

    /// `POST /conversations`.
    pub async fn create_conversation(&self, body: Value) -> Reply {
        self.post("/conversations", body).await
    }

    /// `GET /conversations{query}`.
    pub async fn conversations(&self, query: &str) -> Reply {
        self.get(&format!("/conversations{query}")).await
    }

    /// `POST /conversations/{id}/bots`.
    pub async fn set_bot(&self, conversation: &str, bot: &str, enabled: bool) -> Reply {
        self.post(
            &format!("/conversations/{conversation}/bots"),
            json!({"bot": bot, "enabled": enabled}),
        )
        .await
    }

    /// `POST /messages/{conversation}`.
    pub async fn post_to_conversation(&self, conversation: &str, body: Value) -> Reply {
        self.post(&format!("/messages/{conversation}"), body).await
    }

    /// `GET /messages/{conversation}{query}`.
    pub async fn conversation_messages(&self, conversation: &str, query: &str) -> Reply {
        self.get(&format!("/messages/{conversation}{query}")).await
    }

    /// `POST /messages/{conversation}/read`.
    pub async fn mark_conversation_read(&self, conversation: &str, participant: &str) -> Reply {
        self.post(
            &format!("/messages/{conversation}/read"),
            json!({"participant": participant}),
        )
        .await
    }

    /// `GET /messages/{conversation}/deliverylogs`.
    pub async fn delivery_logs(&self, conversation: &str) -> Reply {
        self.get(&format!("/messages/{conversation}/deliverylogs"))
            .await
    }

    /// `GET /stream/{conversation}`, from after `last_event_id` if given.
    pub async fn conversation_stream(
        &self,
        conversation: &str,
        last_event_id: Option<&str>,
    ) -> Result<EventStream, Reply> {
        let mut req = self
            .request(reqwest::Method::GET, &format!("/stream/{conversation}"))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        self.open_stream(req).await
    }

    /// `GET /events{query}`: the global feed.
    pub async fn feed(&self, query: &str) -> Reply {
        self.get(&format!("/events{query}")).await
    }
}
