//! cgroup v2 containment: one cgroup per worker process, under a subtree of agentd's own cgroup,
//! so that everything a worker starts (even a descendant that left its process group with
//! `setsid()`) is found, measured and killed with it.
//!
//! [`Tree::detect`] decides at start-up whether agentd can make cgroups here: it finds the
//! cgroup2 mount that shows agentd's own cgroup (`/proc/self/mountinfo`, `/proc/self/cgroup`),
//! makes `agentd-<hash of DATA_DIR>` beneath it (the same name after a restart, so leftovers of a
//! previous agentd are found), and moves a probe child into a cgroup of it. Each worker process
//! then gets `w-<worker id>` in that subtree, joined before it execs.
//!
//! Waiting for a cgroup to empty listens to `cgroup.events` through one inotify instance shared
//! by every wait (the kernel marks the file modified when `populated` changes).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use sha2::{Digest, Sha256};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;
use tokio::time::{sleep, sleep_until, Instant};

/// Prefix of a worker cgroup's name; the rest is the worker id.
pub const WORKER_PREFIX: &str = "w-";
/// Prefix of the subtree's name; the rest is a hash of `DATA_DIR`.
pub const TREE_PREFIX: &str = "agentd-";
/// Prefix of the start-up probe's cgroup.
const PROBE_PREFIX: &str = "probe-";
/// How often a cgroup is looked at when no inotify watch is available, or when it must be
/// killed process by process (kernels without `cgroup.kill`).
const POLL: Duration = Duration::from_millis(10);

/// The subtree where agentd makes its workers' cgroups.
pub struct Tree {
    dir: PathBuf,
    /// Controllers enabled for the workers' cgroups: `memory.max` and `pids.max` are enforced
    /// by the kernel only with them.
    memory: bool,
    pids: bool,
    events: Option<Arc<Events>>,
}

/// Which of a worker's limits its cgroup enforces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Enforced {
    pub memory: bool,
    pub pids: bool,
}

impl Tree {
    /// Finds (or makes) agentd's subtree and checks that a process can be moved into it; the
    /// reason when agentd cannot use cgroups here. Blocking: call it off the async runtime.
    pub fn detect(data_dir: &Path) -> Result<Tree, String> {
        let own = own_cgroup()?;
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let base = cgroup2_dir(&mountinfo, &own)
            .ok_or_else(|| format!("no cgroup2 mount shows agentd's own cgroup {own:?}"))?;
        let dir = base.join(subtree_name(data_dir));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
        if let Err(e) = probe(&dir) {
            let _ = fs::remove_dir(&dir);
            return Err(format!(
                "cannot move a process into a cgroup under {}: {e}",
                dir.display()
            ));
        }
        let (memory, pids) = enable_controllers(&dir);
        Ok(Tree {
            dir,
            memory,
            pids,
            events: None,
        })
    }

    /// Starts listening to `cgroup.events` changes; without it, waits poll. Needs the runtime.
    pub fn listen(&mut self) {
        match Events::start() {
            Ok(events) => self.events = Some(events),
            Err(e) => tracing::warn!(
                "no inotify for cgroup events ({e}): waiting for a worker's cgroup to empty \
                 polls every {POLL:?}"
            ),
        }
    }

    /// The subtree's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `memory.max` and `pids.max` can be set on the workers' cgroups.
    pub fn controllers(&self) -> Enforced {
        Enforced {
            memory: self.memory,
            pids: self.pids,
        }
    }

    /// Makes the cgroup of one worker process, with the limits its controllers can enforce.
    pub fn create(
        &self,
        worker_id: &str,
        memory_max: Option<u64>,
        pids_max: Option<u64>,
    ) -> io::Result<(Cgroup, Enforced)> {
        let cg = self.cgroup(self.dir.join(format!("{WORKER_PREFIX}{worker_id}")));
        fs::create_dir(&cg.dir)?;
        let mut enforced = Enforced::default();
        let limits = (|| {
            if let (Some(max), true) = (memory_max, self.memory) {
                fs::write(cg.dir.join("memory.max"), max.to_string())?;
                // No swap to spill into, so the limit is a hard one (the file exists only with
                // swap accounting).
                let _ = fs::write(cg.dir.join("memory.swap.max"), "0");
                // Over the limit the kernel kills the whole worker, not one process of it, so
                // the worker ends as one crash that its restart policy handles (Linux 4.19+).
                let _ = fs::write(cg.dir.join("memory.oom.group"), "1");
                enforced.memory = true;
            }
            if let (Some(max), true) = (pids_max, self.pids) {
                fs::write(cg.dir.join("pids.max"), max.to_string())?;
                enforced.pids = true;
            }
            Ok(())
        })();
        match limits {
            Ok(()) => Ok((cg, enforced)),
            Err(e) => {
                let _ = cg.remove();
                Err(e)
            }
        }
    }

