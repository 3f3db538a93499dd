//! The chat and dispatch API under `/api/v1`: one method per endpoint (answers as they come),
//! and the few steps the tests repeat (a new chat, a user message, waiting for an answer).

use serde_json::{json, Value};

use super::app::{Reply, TestApp};
use super::sse::EventStream;
use super::wait::{wait_for, SOON};

/// The body of a message from the primary user.
pub fn user_message(text: &str) -> Value {
    json!({ "role": "user", "senderId": "user:primary", "content": text })
}

/// Asserts that `r` is the API's error envelope with this status and code.
pub fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.body["error"]["code"], code, "{}", r.text);
    assert!(r.body["error"]["message"].is_string(), "{}", r.text);
}

/// A dispatch batch, named by its id or by the claim answer that holds it.
pub trait Batch {
    fn batch_id(&self) -> &str;
}

impl Batch for str {
    fn batch_id(&self) -> &str {
        self
    }
}

impl Batch for String {
    fn batch_id(&self) -> &str {
        self
    }
}

impl<T: Batch + ?Sized> Batch for &T {
    fn batch_id(&self) -> &str {
        (**self).batch_id()
    }
}

impl Batch for Value {
    fn batch_id(&self) -> &str {
        match self["batchId"].as_str() {
            Some(id) => id,
            None => panic!("not a batch: {self}"),
        }
    }
}

impl TestApp {
    /// `GET /api/v1/health`.
    pub async fn api_health(&self) -> Reply {
        self.get("/api/v1/health").await
    }

    /// `GET /api/v1/config`.
    pub async fn config(&self) -> Reply {
        self.get("/api/v1/config").await
    }

    // ---------------------------------------------------------------- chats

    /// `POST /api/v1/chats`.
    pub async fn create_chat(&self, body: Value) -> Reply {
        self.post("/api/v1/chats", body).await
    }

    /// A new chat of `agent` (default model); its id.
    pub async fn new_chat(&self, agent: &str) -> String {
        let r = self
            .create_chat(json!({ "agentIds": [agent], "modelId": "default" }))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        match r.body["id"].as_str() {
            Some(id) => id.to_string(),
            None => panic!("chat without id: {}", r.text),
        }
    }

    /// `GET /api/v1/chats{query}`.
    pub async fn chats(&self, query: &str) -> Reply {
        self.get(&format!("/api/v1/chats{query}")).await
    }

    /// `GET /api/v1/chats/{id}`.
    pub async fn chat(&self, chat: &str) -> Reply {
        self.get(&format!("/api/v1/chats/{chat}")).await
    }

    /// `PATCH /api/v1/chats/{id}`.
    pub async fn patch_chat(&self, chat: &str, body: Value) -> Reply {
        self.patch(&format!("/api/v1/chats/{chat}"), body).await
    }

    /// `POST /api/v1/chats/{id}/{action}`: `archive`, `unarchive`, `mark-read`, `mark-unread`.
    pub async fn chat_action(&self, chat: &str, action: &str) -> Reply {
        self.post(&format!("/api/v1/chats/{chat}/{action}"), Value::Null)
            .await
    }

    /// `GET /api/v1/chats/unread-summary`.
    pub async fn unread_summary(&self) -> Reply {
        self.get("/api/v1/chats/unread-summary").await
    }

    /// `GET /api/v1/chats/pending-summary`.
    pub async fn pending_summary(&self) -> Reply {
        self.get("/api/v1/chats/pending-summary").await
    }

    /// `POST /api/v1/chats/{id}/typing`.
    pub async fn typing(&self, chat: &str, body: Value) -> Reply {
        self.post(&format!("/api/v1/chats/{chat}/typing"), body)
            .await
    }

    /// `POST /api/v1/chats/{id}/user-typing`.
    pub async fn user_typing(&self, chat: &str) -> Reply {
        self.post(&format!("/api/v1/chats/{chat}/user-typing"), Value::Null)
            .await
    }

    // ---------------------------------------------------------------- messages

