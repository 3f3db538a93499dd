//! Who else must agree before a channel's worker is spawned here: with several nodes on one
//! database, a start takes the channel for this node first (see `crate::cluster`), and gives it
//! back once the worker is gone for good. Nothing is asked on a single node.

use std::future::Future;
use std::pin::Pin;

use super::errors::StartError;
use super::reservation::StartSpec;

/// The answer to a claim: `Ok` once the channel is this node's.
pub type Claimed = Pin<Box<dyn Future<Output = Result<(), StartError>> + Send>>;

/// Done once the channel is given back.
pub type Released = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Records which node runs each channel; told of every start, spawn and end of a worker.
pub trait Ownership: Send + Sync {
    /// Takes `spec.channel` for this node before its worker is spawned; `generation` names this
    /// start of it. Refused with [`StartError::ChannelExists`] when another node runs it.
    fn claim(&self, generation: u64, spec: &StartSpec, graph: &str) -> Claimed;
    /// The worker of that start runs a new process, `worker_id`.
    fn spawned(&self, channel: &str, generation: u64, worker_id: &str);
    /// The worker of that start is gone for good (stopped, reaped, given up, failed to start):
    /// the channel is given back. A stop or failed start is answered once that is done.
    fn released(&self, channel: &str, generation: u64) -> Released;
}
