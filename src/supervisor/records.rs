//! The record of live worker process groups and cgroups in `DATA_DIR/workers.json` (written by
//! write-then-rename), and the start-up sweep that kills what a previous agentd left behind.
//!
//! A group is killed only when it is really ours: its leader's pid still has the recorded start
//! time (field 22 of `/proc/<pid>/stat`), or, when the leader is gone, the members carry the
//! recorded group id and started after the leader (a pid is never reused while its group lives).
//! A cgroup is ours by its place: a worker's cgroup (`w-<worker id>`) in an agentd subtree, the
//! recorded one or any in this `DATA_DIR`'s subtree; everything in it is killed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::{watch, Notify};

use serde::{Deserialize, Serialize};

use super::cgroup::{Cgroup, Tree, TREE_PREFIX, WORKER_PREFIX};

/// How long the sweep waits for killed leftovers to disappear.
const SWEEP_WAIT: Duration = Duration::from_secs(2);

/// One worker process group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub channel: String,
    pub worker_id: String,
    pub pgid: i32,
    /// Start time of the leader in clock ticks since boot.
    pub start_time: u64,
    /// The worker's cgroup, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Default)]
struct FileDoc {
    agentd_pid: u32,
    /// Start time of that agentd, to tell it from a reused pid.
    #[serde(default)]
    agentd_start_time: u64,
    workers: Vec<Record>,
}

/// The live records and their file.
///
/// Changes only update the map and wake the writer task, which writes the whole file once for
/// however many changes came meanwhile: a burst of starts or exits is not a burst of rewrites.
/// [`Records::written`] waits until a given change is on disk.
pub struct Records {
    path: PathBuf,
    live: Mutex<BTreeMap<String, Record>>,
    /// Counts changes; the writer publishes the last count it wrote in `written`.
    version: AtomicU64,
    dirty: Notify,
    written: watch::Sender<u64>,
    /// This agentd's start time, recorded to tell it from a later process with the same pid.
    own_start_time: u64,
}

impl Records {
    pub fn new(data_dir: &Path) -> Records {
        Records {
            path: data_dir.join("workers.json"),
            live: Mutex::new(BTreeMap::new()),
            version: AtomicU64::new(0),
            dirty: Notify::new(),
            written: watch::Sender::new(0),
            own_start_time: start_time(std::process::id() as i32).unwrap_or(0),
        }
    }

    /// Records a live group; returns the change number to give [`Records::written`].
    pub fn add(&self, r: Record) -> u64 {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.insert(r.worker_id.clone(), r);
        self.changed()
    }