    /// A cgroup at `dir` (made by this or a previous agentd).
    pub fn cgroup(&self, dir: PathBuf) -> Cgroup {
        Cgroup {
            dir,
            events: self.events.clone(),
        }
    }

    /// Every worker cgroup now in the subtree.
    pub fn workers(&self) -> Vec<Cgroup> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(WORKER_PREFIX))
            })
            .map(|e| self.cgroup(e.path()))
            .collect()
    }

    /// Removes the subtree if no worker cgroup is left in it.
    pub fn remove(&self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

impl Drop for Tree {
    /// However agentd ends (a second signal skips the graceful shutdown), an empty subtree goes;
    /// one with worker cgroups left is the next start's to sweep.
    fn drop(&mut self) {
        self.remove();
    }
}

/// The path of agentd's own cgroup in the v2 hierarchy (`0::<path>` of `/proc/self/cgroup`).
fn own_cgroup() -> Result<String, String> {
    let text = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("agentd is in no cgroup v2 hierarchy (no 0:: line in /proc/self/cgroup)")?;
    // Outside the cgroup namespace's view, or removed under us: nothing usable to build on.
    if !path.starts_with('/') || path.split('/').any(|p| p == "..") || path.ends_with(" (deleted)")
    {
        return Err(format!("agentd's own cgroup {path:?} is not reachable"));
    }
    Ok(path.to_string())
}

/// The directory of cgroup `own` in a cgroup2 mount of `mountinfo` (proc(5)'s format).
fn cgroup2_dir(mountinfo: &str, own: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut f = left.split_whitespace().skip(3);
        let (root, mount) = (unescape(f.next()?), unescape(f.next()?));
        let rel = if root == "/" {
            own
        } else {
            let rest = own.strip_prefix(root.as_str())?;
            if !rest.is_empty() && !rest.starts_with('/') {
                return None;
            }
            rest
        };
        let dir = Path::new(&mount).join(rel.trim_start_matches('/'));
        dir.is_dir().then_some(dir)
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                out.push(
                    d.iter()
                        .fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')),
                );
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `agentd-` and a hash of `DATA_DIR`: one subtree per data directory, the same after a restart.
fn subtree_name(data_dir: &Path) -> String {
    let path = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let hash = Sha256::digest(path.as_os_str().as_encoded_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{TREE_PREFIX}{hex}")
}

/// Moves a forked child into a fresh cgroup of `dir` the way workers join theirs.
fn probe(dir: &Path) -> io::Result<()> {
    // Probes of an agentd that died in the middle of one (empty: their child is gone too).
    for stale in subdirs(dir) {
        if stale
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(PROBE_PREFIX))
        {
            let _ = fs::remove_dir(&stale);
        }
    }
    let cg = dir.join(format!("{PROBE_PREFIX}{}", std::process::id()));
    match fs::create_dir(&cg) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let moved = (|| {
        let procs = File::options().write(true).open(cg.join("cgroup.procs"))?;
        let fd = procs.as_raw_fd();
        // SAFETY: the child only calls write(2) and _exit(2), both async-signal-safe, so forking
        // a multi-threaded process is sound.
        match unsafe { fork() }.map_err(io::Error::from)? {
            ForkResult::Child => unsafe {
                let code = if join(fd) {
                    0
                } else {
                    Errno::last_raw().clamp(1, 255)
                };
                libc::_exit(code)
            },
            ForkResult::Parent { child } => loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
                    Ok(WaitStatus::Exited(_, code)) => {
                        return Err(io::Error::from_raw_os_error(code))
                    }
                    Ok(other) => return Err(io::Error::other(format!("probe ended: {other:?}"))),
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            },
        }
    })();
    let _ = fs::remove_dir(&cg);
    moved
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is open as `fd`. Only
/// async-signal-safe calls: fit for a child between fork and exec.
pub fn join(fd: RawFd) -> bool {
    // SAFETY: a one-byte write from a static buffer to a file descriptor.
    unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) == 1 }
}