    /// `POST /api/v1/chats/{id}/messages`.
    pub async fn post_message(&self, chat: &str, body: Value) -> Reply {
        self.post(&format!("/api/v1/chats/{chat}/messages"), body)
            .await
    }

    /// A message from the primary user, which must be stored; its id.
    pub async fn post_user(&self, chat: &str, text: &str) -> String {
        let r = self.post_message(chat, user_message(text)).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.body["id"].as_str().unwrap_or_default().to_string()
    }

    /// A streaming message of `sender` (an agent), to fill with chunks.
    pub async fn stream_message(&self, chat: &str, sender: &str) -> Reply {
        self.post_message(
            chat,
            json!({ "role": "agent", "senderId": sender, "streaming": true }),
        )
        .await
    }

    /// `GET /api/v1/chats/{id}/messages{query}`.
    pub async fn list_messages(&self, chat: &str, query: &str) -> Reply {
        self.get(&format!("/api/v1/chats/{chat}/messages{query}"))
            .await
    }

    /// The newest 200 messages, newest first (the API's order).
    pub async fn messages(&self, chat: &str) -> Vec<Value> {
        let r = self.list_messages(chat, "?limit=200").await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["data"].as_array().cloned().unwrap_or_default()
    }

    /// Every message, oldest first (all pages).
    pub async fn history(&self, chat: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut query = "?limit=200".to_string();
        loop {
            let r = self.list_messages(chat, &query).await;
            assert_eq!(r.status, 200, "{}", r.text);
            out.extend(r.body["data"].as_array().cloned().unwrap_or_default());
            match r.body["cursor"]["next"].as_str() {
                Some(c) if r.body["cursor"]["hasMore"] == true => {
                    query = format!("?limit=200&cursor={c}");
                }
                _ => break,
            }
        }
        out.reverse();
        out
    }

    /// The agents' messages, oldest first, in any state.
    pub async fn agent_answers(&self, chat: &str) -> Vec<Value> {
        let mut all = self.history(chat).await;
        all.retain(|m| m["role"] == "agent");
        all
    }

