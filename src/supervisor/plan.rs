//! How one channel's worker runs: the command line, how readiness is judged, the restart policy
//! and its backoff, the inactivity and watchdog clocks, and where its output goes. Made once per
//! launch from the reservation, the graph's `runtime` and the settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::logs::{self, LogSink};
use super::registry::PingClock;
use crate::catalog::{Graph, Ready, Restart, Timeout};
use crate::contract::document::PROPERTY_FLAG;
use crate::settings::Settings;

/// The stand-in channel of a prewarmed worker in logs and records: `prewarm:<graph>`.
pub(super) const PREWARM_PREFIX: &str = "prewarm:";
/// First restart delay; doubled for each consecutive failure, up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A worker that ran this long before failing starts its backoff (and restart budget) afresh.
pub(super) const RESET_AFTER: Duration = Duration::from_secs(60);
/// The margin by which the start timeout exceeds a long settle time.
const SETTLE_MARGIN: Duration = Duration::from_millis(500);

/// Everything the task needs to run one channel's worker.
pub(super) struct Plan {
    pub channel: String,
    pub generation: u64,
    pub graph: String,
    pub request_id: Option<String>,
    pub chat_id: Option<String>,
    pub extra_env: Vec<(String, String)>,
    pub argv: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub ready: Ready,
    pub settle: Duration,
    pub start_timeout: Duration,
    pub timeout: Timeout,
    pub restart: Restart,
    pub max_restarts: u32,
    pub watchdog: Option<Duration>,
    /// `runtime.memory_max` and `runtime.pids_max`.
    pub memory_max: Option<u64>,
    pub pids_max: Option<u64>,
    pub stop_grace: Duration,
    pub property_path: PathBuf,
    pub keep_property_file: bool,
    pub log: Arc<LogSink>,
    /// The channel's last ping, written by `/ping`.
    pub pings: Arc<PingClock>,
    /// A prewarmed worker's: no channel yet, a stdin to be given one on.
    pub prewarm: bool,
}

impl Plan {
    /// The plan of one prewarmed worker of `graph` (no channel yet; its file will be at
    /// `property_path`).
    pub fn prewarm(
        settings: &Settings,
        graph: &Graph,
        property_path: PathBuf,
        log: Arc<LogSink>,
    ) -> Plan {
        let mut plan = Plan::for_graph(
            settings,
            graph,
            format!("{PREWARM_PREFIX}{}", graph.name),
            property_path,
            log,
        );
        plan.prewarm = true;
        plan
    }

    pub(super) fn for_graph(
        settings: &Settings,
        graph: &Graph,
        channel: String,
        property_path: PathBuf,
        log: Arc<LogSink>,
    ) -> Plan {
        let builtin = graph.runtime.command.is_none() && settings.worker_command.is_none();
        let ready = graph.runtime.ready.unwrap_or(if builtin {
            Ready::Notify
        } else {
            Ready::Settle
        });
        let cwd = graph
            .source
            .parent()
            .map(PathBuf::from)
            .filter(|p| p.is_dir());
        Plan {
            channel,
            generation: 0,
            graph: graph.name.clone(),
            request_id: None,
            chat_id: None,
            extra_env: Vec::new(),
            argv: argv(settings, graph, &property_path),
            cwd,
            ready,
            settle: graph
                .runtime
                .settle_ms
                .map(Duration::from_millis)
                .unwrap_or(settings.worker_settle),
            start_timeout: settings.worker_start_timeout,
            timeout: Timeout::Never,
            restart: graph.runtime.restart,
            max_restarts: graph.runtime.max_restarts,
            watchdog: graph.runtime.watchdog_ms.map(Duration::from_millis),
            memory_max: graph.runtime.memory_max,
            pids_max: graph.runtime.pids_max,
            stop_grace: settings.worker_stop_grace,
            property_path,
            keep_property_file: settings.keep_property_files,
            log,
            pings: Arc::new(PingClock::default()),
            prewarm: false,
        }
    }

    /// Where the output of `channel`'s worker goes, per the settings.
    pub fn log_sink(settings: &Settings, channel: &str) -> Arc<LogSink> {
        Self::sink_at(
            settings,
            channel,
            logs::log_file(&settings.log_path, channel),
        )
    }

    /// The log of the prewarmed workers of `graph`, until each is handed a channel.
    pub fn prewarm_log_sink(settings: &Settings, graph: &str) -> Arc<LogSink> {
        let file = logs::prewarm_log_file(&settings.log_path, graph);
        Self::sink_at(settings, &format!("{PREWARM_PREFIX}{graph}"), file)
    }

    fn sink_at(settings: &Settings, name: &str, file: PathBuf) -> Arc<LogSink> {
        Arc::new(if settings.log_stdout {
            LogSink::to_stdout(name)
        } else {
            LogSink::to_file(file, settings.log_max_bytes, settings.log_max_files)
        })
    }

    /// Starts the inactivity clock now (at readiness): the first deadline is one timeout away.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pings.touch();
        self.deadline_from_last_ping()
    }

    fn deadline_from_last_ping(&self) -> Option<Instant> {
        match self.timeout {
            Timeout::Never => None,
            Timeout::Seconds(s) => {
                Instant::from_std(self.pings.last()).checked_add(Duration::from_secs(s))
            }
        }
    }

    /// Called when the inactivity timer fires: true when the worker really is idle; otherwise
    /// `deadline` is moved to one timeout after the latest ping.
    pub fn idle(&self, deadline: &mut Option<Instant>) -> bool {
        match self.deadline_from_last_ping() {
            Some(d) if d > Instant::now() => {
                *deadline = Some(d);
                false
            }
            _ => true,
        }
    }

    /// The start timeout, never shorter than the settle time plus a margin (so a long
    /// `settle_ms` cannot fail every start).
    pub fn start_timeout(&self) -> Duration {
        match self.ready {
            Ready::Settle => self
                .start_timeout
                .max(self.settle.saturating_add(SETTLE_MARGIN)),
            Ready::Notify => self.start_timeout,
        }
    }

    /// What the start waits for, in words (for the error of a worker that was not ready).
    pub fn readiness(&self) -> &'static str {
        match self.ready {
            Ready::Notify => "no READY=1 on NOTIFY_SOCKET",
            Ready::Settle => "settle time longer than the start timeout",
        }
    }

    /// Whether a failed worker is restarted after `consecutive` restarts in a row.
    pub fn restarts_after(&self, consecutive: u32) -> bool {
        self.restart != Restart::Never && consecutive < self.max_restarts
    }

    /// The worker is gone for good: its property file goes too.
    pub fn remove_property_file(&self) {
        if !self.keep_property_file {
            let _ = std::fs::remove_file(&self.property_path);
        }
    }
}

/// The command line of `graph`'s worker for the file at `property_path`.
pub(super) fn argv(settings: &Settings, graph: &Graph, property_path: &Path) -> Vec<String> {
    let mut argv = graph
        .runtime
        .command
        .clone()
        .or_else(|| settings.worker_command.clone())
        .unwrap_or_else(|| {
            let exe = std::env::current_exe()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "agentd".into());
            vec![exe, "worker".into()]
        });
    argv.push(PROPERTY_FLAG.into());
    argv.push(property_path.to_string_lossy().into_owned());
    argv
}

/// The delay before restart number `attempt` (from 1).
pub(super) fn backoff(attempt: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_millis(1000));
        assert_eq!(backoff(3), Duration::from_millis(2000));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }
}