/// Enables `memory` and `pids` for the workers' cgroups where the subtree has them; which are on.
fn enable_controllers(dir: &Path) -> (bool, bool) {
    let words = |file: &str| -> Vec<String> {
        fs::read_to_string(dir.join(file))
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let available = words("cgroup.controllers");
    for c in ["memory", "pids"] {
        if available.iter().any(|a| a == c) {
            if let Err(e) = fs::write(dir.join("cgroup.subtree_control"), format!("+{c}")) {
                tracing::warn!(dir = %dir.display(), "cannot enable the {c} controller: {e}");
            }
        }
    }
    let on = words("cgroup.subtree_control");
    let has = |c: &str| on.iter().any(|o| o == c);
    (has("memory"), has("pids"))
}

/// One worker process's cgroup.
#[derive(Clone)]
pub struct Cgroup {
    dir: PathBuf,
    events: Option<Arc<Events>>,
}

impl std::fmt::Debug for Cgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Cgroup").field(&self.dir).finish()
    }
}

impl Cgroup {
    /// The cgroup at `dir`, watched without inotify (for cgroups outside agentd's tree).
    pub fn at(dir: PathBuf) -> Cgroup {
        Cgroup { dir, events: None }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `cgroup.procs`, open for writing: the child writes `0` to it before it execs ([`join`]).
    pub fn procs_file(&self) -> io::Result<File> {
        File::options()
            .write(true)
            .open(self.dir.join("cgroup.procs"))
    }

    /// Every process in this cgroup and in any the worker made below it.
    pub fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        collect_pids(&self.dir, &mut out);
        out
    }

    /// Sends `sig` to every process of the cgroup; the pids it was sent to.
    pub fn signal(&self, sig: Signal) -> Vec<i32> {
        let pids = self.pids();
        for p in &pids {
            let _ = kill(Pid::from_raw(*p), sig);
        }
        pids
    }

    /// True while some process is in the cgroup (or below it).
    pub fn populated(&self) -> bool {
        match fs::read_to_string(self.dir.join("cgroup.events")) {
            Ok(s) => s
                .lines()
                .any(|l| l.split_whitespace().eq(["populated", "1"])),
            // Removed: nothing can be in it.
            Err(_) => false,
        }
    }

    /// Kills every process of the cgroup and waits until it is empty (true) or `deadline`.
    pub async fn kill(&self, deadline: Instant) -> bool {
        if fs::write(self.dir.join("cgroup.kill"), "1").is_ok() {
            return self.wait_empty(deadline).await;
        }
        // No cgroup.kill (before Linux 5.14): SIGKILL whoever is there until nobody is, so
        // that a process forked meanwhile is killed on the next round.
        loop {
            if self.signal(Signal::SIGKILL).is_empty() && !self.populated() {
                return true;
            }
            tokio::select! {
                _ = sleep(POLL) => {}
                _ = sleep_until(deadline) => return !self.populated(),
            }
        }
    }

    /// Sends SIGKILL to the whole cgroup without waiting.
    pub fn kill_now(&self) {
        if fs::write(self.dir.join("cgroup.kill"), "1").is_err() {
            self.signal(Signal::SIGKILL);
        }
    }

    /// Waits until no process is left in the cgroup (true) or `deadline` passes (false).
    pub async fn wait_empty(&self, deadline: Instant) -> bool {
        // Usually empty already (the leader was the last process): then no watch is set up.
        if !self.populated() {
            return true;
        }
        // Watching before the next look, so that a change between the look and the wait
        // still wakes the wait.
        let watch = self
            .events
            .as_ref()
            .and_then(|e| e.watch(&self.dir.join("cgroup.events")).ok());
        loop {
            if !self.populated() {
                return true;
            }
            let changed = async {
                match &watch {
                    Some(w) => w.notify.notified().await,
                    None => sleep(POLL).await,
                }
            };
            tokio::select! {
                _ = changed => {}
                _ = sleep_until(deadline) => return !self.populated(),
            }
        }
    }

    /// Removes the cgroup (and any the worker made below it); it must be empty.
    pub fn remove(&self) -> io::Result<()> {
        remove_tree(&self.dir)
    }