    /// The texts of the agents' complete answers, oldest first.
    pub async fn answers(&self, chat: &str) -> Vec<String> {
        self.agent_answers(chat)
            .await
            .iter()
            .filter(|m| m["stream_state"] == "complete")
            .map(|m| m["content_final"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Waits (up to [`SOON`]) for a complete agent message with exactly `text`; that message.
    pub async fn wait_answer(&self, chat: &str, text: &str) -> Option<Value> {
        wait_for(SOON, || async {
            self.agent_answers(chat)
                .await
                .into_iter()
                .find(|m| m["stream_state"] == "complete" && m["content_final"] == text)
        })
        .await
    }

    /// Posts `text` as the user and waits for the agent to answer `answer`; that answer.
    pub async fn ask(&self, chat: &str, text: &str, answer: &str) -> Option<Value> {
        self.post_user(chat, text).await;
        self.wait_answer(chat, answer).await
    }

    /// `POST /api/v1/chats/{id}/messages/cancel-streaming`.
    pub async fn cancel_streaming(&self, chat: &str) -> Reply {
        self.post(
            &format!("/api/v1/chats/{chat}/messages/cancel-streaming"),
            Value::Null,
        )
        .await
    }

    /// `POST /api/v1/messages/{id}/chunks` with one delta.
    pub async fn chunk(&self, message: &str, delta: &str) -> Reply {
        self.post(
            &format!("/api/v1/messages/{message}/chunks"),
            json!({ "deltaText": delta }),
        )
        .await
    }

    /// `POST /api/v1/messages/{id}/complete`.
    pub async fn complete_message(&self, message: &str, body: Value) -> Reply {
        self.post(&format!("/api/v1/messages/{message}/complete"), body)
            .await
    }

    /// `POST /api/v1/messages/{id}/cancel`.
    pub async fn cancel_message(&self, message: &str) -> Reply {
        self.post(&format!("/api/v1/messages/{message}/cancel"), Value::Null)
            .await
    }

    // ---------------------------------------------------------------- interactive requests

    /// `POST /api/v1/chats/{id}/requests`.
    pub async fn create_request(&self, chat: &str, body: Value) -> Reply {
        self.post(&format!("/api/v1/chats/{chat}/requests"), body)
            .await
    }

    /// `GET /api/v1/chats/{id}/requests{query}`.
    pub async fn requests(&self, chat: &str, query: &str) -> Reply {
        self.get(&format!("/api/v1/chats/{chat}/requests{query}"))
            .await
    }

    /// `PATCH /api/v1/requests/{id}`.
    pub async fn patch_request(&self, request: &str, body: Value) -> Reply {
        self.patch(&format!("/api/v1/requests/{request}"), body)
            .await
    }

    /// `POST /api/v1/requests/{id}/resolve`.
    pub async fn resolve(&self, request: &str, body: Value) -> Reply {
        self.post(&format!("/api/v1/requests/{request}/resolve"), body)
            .await
    }

    /// `POST /api/v1/requests/{id}/cancel`.
    pub async fn cancel_request(&self, request: &str) -> Reply {
        self.post(&format!("/api/v1/requests/{request}/cancel"), Value::Null)
            .await
    }

    // ---------------------------------------------------------------- dispatch

    /// `POST /api/v1/dispatch/claim`.
    pub async fn claim_with(&self, body: Value) -> Reply {
        self.post("/api/v1/dispatch/claim", body).await
    }

    /// A claim by `worker`, waiting up to `wait_ms`.
    pub async fn claim(&self, worker: &str, wait_ms: u64) -> Reply {
        self.claim_with(json!({ "workerId": worker, "waitMs": wait_ms }))
            .await
    }

    /// A claim that must get a batch within 5 s; the batch.
    pub async fn claim_one(&self, worker: &str) -> Value {
        let r = self.claim(worker, 5000).await;
        assert_eq!(r.status, 200, "expected a batch: {} {}", r.status, r.text);
        r.body
    }

    /// `POST /api/v1/dispatch/claim-many`.
    pub async fn claim_many(&self, body: Value) -> Reply {
        self.post("/api/v1/dispatch/claim-many", body).await
    }

    /// `POST /api/v1/dispatch/{id}/heartbeat`.
    pub async fn heartbeat(&self, batch: &(impl Batch + ?Sized), body: Value) -> Reply {
        let id = batch.batch_id();
        self.post(&format!("/api/v1/dispatch/{id}/heartbeat"), body)
            .await
    }

    /// `POST /api/v1/dispatch/{id}/complete` by `worker`.
    pub async fn complete(&self, batch: &(impl Batch + ?Sized), worker: &str) -> Reply {
        let id = batch.batch_id();
        self.post(
            &format!("/api/v1/dispatch/{id}/complete"),
            json!({ "workerId": worker }),
        )
        .await
    }

    /// `POST /api/v1/dispatch/{id}/fail`.
    pub async fn fail_with(&self, batch: &(impl Batch + ?Sized), body: Value) -> Reply {
        let id = batch.batch_id();
        self.post(&format!("/api/v1/dispatch/{id}/fail"), body)
            .await
    }

    /// A failure by `worker` for the reason "  bad input " (stored trimmed), after `delay` ms
    /// or the server's backoff.
    pub async fn fail(
        &self,
        batch: &(impl Batch + ?Sized),
        worker: &str,
        retryable: bool,
        delay: Option<u64>,
    ) -> Reply {
        let mut body =
            json!({ "workerId": worker, "reason": "  bad input ", "retryable": retryable });
        if let Some(d) = delay {
            body["retryDelayMs"] = json!(d);
        }
        self.fail_with(batch, body).await
    }

    // ---------------------------------------------------------------- events

    /// `GET /api/v1/events/stream{query}`, which must open; its events as they come.
    pub async fn events(&self, query: &str, last_event_id: Option<&str>) -> EventStream {
        let mut req = self.request(
            reqwest::Method::GET,
            &format!("/api/v1/events/stream{query}"),
        );
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        match self.open_stream(req).await {
            Ok(s) => s,
            Err(r) => panic!("the event stream did not open: {} {}", r.status, r.text),
        }
    }
}
