//! The prewarm handover: how agentd gives a waiting (prewarmed) worker its channel.
//!
//! A prewarmed worker is started with [`super::env::PREWARM`]`=1`, without
//! [`super::env::CHANNEL`], [`super::env::REQUEST_ID`] or [`super::env::CHAT_ID`], and with
//! `--property <path>` naming a file that does not exist yet. It loads what it can, says
//! [`super::notify::PREWARM`] on its notify socket, and reads one line from stdin: an
//! [`Assignment`], JSON. By then the property file is written. From there on it is a worker
//! like any other: it reads the file and the assignment's variables (which win over its own
//! environment), and says `READY=1`. End of file on stdin before the line means agentd no longer
//! needs it: it exits with status 0.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest assignment line a worker needs to accept, in bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// What a prewarmed worker is given when a channel takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Environment variables of the channel: `AGENTD_CHANNEL` always, `AGENTD_REQUEST_ID`,
    /// `AGENTD_CHAT_ID` and a caller's extra variables when there are any.
    pub env: BTreeMap<String, String>,
}

impl Assignment {
    /// The line agentd writes, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        v.push(b'\n');
        v
    }

    /// Reads a line a worker received.
    pub fn parse(line: &str) -> Result<Assignment, serde_json::Error> {
        serde_json::from_str(line.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_round_trips() {
        let mut a = Assignment::default();
        a.env.insert("AGENTD_CHANNEL".into(), "room \"1\"\n".into());
        let line = a.to_line();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(
            Assignment::parse(std::str::from_utf8(&line).unwrap()).unwrap(),
            a
        );
    }
}