    /// CPU time used by the cgroup's processes, the exited ones included, in microseconds.
    pub fn cpu_usec(&self) -> Option<u64> {
        let stat = fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// How many times the kernel's OOM killer struck in this cgroup (over `memory.max`).
    pub fn oom_kills(&self) -> u64 {
        fs::read_to_string(self.dir.join("memory.events"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for sub in subdirs(dir) {
        collect_pids(&sub, out);
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes an empty cgroup and the cgroups below it, deepest first.
fn remove_tree(dir: &Path) -> io::Result<()> {
    for sub in subdirs(dir) {
        remove_tree(&sub)?;
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// An inotify instance, readable through tokio.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// One inotify instance for every wait on a `cgroup.events` file: the kernel allows few
/// instances per user, and a shutdown waits on every worker at once.
struct Events {
    fd: AsyncFd<InotifyFd>,
    /// Per watched file: its waiters' wake-up and how many watches share it.
    waiters: Mutex<HashMap<WatchDescriptor, (Arc<Notify>, usize)>>,
}

/// A watch on one `cgroup.events`; dropping it stops watching.
struct Watch {
    events: Arc<Events>,
    wd: WatchDescriptor,
    notify: Arc<Notify>,
}

impl Events {
    /// Opens the instance and starts the task that hands its events to the waiters.
    fn start() -> io::Result<Arc<Events>> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // SAFETY: the `Inotify` owns its descriptor and keeps it open, unchanged, for as long
        // as the `AsyncFd` holds it.
        let fd = unsafe { AsyncFd::register_with_interest(InotifyFd(ino), Interest::READABLE) }?;
        let events = Arc::new(Events {
            fd,
            waiters: Mutex::new(HashMap::new()),
        });
        tokio::spawn(events.clone().run());
        Ok(events)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WatchDescriptor, (Arc<Notify>, usize)>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(self: Arc<Self>) {
        loop {
            let Ok(mut ready) = self.fd.readable().await else {
                return;
            };
            match ready.get_inner().0.read_events() {
                Ok(list) => {
                    let waiters = self.lock();
                    for ev in list {
                        if let Some((n, _)) = waiters.get(&ev.wd) {
                            // Stored when nobody waits yet: the next wait returns at once.
                            n.notify_one();
                        }
                    }
                }
                Err(Errno::EAGAIN) => ready.clear_ready(),
                Err(e) => {
                    tracing::warn!("reading cgroup events failed: {e}");
                    ready.clear_ready();
                }
            }
        }
    }

    fn watch(self: &Arc<Self>, file: &Path) -> io::Result<Watch> {
        let mut waiters = self.lock();
        let wd = self
            .fd
            .get_ref()
            .0
            .add_watch(file, AddWatchFlags::IN_MODIFY)?;
        let entry = waiters
            .entry(wd)
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Ok(Watch {
            events: self.clone(),
            wd,
            notify: entry.0.clone(),
        })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut waiters = self.events.lock();
        if let Some(entry) = waiters.get_mut(&self.wd) {
            entry.1 -= 1;
            if entry.1 == 0 {
                waiters.remove(&self.wd);
                let _ = self.events.fd.get_ref().0.rm_watch(self.wd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup_in_a_mount() {
        let tmp = tempfile::tempdir().unwrap();
        let mount = tmp.path().join("unified dir");
        fs::create_dir_all(mount.join("system.slice/agentd.service")).unwrap();
        let escaped = mount.to_string_lossy().replace(' ', "\\040");
        let info = format!(
            "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
             41 31 0:38 / {escaped} rw,relatime shared:9 - cgroup2 cgroup2 rw\n"
        );
        assert_eq!(
            cgroup2_dir(&info, "/system.slice/agentd.service"),
            Some(mount.join("system.slice/agentd.service"))
        );
        assert_eq!(cgroup2_dir(&info, "/"), Some(mount.clone()));
        assert_eq!(cgroup2_dir(&info, "/gone"), None);

        // A mount of a subtree (a container's view): paths are relative to its root.
        fs::create_dir_all(mount.join("agentd.service")).unwrap();
        let info = format!("41 31 0:38 /system.slice {escaped} rw - cgroup2 cgroup2 rw\n");
        assert_eq!(
            cgroup2_dir(&info, "/system.slice/agentd.service"),
            Some(mount.join("agentd.service"))
        );
        assert_eq!(cgroup2_dir(&info, "/system.slicex"), None);
        assert_eq!(cgroup2_dir(&info, "/user.slice"), None);
    }

    #[test]
    fn subtree_names_are_stable_and_distinct() {
        let a = subtree_name(Path::new("/nonexistent/a"));
        assert_eq!(a, subtree_name(Path::new("/nonexistent/a")));
        assert_ne!(a, subtree_name(Path::new("/nonexistent/b")));
        assert!(a.starts_with(TREE_PREFIX) && a.len() == TREE_PREFIX.len() + 16);
    }
}
