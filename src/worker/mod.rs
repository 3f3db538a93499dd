//! `agentd worker`: the built-in agent worker.
//!
//! It reads its graph from the per-worker property file, reaches the chat and dispatch API named
//! in its environment, says `READY=1`, and then claims batches and answers them through the
//! graph's addon until SIGTERM. It shares only [`crate::contract`] with the server: a child
//! process that happens to live in the same binary.

pub mod addons;
pub mod client;
pub mod config;
pub mod notify;
pub mod turn;
pub mod work;

use std::path::Path;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::contract::env;
use crate::contract::notify::{PREWARM, READY, STOPPING, WATCHDOG};
use crate::contract::prewarm::{self, Assignment};
use addons::Addon;
use client::{ApiError, ClaimFilter, Client};
use config::{ConfigError, GraphConfig, Scope, WorkerEnv};
use notify::Notifier;

/// Why the worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("graph {graph:?}, node {node:?}: {source}")]
    Property {
        graph: String,
        node: String,
        source: addons::PropertyError,
    },
}

/// Longest a batch in hand may hold up the exit after SIGTERM.
const STOP_BOUND: Duration = Duration::from_millis(1500);
/// Longest pause between tries to reach the API.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Set once SIGTERM (or SIGINT) arrives; cheap to clone.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// A stop signal and the sender that sets it.
    pub fn new() -> (watch::Sender<bool>, Stop) {
        let (tx, rx) = watch::channel(false);
        (tx, Stop(rx))
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Returns once the stop is set (or its sender is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}

/// Everything a running worker needs.
pub struct Worker {
    pub graph: GraphConfig,
    pub env: WorkerEnv,
    pub addon: Addon,
    pub client: Client,
    pub notifier: Notifier,
    /// The API answered already (a prewarmed worker reached it before it waited).
    pub api_reached: bool,
}

impl Worker {
    /// Loads the property file and the environment (through `lookup`).
    pub fn load(
        property: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Worker, WorkerError> {
        Worker::load_with(property, lookup, None)
    }

    /// [`Worker::load`], with the API client a prewarmed worker made already.
    pub fn load_with(
        property: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
        client: Option<Client>,
    ) -> Result<Worker, WorkerError> {
        let graph = GraphConfig::load(property, lookup)?;
        let env = WorkerEnv::from_lookup(lookup, &graph.name)?;
        // The first node answers; the others are checked so that a typo is not silent.
        let mut addon = None;
        for node in &graph.nodes {
            let a = Addon::from_node(node).map_err(|source| WorkerError::Property {
                graph: graph.name.clone(),
                node: node.name.clone(),
                source,
            })?;
            addon.get_or_insert(a);
        }
        let addon = addon.ok_or_else(|| ConfigError::Invalid {
            path: property.display().to_string(),
            message: "the graph has no node".into(),
        })?;
        let api_reached = client.is_some();
        let client = client.unwrap_or_else(|| {
            Client::new(&env.api_url, env.api_key.clone(), env.worker_token.clone())
        });
        let notifier = Notifier::new(env.notify_socket.clone());
        Ok(Worker {
            graph,
            env,
            addon,
            client,
            notifier,
            api_reached,
        })
    }

    fn filter(&self) -> ClaimFilter {
        match &self.env.scope {
            Scope::Chat(c) => ClaimFilter {
                chat_id: Some(c.clone()),
                agent_id: None,
            },
            Scope::Agent(a) => ClaimFilter {
                chat_id: None,
                agent_id: Some(a.clone()),
            },
            Scope::All => ClaimFilter::default(),
        }
    }

    /// Waits until the API answers; false if stopped first.
    async fn reach_api(&self, stop: &Stop) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.client.health().await {
                Ok(()) => return true,
                Err(e) => tracing::info!("waiting for the API at {}: {e}", self.client.base()),
            }
            let mut s = stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = s.wait() => return false,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Claims and answers until `stop` is set.
    pub async fn serve(&self, stop: Stop) {
        if !self.api_reached && !self.reach_api(&stop).await {
            return;
        }
        self.notifier.send(READY);
        tracing::info!(
            graph = %self.graph.name,
            agent = %self.env.agent_id,
            worker = %self.env.worker_id,
            api = %self.client.base(),
            scope = ?self.env.scope,
            "worker ready"
        );
        let filter = self.filter();
        let mut backoff = Duration::from_millis(200);
        while !stop.is_set() {
            let claimed = {
                let mut s = stop.clone();
                tokio::select! {
                    r = self.client.claim(&self.env.worker_id, self.env.lease, jitter(self.env.claim_wait), &filter) => r,
                    _ = s.wait() => break,
                }
            };
            match claimed {
                Ok(Some(batch)) => {
                    backoff = Duration::from_millis(200);
                    let handled = work::handle(&self.client, &self.env, &self.addon, &batch, &stop);
                    tokio::pin!(handled);
                    let mut s = stop.clone();
                    tokio::select! {
                        _ = &mut handled => {}
                        _ = s.wait() => {
                            // `handle` cleans up after a stop by itself, within its own bound;
                            // this bounds the calls before and after its main phase too.
                            if tokio::time::timeout(STOP_BOUND, &mut handled).await.is_err() {
                                tracing::warn!(batch = %batch.batch_id, "gave up on the batch at shutdown; its lease will expire");
                            }
                        }
                    }
                }
                Ok(None) => backoff = Duration::from_millis(200),
                Err(e) => {
                    let wait = match &e {
                        ApiError::RateLimited(Some(d)) => *d,
                        _ => backoff,
                    };
                    if matches!(e, ApiError::RateLimited(_)) {
                        tracing::debug!("claim rate limited; trying again in {wait:?}");
                    } else {
                        tracing::warn!("claim failed: {e}; trying again in {wait:?}");
                    }
                    let mut s = stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = s.wait() => break,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// `d` less up to a fifth, at random: many idle workers started together do not keep claiming in
/// step (every claim counts against the server's write rate limit).
fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    d.mul_f64(1.0 - (r % 1000) as f64 / 5000.0)
}

/// Feeds the supervisor's watchdog every `interval / 2` until dropped.
async fn feed_watchdog(notifier: Notifier, interval: Duration) {
    let every = (interval / 2).max(Duration::from_millis(10));
    loop {
        notifier.send(WATCHDOG);
        tokio::time::sleep(every).await;
    }
}

/// A prewarmed worker's wait for its channel (see [`crate::contract::prewarm`]): builds its API
/// client and reaches the API (keeping the connection), says `PREWARM=1`, then reads the
/// assignment from stdin; `None` at end of file (not needed).
///
/// SIGTERM still has its default action (ends the process) until the worker installs its
/// handlers after this.
async fn wait_for_channel() -> Result<Option<(Assignment, Client)>, WorkerError> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let lookup = |k: &str| std::env::var(k).ok();
    let graph = std::env::var(env::GRAPH).unwrap_or_default();
    let wenv = WorkerEnv::from_lookup(&lookup, &graph)?;
    let client = Client::new(
        &wenv.api_url,
        wenv.api_key.clone(),
        wenv.worker_token.clone(),
    );
    let mut backoff = Duration::from_millis(100);
    while let Err(e) = client.health().await {
        tracing::info!("waiting for the API at {}: {e}", client.base());
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    Notifier::new(wenv.notify_socket.clone()).send(PREWARM);
    // Read without blocking the runtime, which keeps the API connection alive meanwhile.
    let fd = std::os::fd::AsFd::as_fd(&std::io::stdin()).try_clone_to_owned()?;
    let stdin = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    let mut line = String::new();
    tokio::io::BufReader::new(stdin.take(prewarm::MAX_LINE as u64))
        .read_line(&mut line)
        .await?;
    if line.is_empty() {
        return Ok(None);
    }
    let assignment = Assignment::parse(&line).map_err(|e| {
        WorkerError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the prewarm assignment on stdin is not valid: {e}"),
        ))
    })?;
    Ok(Some((assignment, client)))
}

/// Runs the worker until SIGTERM.
pub async fn run(property: &Path) -> Result<(), WorkerError> {
    let (assigned, client) = if std::env::var(env::PREWARM).is_ok_and(|v| v == "1") {
        match wait_for_channel().await? {
            Some((a, client)) => (a.env, Some(client)),
            None => {
                tracing::info!("prewarmed worker not needed: exiting");
                return Ok(());
            }
        }
    } else {
        Default::default()
    };
    // The assignment's variables win over the environment the prewarmed worker started with.
    let lookup = |k: &str| assigned.get(k).cloned().or_else(|| std::env::var(k).ok());
    let worker = Worker::load_with(property, &lookup, client)?;
    let (tx, stop) = Stop::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    let watchdog = worker.env.watchdog;
    let notifier = worker.notifier.clone();
    let serve = worker.serve(stop.clone());
    tokio::pin!(serve);
    let feed = async {
        match watchdog {
            Some(iv) => feed_watchdog(notifier, iv).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(feed);
    let mut signalled = false;
    loop {
        tokio::select! {
            _ = &mut serve => break,
            _ = &mut feed => {}
            _ = term.recv(), if !signalled => {
                signalled = true;
                tracing::info!("SIGTERM: stopping");
                worker.notifier.send(STOPPING);
                let _ = tx.send(true);
            }
            _ = int.recv(), if !signalled => {
                signalled = true;
                tracing::info!("SIGINT: stopping");
                worker.notifier.send(STOPPING);
                let _ = tx.send(true);
            }
        }
    }
    if !signalled {
        worker.notifier.send(STOPPING);
    }
    tracing::info!("worker stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_fifth_below() {
        let d = Duration::from_secs(30);
        for _ in 0..200 {
            let j = jitter(d);
            assert!(j <= d && j >= d.mul_f64(0.8), "{j:?}");
        }
    }

    #[tokio::test]
    async fn stop_wakes_waiters() {
        let (tx, stop) = Stop::new();
        assert!(!stop.is_set());
        let mut s = stop.clone();
        let waiter = tokio::spawn(async move { s.wait().await });
        tx.send(true).unwrap();
        waiter.await.unwrap();
        assert!(stop.is_set());
    }
}
