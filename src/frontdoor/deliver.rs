//! Delivering a message to an agent, as every front door does it: store the message, make sure
//! the agent's worker runs (started on demand), then wait for its answer over the event bus.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::{internal, model_of, FrontDoor};
use crate::store::Event;
use crate::supervisor::{StartError, StartSpec};

/// Why a front-door request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("agent {0:?} not found")]
    AgentNotFound(String),
    /// The agent's worker is not running and could not be started; the message is kept and is
    /// answered once an agent runs.
    #[error("agent {agent:?} is unavailable: {reason}")]
    Unavailable { agent: String, reason: String },
    /// The agent tried and failed (the dispatch ended as a terminal failure).
    #[error("agent {agent:?} failed: {reason}")]
    Failed { agent: String, reason: String },
    #[error("agent {agent:?} did not answer within {secs} s")]
    Timeout { agent: String, secs: u64 },
    #[error("agentd is shutting down")]
    ShuttingDown,
    /// The storage cannot be written (a full disk, a read-only database): nothing was kept.
    #[error("{}", .0.message())]
    Storage(crate::store::Storage),
    #[error("{0}")]
    Internal(String),
}

/// The agent's answer to one message.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Id of the agent's message in the chat.
    pub message_id: String,
    pub text: String,
    pub model: String,
    pub tokens_used: Option<u64>,
    pub elapsed: Duration,
    /// An interactive request the agent asked instead of (or after) answering, as the reference's
    /// `request.created` payload.
    pub request: Option<Value>,
}

/// Called with each piece of a streamed answer, as it arrives.
pub type OnDelta = dyn Fn(&str) + Send + Sync;

/// One item of a streamed answer: pieces as they arrive, then the outcome.
#[derive(Debug)]
pub enum AnswerItem {
    Delta(String),
    Done(Result<Answer, AskError>),
}

/// How often the on-demand workers with work in hand are pinged: well under the shortest
/// inactivity timeout there is (one second).
const KEEP_BUSY_EVERY: Duration = Duration::from_millis(500);

/// Pings the on-demand worker of every agent with work in hand (a batch pending, leased or
/// waiting for a retry), so that a worker whose batch is being retried is never reaped for
/// inactivity meanwhile. Runs for the life of the server; idle servers skip the query.
pub(super) async fn keep_busy_alive(fd: Arc<FrontDoor>) {
    let mut tick = tokio::time::interval(KEEP_BUSY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if fd.supervisor.is_shutting_down() {
            return;
        }
        let on_demand = fd
            .supervisor
            .list()
            .iter()
            .any(|w| w.channel.starts_with(AGENT_CHANNEL_PREFIX));
        if !on_demand {
            continue;
        }
        match fd.store.agents_with_work().await {
            Ok(agents) => {
                for agent in agents {
                    let _ = fd.supervisor.ping(&agent_channel(&agent));
                }
            }
            Err(e) => tracing::debug!(error = %e, "keeping busy workers alive: store read failed"),
        }
    }
}

/// What every on-demand worker's channel starts with.
const AGENT_CHANNEL_PREFIX: &str = "agent:";

/// The supervisor channel of an agent's on-demand worker.
pub fn agent_channel(agent: &str) -> String {
    format!("{AGENT_CHANNEL_PREFIX}{agent}")
}

