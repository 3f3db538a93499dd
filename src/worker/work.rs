//! One batch, start to end: keep the lease, show typing, answer, then complete or fail.

use std::time::Duration;

use super::addons::Addon;
use super::client::{ApiError, Batch, Client};
use super::config::{Scope, WorkerEnv};
use super::turn::{retry, Turn, TurnError};
use super::Stop;

/// How often the typing indicator is sent while working (it has no server-side expiry).
const TYPING_EVERY: Duration = Duration::from_secs(4);
/// Longest the clean-up after SIGTERM may take (the supervisor's grace is 2 s by default).
const STOP_CLEANUP: Duration = Duration::from_millis(1200);

/// How a batch ended, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Completed,
    /// An earlier attempt had already answered; only the completion was missing.
    AlreadyAnswered,
    Failed {
        retryable: bool,
    },
    /// The lease was gone (409/404): the work was dropped.
    LeaseLost,
    /// SIGTERM arrived: the batch was failed as retryable.
    Stopped,
}

/// The agent id to answer as.
pub fn agent_for<'a>(env: &'a WorkerEnv, batch: &'a Batch) -> &'a str {
    match (&env.scope, batch.agent_id_hint.as_deref()) {
        (Scope::All, Some(hint)) if !hint.is_empty() => hint,
        _ => &env.agent_id,
    }
}

/// Handles one claimed batch.
pub async fn handle(
    client: &Client,
    env: &WorkerEnv,
    addon: &Addon,
    batch: &Batch,
    stop: &Stop,
) -> Handled {
    let agent = agent_for(env, batch);
    let worker = env.worker_id.as_str();
    tracing::info!(batch = %batch.batch_id, chat = %batch.chat_id, kind = %batch.kind, "claimed");

    match earlier_attempt(client, batch).await {
        Earlier::Answered => {
            tracing::info!(batch = %batch.batch_id, "already answered by an earlier attempt");
            return finish(client, batch, worker, Handled::AlreadyAnswered).await;
        }
        Earlier::Streaming(ids) => {
            for id in ids {
                tracing::info!(batch = %batch.batch_id, message = %id, "cancelling the half-written answer of an earlier attempt");
                let _ = retry("cancel", || client.cancel_message(&id)).await;
            }
        }
        Earlier::None => {}
    }

    let mut turn = Turn::new(client, batch, agent, worker);
    if let Some(m) = addon.model_id() {
        turn.model_id = m.to_string();
    }
    enum End {
        Done(Result<(), TurnError>),
        LeaseLost,
        Stopped,
    }
    let end = {
        let mut stop = stop.clone();
        tokio::select! {
            r = addon.answer(&mut turn) => End::Done(r),
            _ = keep_lease(client, batch, worker, env.lease) => End::LeaseLost,
            never = keep_typing(client, batch, agent) => match never {},
            _ = stop.wait() => End::Stopped,
        }
    };
    match end {
        End::Done(Ok(())) => {
            if let Err(e) = turn.end_stream().await {
                return give_up(client, batch, worker, &mut turn, e).await;
            }
            finish(client, batch, worker, Handled::Completed).await
        }
        End::Done(Err(e)) => give_up(client, batch, worker, &mut turn, e).await,
        End::LeaseLost => {
            tracing::warn!(batch = %batch.batch_id, "lease lost; dropping the work");
            turn.abort().await;
            Handled::LeaseLost
        }
        End::Stopped => {
            tracing::info!(batch = %batch.batch_id, "stopping: failing the batch in hand as retryable");
            let cleanup = async {
                turn.abort().await;
                if let Err(e) = client
                    .fail(
                        &batch.batch_id,
                        worker,
                        "the worker is stopping",
                        true,
                        Some(Duration::ZERO),
                    )
                    .await
                {
                    tracing::warn!(batch = %batch.batch_id, "cannot fail the batch: {e}");
                }
            };
            if tokio::time::timeout(STOP_CLEANUP, cleanup).await.is_err() {
                tracing::warn!(batch = %batch.batch_id, "clean-up cut short; the lease will expire");
            }
            Handled::Stopped
        }
    }
}

/// Cancels what was streaming and fails the batch, retryable or not as the error says.
async fn give_up(
    client: &Client,
    batch: &Batch,
    worker: &str,
    turn: &mut Turn<'_>,
    e: TurnError,
) -> Handled {
    let retryable = e.retryable();
    tracing::warn!(batch = %batch.batch_id, retryable, "answer failed: {e}");
    turn.abort().await;
    let reason = e.to_string();
    let delay = e.retry_delay();
    match retry("fail", || {
        client.fail(&batch.batch_id, worker, &reason, retryable, delay)
    })
    .await
    {
        Ok(()) => Handled::Failed { retryable },
        Err(ApiError::Conflict(_) | ApiError::NotFound(_)) => Handled::LeaseLost,
        Err(e) => {
            tracing::warn!(batch = %batch.batch_id, "cannot fail the batch (its lease will expire): {e}");
            Handled::Failed { retryable }
        }
    }
}