    pub fn remove(&self, worker_id: &str) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.remove(worker_id).is_some() {
            self.changed();
        }
    }

    /// Call with the map locked, so change numbers follow the order of the changes.
    fn changed(&self) -> u64 {
        let v = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        self.dirty.notify_one();
        v
    }

    /// Waits until change `v` (and every one before it) is on disk.
    pub async fn written(&self, v: u64) {
        let mut rx = self.written.subscribe();
        let _ = rx.wait_for(|w| *w >= v).await;
    }

    /// Writes the file whenever something changed; runs for the life of the supervisor.
    pub async fn run_writer(self: Arc<Self>) {
        loop {
            self.dirty.notified().await;
            let (bytes, v) = {
                let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
                (self.document(&live), self.version.load(Ordering::SeqCst))
            };
            let me = self.clone();
            let res = tokio::task::spawn_blocking(move || me.replace_file(&bytes)).await;
            if let Ok(Err(e)) | Err(e) = res.map_err(std::io::Error::other) {
                tracing::warn!(path = %self.path.display(), "cannot record workers: {e}");
            }
            self.written.send_replace(v);
        }
    }

    fn document(&self, live: &BTreeMap<String, Record>) -> Vec<u8> {
        let doc = FileDoc {
            agentd_pid: std::process::id(),
            agentd_start_time: self.own_start_time,
            workers: live.values().cloned().collect(),
        };
        serde_json::to_vec(&doc).unwrap_or_default()
    }

    /// Write-then-rename, so a reader never sees half a file.
    fn replace_file(&self, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &self.path)
    }

    fn write(&self, live: &BTreeMap<String, Record>) {
        if let Err(e) = self.replace_file(&self.document(live)) {
            tracing::warn!(path = %self.path.display(), "cannot record workers: {e}");
        }
    }

    /// Kills every leftover group and cgroup recorded by a previous agentd, and every worker
    /// cgroup left in `tree`, then starts a fresh record. Returns the worker ids of that
    /// agentd's workers (recorded, or named by a cgroup left in `tree`): all gone now (they die
    /// with it, and the sweep killed what was left), so whatever they held can be handed back.
    pub async fn sweep(&self, tree: Option<&Tree>) -> std::io::Result<Vec<String>> {
        let old: FileDoc = match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %self.path.display(), "ignoring unreadable worker record: {e}");
                FileDoc::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileDoc::default(),
            Err(e) => return Err(e),
        };
        let owner = old.agentd_pid as i32;
        if owner > 0
            && owner as u32 != std::process::id()
            && old.agentd_start_time != 0
            && start_time(owner) == Some(old.agentd_start_time)
        {
            // Its workers are not leftovers: they belong to a live agentd.
            tracing::warn!(
                path = %self.path.display(), pid = owner,
                "another agentd is alive with this DATA_DIR; not sweeping its workers"
            );
            return Ok(Vec::new());
        }
        let mut killed = Vec::new();
        for r in &old.workers {
            let members = ours(r);
            if members.is_empty() {
                continue;
            }
            tracing::warn!(
                channel = %r.channel, pgid = r.pgid, members = ?members,
                "killing a worker group left behind by a previous agentd"
            );
            for pid in &members {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            killed.extend(members);
        }
        let mut cgroups: Vec<Cgroup> = old
            .workers
            .iter()
            .filter_map(|r| {
                let dir = r
                    .cgroup
                    .as_ref()
                    .filter(|d| is_worker_cgroup(d, &r.worker_id))?;
                Some(match tree {
                    Some(t) => t.cgroup(dir.clone()),
                    None => Cgroup::at(dir.clone()),
                })
            })
            .collect();
        for cg in tree.map(Tree::workers).unwrap_or_default() {
            if !cgroups.iter().any(|c| c.dir() == cg.dir()) {
                cgroups.push(cg);
            }
        }
        let deadline = tokio::time::Instant::now() + SWEEP_WAIT;
        let cleared = cgroups.iter().map(|cg| async move {
            let pids = cg.pids();
            if !pids.is_empty() {
                tracing::warn!(
                    cgroup = %cg.dir().display(), pids = ?pids,
                    "killing a worker cgroup left behind by a previous agentd"
                );
            }
            if !cg.kill(deadline).await {
                tracing::warn!(cgroup = %cg.dir().display(), "a leftover worker cgroup is not empty after SIGKILL");
            } else if let Err(e) = cg.remove() {
                tracing::warn!(cgroup = %cg.dir().display(), "cannot remove a leftover worker cgroup: {e}");
            }
        });
        futures_util::future::join_all(cleared).await;
        let deadline = Instant::now() + SWEEP_WAIT;
        while killed.iter().any(|p| alive(*p)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Ok(live) = self.live.lock() {
            self.write(&live);
        }
        // A worker in a cgroup may be gone before its record was written (a start does not wait
        // for the file then): its cgroup names it.
        let mut gone: Vec<String> = old.workers.into_iter().map(|r| r.worker_id).collect();
        for id in cgroups.iter().filter_map(|cg| worker_id_of(cg.dir())) {
            if !gone.contains(&id) {
                gone.push(id);
            }
        }
        Ok(gone)
    }
}

/// True for a path shaped like a worker's cgroup in an agentd subtree (`.../agentd-*/w-<id>`)
/// that is a cgroup: a record is never trusted to point anywhere else.
fn is_worker_cgroup(dir: &Path, worker_id: &str) -> bool {
    let name_ok = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.strip_prefix(WORKER_PREFIX) == Some(worker_id));
    let parent_ok = dir
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(TREE_PREFIX));
    name_ok && parent_ok && !worker_id.is_empty() && dir.join("cgroup.procs").is_file()
}

/// The worker id in a worker cgroup's name (`w-<worker id>`).
fn worker_id_of(dir: &Path) -> Option<String> {
    let id = dir.file_name()?.to_str()?.strip_prefix(WORKER_PREFIX)?;
    (!id.is_empty()).then(|| id.to_string())
}

/// `(pgrp, start_time)` of a process, from `/proc/<pid>/stat`.
pub fn proc_stat(pid: i32) -> Option<(i32, u64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain anything.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state), f[2] field 5 (pgrp), f[19] field 22 (starttime).
    let state = f.first()?.chars().next()?;
    Some((f.get(2)?.parse().ok()?, f.get(19)?.parse().ok()?, state))
}

/// Start time of `pid` in clock ticks since boot.
pub fn start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, st, _)| st)
}

fn alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((_, _, s)) if s != 'Z' && s != 'X')
}

/// The pids of the recorded group that are provably ours.
fn ours(r: &Record) -> Vec<i32> {
    if r.pgid <= 1 {
        return Vec::new();
    }
    if let Some((_, st, _)) = proc_stat(r.pgid) {
        if st != r.start_time {
            // The pid now belongs to someone else: the old group is long gone.
            return Vec::new();
        }
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            matches!(proc_stat(pid), Some((pgrp, st, s)) if pgrp == r.pgid && st >= r.start_time && s != 'Z')
        })
        .collect()
}