impl FrontDoor {
    /// Makes sure `agent` has a running worker: pings it when it has one, starts one on demand
    /// when it does not (one start however many callers arrive at once).
    pub async fn ensure_running(&self, agent: &str) -> Result<(), AskError> {
        let g = self.graph(agent)?;
        let channel = agent_channel(agent);
        if self.supervisor.ping(&channel).is_ok() {
            return Ok(());
        }
        if self.supervisor.is_shutting_down() {
            return Err(AskError::ShuttingDown);
        }
        if !g.runtime.on_demand {
            return Err(AskError::Unavailable {
                agent: agent.to_string(),
                reason: "this agent is not started on demand (runtime.on_demand is false)".into(),
            });
        }
        let lock = {
            let mut map = self.starting.lock().await;
            map.entry(agent.to_string()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if self.supervisor.ping(&channel).is_ok() {
            return Ok(());
        }
        let spec = StartSpec {
            channel: channel.clone(),
            graph: agent.to_string(),
            extra_env: vec![(
                crate::contract::env::CLAIM_AGENT_ID.into(),
                agent.to_string(),
            )],
            ..StartSpec::default()
        };
        match self.supervisor.start(spec).await {
            Ok(_) => Ok(()),
            Err(StartError::ChannelExists(_)) => Ok(()),
            Err(e) => Err(AskError::Unavailable {
                agent: agent.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Stores `text` as the user's message (role `user`, sender `user:primary`) in `chat_id`,
    /// then makes sure the agent runs. The message is stored before anything else, so a failure
    /// to start the agent loses nothing: it is answered once an agent runs.
    pub async fn deliver(
        &self,
        agent: &str,
        chat_id: &str,
        text: &str,
        trace: Option<Value>,
    ) -> Result<Delivered, AskError> {
        self.graph(agent)?;
        let started = Instant::now();
        let events = self.store.subscribe();
        self.store
            .post_user_message(chat_id, text, trace)
            .await
            .map_err(internal)?;
        self.ensure_running(agent).await?;
        Ok(Delivered {
            agent: agent.to_string(),
            chat_id: chat_id.to_string(),
            events,
            started,
        })
    }

    /// [`FrontDoor::deliver`], then [`Delivered::answer`].
    pub async fn ask(
        &self,
        agent: &str,
        chat_id: &str,
        text: &str,
        trace: Option<Value>,
    ) -> Result<Answer, AskError> {
        self.deliver(agent, chat_id, text, trace)
            .await?
            .answer(self, None)
            .await
    }

    /// Waits for the answer to a delivered message as a stream: every piece as it arrives, then
    /// the outcome. The wait goes on without the stream's reader: a client that leaves early
    /// does not stop the agent, and `hold` (a concurrency slot, say) is dropped only once the
    /// answer is complete.
    pub fn answer_stream<H: Send + 'static>(
        self: &Arc<Self>,
        delivered: Delivered,
        hold: H,
    ) -> impl futures_util::Stream<Item = AnswerItem> {
        let (tx, rx) = mpsc::unbounded_channel::<AnswerItem>();
        let fd = self.clone();
        tokio::spawn(async move {
            let pieces = tx.clone();
            let on_delta = move |piece: &str| {
                if !piece.is_empty() {
                    let _ = pieces.send(AnswerItem::Delta(piece.to_string()));
                }
            };
            let outcome = delivered.answer(&fd, Some(&on_delta)).await;
            drop(hold);
            let _ = tx.send(AnswerItem::Done(outcome));
        });
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
    }
}

/// A user message handed to its agent: stored, with the agent running. [`Delivered::answer`]
/// waits for the agent's answer.
pub struct Delivered {
    agent: String,
    chat_id: String,
    /// Subscribed before the message was stored, so no event of the answer can be missed.
    events: broadcast::Receiver<Arc<Event>>,
    started: Instant,
}

impl Delivered {
    /// Waits (up to `CHAT_REPLY_TIMEOUT_MS`) for the agent's answer. Pieces of a streamed answer
    /// go to `on_delta` as they arrive. A failed attempt whose retry comes after the deadline
    /// ends the wait at once as `Unavailable` with the attempt's reason (the message stays
    /// queued); so does the deadline when an attempt has failed meanwhile.
    pub async fn answer(
        mut self,
        fd: &FrontDoor,
        on_delta: Option<&OnDelta>,
    ) -> Result<Answer, AskError> {
        let limit = fd.settings.chat_reply_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        let mut last_failure: Option<String> = None;
        let waited = tokio::time::timeout_at(
            deadline,
            wait_answer(
                fd,
                &mut self.events,
                &self.chat_id,
                on_delta,
                deadline,
                &mut last_failure,
            ),
        )
        .await;
        match waited {
            Ok(Ok(mut a)) => {
                a.elapsed = self.started.elapsed();
                if a.model.is_empty() {
                    a.model = fd
                        .graph(&self.agent)
                        .map_or_else(|_| self.agent.clone(), |g| model_of(&g));
                }
                Ok(a)
            }
            Ok(Err(Miss::Failed(reason))) => Err(AskError::Failed {
                agent: self.agent,
                reason,
            }),
            Ok(Err(Miss::Retrying(reason))) => Err(AskError::Unavailable {
                agent: self.agent,
                reason,
            }),
            Err(_) => match last_failure {
                Some(reason) => Err(AskError::Unavailable {
                    agent: self.agent,
                    reason,
                }),
                None => Err(AskError::Timeout {
                    agent: self.agent,
                    secs: limit.as_secs(),
                }),
            },
        }
    }
}

/// Why the wait for an answer ended without one.
enum Miss {
    /// The dispatch failed for good (or was cancelled, or agentd is stopping).
    Failed(String),
    /// An attempt failed and the next one comes after the caller's deadline.
    Retrying(String),
}

async fn wait_answer(
    fd: &FrontDoor,
    events: &mut broadcast::Receiver<Arc<Event>>,
    chat_id: &str,
    on_delta: Option<&OnDelta>,
    deadline: tokio::time::Instant,
    last_failure: &mut Option<String>,
) -> Result<Answer, Miss> {
    let mut reply: Option<String> = None;
    let mut streamed = String::new();
    loop {
        let ev = match events.recv().await {
            Ok(ev) => ev,
            // Missed events are recovered from the store when the answer completes.
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => {
                return Err(Miss::Failed("agentd is shutting down".into()))
            }
        };
        let p = &ev.payload;
        if p.get("chatId").and_then(Value::as_str) != Some(chat_id) {
            continue;
        }
        let message_id = p
            .get("messageId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match ev.kind.as_str() {
            "message.created" => {
                let role = p.get("role").and_then(Value::as_str).unwrap_or_default();
                let stream_state = p
                    .get("streamState")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if role == "agent" && stream_state == "streaming" && reply.is_none() {
                    reply = Some(message_id.to_string());
                } else if role == "agent" && reply.is_none() {
                    let text = p
                        .get("contentFinal")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    if let Some(f) = on_delta {
                        f(&text);
                    }
                    return Ok(finish(fd, message_id, text).await);
                } else if role == "system"
                    && p.pointer("/trace/dispatchFailure") == Some(&Value::Bool(true))
                {
                    let text = p
                        .get("contentFinal")
                        .and_then(Value::as_str)
                        .unwrap_or("the agent failed");
                    return Err(Miss::Failed(text.to_string()));
                }
            }
            "message.streaming.chunk" if reply.as_deref() == Some(message_id) => {
                let delta = p
                    .get("deltaText")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                streamed.push_str(delta);
                if let Some(f) = on_delta {
                    f(delta);
                }
            }
            "message.streaming.complete" if reply.as_deref() == Some(message_id) => {
                if p.get("streamState").and_then(Value::as_str) == Some("cancelled") {
                    return Err(Miss::Failed("the agent's answer was cancelled".into()));
                }
                let text = p
                    .get("finalText")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or(streamed);
                return Ok(finish(fd, message_id, text).await);
            }
            "dispatch.failed" if reply.is_none() => {
                let reason = p
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("the agent failed")
                    .to_string();
                let retry_in = p.get("retryInMs").and_then(Value::as_u64).unwrap_or(0);
                let retry_at = tokio::time::Instant::now() + Duration::from_millis(retry_in);
                if retry_at >= deadline {
                    return Err(Miss::Retrying(reason));
                }
                *last_failure = Some(reason);
            }
            "request.created" if reply.is_none() => {
                let title = p
                    .get("title")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let request = json!({
                    "id": p.get("requestId"),
                    "type": p.get("type"),
                    "title": title,
                });
                return Ok(Answer {
                    message_id: String::new(),
                    text: title,
                    model: String::new(),
                    tokens_used: None,
                    elapsed: Duration::ZERO,
                    request: Some(request),
                });
            }
            _ => {}
        }
    }
}

/// Completes an answer with what the stored message says (model, usage reported in its trace).
async fn finish(fd: &FrontDoor, message_id: &str, text: String) -> Answer {
    let trace = fd
        .store
        .message_trace(message_id)
        .await
        .unwrap_or(Value::Null);
    let tokens_used = trace
        .pointer("/usage/total_tokens")
        .and_then(Value::as_u64)
        .or_else(|| trace.get("tokensUsed").and_then(Value::as_u64));
    let model = trace
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Answer {
        message_id: message_id.to_string(),
        text,
        model,
        tokens_used,
        elapsed: Duration::ZERO,
        request: None,
    }
}