async fn finish(client: &Client, batch: &Batch, worker: &str, ok: Handled) -> Handled {
    let mut first = true;
    let r = retry("complete", || {
        let again = !first;
        first = false;
        let fut = client.complete(&batch.batch_id, worker);
        async move {
            match fut.await {
                // The first try went through but its answer was lost.
                Err(ApiError::Conflict(_)) if again => Ok(()),
                r => r,
            }
        }
    })
    .await;
    match r {
        Ok(()) => {
            tracing::info!(batch = %batch.batch_id, "completed");
            ok
        }
        Err(ApiError::Conflict(_) | ApiError::NotFound(_)) => {
            tracing::warn!(batch = %batch.batch_id, "lease lost before completion");
            Handled::LeaseLost
        }
        Err(e) => {
            tracing::warn!(batch = %batch.batch_id, "cannot complete (the lease will expire and a retry will find the answer): {e}");
            Handled::LeaseLost
        }
    }
}

enum Earlier {
    None,
    Answered,
    Streaming(Vec<String>),
}

/// Most pages of 200 messages a retry reads back, looking for what earlier attempts wrote.
const EARLIER_PAGES: usize = 10;

/// What earlier attempts at this batch left in the chat (found by `trace.batchId`). Reads back
/// from the newest message until the batch's own inputs (its answers come after them): in a busy
/// chat they may be far more than one page old.
async fn earlier_attempt(client: &Client, batch: &Batch) -> Earlier {
    let inputs: Vec<&str> = batch.items.iter().map(|i| i.source_id.as_str()).collect();
    let mut mine = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..EARLIER_PAGES {
        let page = retry("read messages", || {
            client.messages_page(&batch.chat_id, 200, cursor.as_deref())
        })
        .await;
        let Ok((page, next)) = page else { break };
        let reached = page.iter().any(|m| inputs.contains(&m.id.as_str()));
        mine.extend(
            page.into_iter()
                .filter(|m| m.trace_str("batchId") == Some(batch.batch_id.as_str())),
        );
        match next {
            Some(n) if !reached => cursor = Some(n),
            _ => break,
        }
    }
    if mine
        .iter()
        .any(|m| m.stream_state == "complete" || m.stream_state == "none")
    {
        return Earlier::Answered;
    }
    let streaming: Vec<String> = mine
        .iter()
        .filter(|m| m.stream_state == "streaming")
        .map(|m| m.id.clone())
        .collect();
    if streaming.is_empty() {
        Earlier::None
    } else {
        Earlier::Streaming(streaming)
    }
}

/// Heartbeats every lease/3; returns when the lease is gone.
async fn keep_lease(client: &Client, batch: &Batch, worker: &str, lease: Duration) {
    let every = (lease / 3).max(Duration::from_millis(300));
    let mut wait = every;
    loop {
        tokio::time::sleep(wait).await;
        match client.heartbeat(&batch.batch_id, worker, lease).await {
            Ok(()) => wait = every,
            Err(ApiError::Conflict(_) | ApiError::NotFound(_)) => return,
            Err(e) => {
                tracing::warn!(batch = %batch.batch_id, "heartbeat failed: {e}");
                wait = e
                    .retry_after()
                    .unwrap_or(Duration::from_millis(500))
                    .min(every);
            }
        }
    }
}

/// Sends the typing indicator until dropped.
async fn keep_typing(client: &Client, batch: &Batch, agent: &str) -> std::convert::Infallible {
    loop {
        if let Err(e) = client.typing(&batch.chat_id, agent).await {
            tracing::debug!("typing indicator failed: {e}");
        }
        tokio::time::sleep(TYPING_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(pairs: &[(&str, &str)]) -> WorkerEnv {
        let m: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        WorkerEnv::from_lookup(&|k| m.get(k).cloned(), "graph").unwrap()
    }

    fn batch(hint: Option<&str>) -> Batch {
        serde_json::from_value(json!({"batchId": "b", "chatId": "c", "agentIdHint": hint})).unwrap()
    }

    #[test]
    fn who_answers() {
        let pool = env(&[("AGENTD_AGENT_ID", "echo")]);
        assert_eq!(agent_for(&pool, &batch(Some("faq"))), "faq");
        assert_eq!(agent_for(&pool, &batch(None)), "echo");
        assert_eq!(agent_for(&pool, &batch(Some(""))), "echo");
        let chat = env(&[("AGENTD_AGENT_ID", "echo"), ("AGENTD_CHAT_ID", "c")]);
        assert_eq!(agent_for(&chat, &batch(Some("faq"))), "echo");
        let agent = env(&[("AGENTD_CLAIM_AGENT_ID", "faq")]);
        assert_eq!(agent_for(&agent, &batch(Some("echo"))), "graph");
    }
}
