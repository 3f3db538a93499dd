//! `agentd worker`: the built-in agent worker (issue 4). STUB from the skeleton.

use std::path::Path;

/// Why the worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Addons the built-in worker can run; `/start` refuses graphs with others.
pub const KNOWN_ADDONS: &[&str] = &["echo", "rules", "openai_chat"];

/// Runs the worker until SIGTERM.
pub async fn run(_property: &Path) -> Result<(), WorkerError> {
    Ok(())
}
