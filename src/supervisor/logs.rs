//! Where a worker's output goes: its own size-capped, rotated log file under `LOG_PATH`, or
//! agentd's stdout with every line prefixed `[<channel>] ` (`LOG_STDOUT=true`). Writes and
//! rotation happen on a writer thread of their own. The last lines are kept in memory for the
//! `/start` error of a worker that dies early, and a longer window of recent lines (agentd's
//! notes included) for the console's log view, which can also follow new lines as they are
//! written.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{broadcast, oneshot};

/// Lines kept for error messages.
const TAIL_LINES: usize = 20;
/// Most recent lines kept for reading back (`/ops/workers/{channel}/logs`)...
pub const RECENT_LINES: usize = 200;
/// ...and at most this many bytes of them (the newest line is always kept), so a thousand idle
/// workers cost little and a chatty one cannot hold more than this.
const RECENT_BYTES: usize = 64 * 1024;
/// Writes buffered per follower before a slow one is told it missed some.
const FOLLOW_BUFFER: usize = 256;
/// A line longer than this is cut into pieces (a child without newlines cannot grow our memory).
const MAX_LINE: usize = 16 * 1024;
/// What starts agentd's own lines in a worker's log.
const NOTE: &str = "--- agentd: ";

/// A file-name stem for `channel` that is safe for any input and unique per channel: the
/// channel's safe characters (at most 40) plus a short hash of the raw name.
pub fn safe_stem(channel: &str) -> String {
    let mut safe: String = channel
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    // No hidden files and no "..": dots only inside the name.
    safe = safe.trim_start_matches('.').replace("..", "_");
    if safe.is_empty() {
        safe.push('_');
    }
    let hash = Sha256::digest(channel.as_bytes());
    let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{safe}-{hex}")
}

/// The log file of a channel under `log_path`.
pub fn log_file(log_path: &Path, channel: &str) -> PathBuf {
    log_path.join(format!("worker-{}.log", safe_stem(channel)))
}

/// The log file of the prewarmed workers of `graph` under `log_path`: named apart from every
/// channel's (`worker-*`), so no channel name, `prewarm:<graph>` included, shares it.
pub fn prewarm_log_file(log_path: &Path, graph: &str) -> PathBuf {
    log_path.join(format!("prewarm-{}.log", safe_stem(graph)))
}

enum Target {
    Stdout { prefix: String },
    File(FileLog),
}

struct FileLog {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_bytes: u64,
    max_files: u32,
    /// The last open failed: said once, not once per line the worker writes.
    failing: bool,
}

impl FileLog {
    fn open(&mut self) {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path);
        match f {
            Ok(f) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!(path = %self.path.display(), "worker log writable again");
                }
                self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = Some(f);
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(path = %self.path.display(), "cannot open worker log (its lines are dropped until it can be): {e}");
                }
                self.file = None;
            }
        }
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    /// `x.log` -> `x.log.1` -> ... -> `x.log.<max_files>`; the oldest is dropped.
    fn rotate(&mut self) {
        self.file = None;
        let _ = std::fs::remove_file(self.rotated(self.max_files));
        for n in (1..self.max_files).rev() {
            let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        let _ = std::fs::rename(&self.path, self.rotated(1));
        self.open();
    }

    fn write(&mut self, line: &[u8]) {
        if self.file.is_none() {
            self.open();
        }
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate();
        }
        if let Some(f) = self.file.as_mut() {
            if f.write_all(line).is_ok() {
                self.size += line.len() as u64;
            }
        }
    }
}

impl Target {
    fn write(&mut self, lines: &[String]) {
        match self {
            Target::Stdout { prefix } => {
                let mut out = std::io::stdout().lock();
                for line in lines {
                    let _ = writeln!(out, "{prefix}{line}");
                }
            }
            Target::File(f) => {
                for line in lines {
                    let mut buf = Vec::with_capacity(line.len() + 1);
                    buf.extend_from_slice(line.as_bytes());
                    buf.push(b'\n');
                    f.write(&buf);
                }
            }
        }
    }
}

/// Lines on their way to one sink's output.
struct Job {
    target: Arc<Mutex<Target>>,
    lines: Vec<String>,
    written: oneshot::Sender<()>,
}

impl Job {
    fn run(self) {
        self.target
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(&self.lines);
        let _ = self.written.send(());
    }
}

/// The thread that writes (and rotates) every worker log, so that file and stdout writes never
/// block the runtime's threads. One thread for all sinks keeps each sink's lines in the order
/// they were queued.
fn writer() -> Option<&'static mpsc::Sender<Job>> {
    static WRITER: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    WRITER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            match std::thread::Builder::new()
                .name("agentd-logs".into())
                .spawn(move || rx.into_iter().for_each(Job::run))
            {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::error!(
                        "cannot start the log writer thread (worker logs are written inline): {e}"
                    );
                    None
                }
            }
        })
        .as_ref()
}

/// Lines written together, as followers receive them.
pub type LogLines = Arc<[String]>;

/// The lines a sink remembers.
#[derive(Default)]
struct Kept {
    /// The last lines of the current process, for error messages (cleared at each spawn).
    tail: VecDeque<String>,
    /// The recent lines of every process of this worker, within [`RECENT_LINES`] and
    /// [`RECENT_BYTES`].
    recent: VecDeque<String>,
    recent_bytes: usize,
}

impl Kept {
    fn push(&mut self, line: &str) {
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
        self.recent_bytes += line.len();
        self.recent.push_back(line.to_string());
        while self.recent.len() > RECENT_LINES
            || (self.recent_bytes > RECENT_BYTES && self.recent.len() > 1)
        {
            if let Some(old) = self.recent.pop_front() {
                self.recent_bytes -= old.len();
            }
        }
    }
}

/// One channel's log; shared by the stdout and stderr pumps of each of its worker processes and
/// by the notes of the task that owns them.
pub struct LogSink {
    target: Arc<Mutex<Target>>,
    /// The remembered lines, agentd's notes among them; also the lock that orders the queueing
    /// (so the kept lines, the output and what followers receive agree on the order).
    kept: Mutex<Kept>,
    /// New lines for followers; closed when the sink is dropped (the worker is gone for good).
    follow: broadcast::Sender<LogLines>,
}

impl LogSink {
    pub fn to_stdout(channel: &str) -> LogSink {
        LogSink::with(Target::Stdout {
            prefix: format!("[{channel}] "),
        })
    }

    pub fn to_file(path: PathBuf, max_bytes: u64, max_files: u32) -> LogSink {
        LogSink::with(Target::File(FileLog {
            path,
            file: None,
            size: 0,
            max_bytes,
            max_files,
            failing: false,
        }))
    }

    fn with(target: Target) -> LogSink {
        LogSink {
            target: Arc::new(Mutex::new(target)),
            kept: Mutex::new(Kept::default()),
            follow: broadcast::channel(FOLLOW_BUFFER).0,
        }
    }

    fn kept_lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes lines of output (without their newlines) in order; returns once they are written,
    /// which is how a chatty worker is slowed to the pace of the disk.
    pub async fn write(&self, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        let _ = self.queue(lines).await;
    }

    /// Queues lines for the writer; the receiver is told once they are written.
    fn queue(&self, lines: Vec<String>) -> oneshot::Receiver<()> {
        let (written, done) = oneshot::channel();
        {
            // Queued under the kept lines' lock, so they and the output agree on the order.
            let mut kept = self.kept_lock();
            for line in &lines {
                kept.push(line);
            }
            // Nobody follows most of the time: then nothing is copied.
            if self.follow.receiver_count() > 0 {
                let _ = self.follow.send(LogLines::from(lines.as_slice()));
            }
            let job = Job {
                target: self.target.clone(),
                lines,
                written,
            };
            match writer() {
                Some(w) => {
                    if let Err(mpsc::SendError(job)) = w.send(job) {
                        job.run();
                    }
                }
                None => job.run(),
            }
        }
        done
    }

    /// A note from agentd itself, written into the same log; returns once it is written.
    pub async fn note(&self, msg: &str) {
        self.write(vec![format!("{NOTE}{msg}")]).await;
    }

    /// A note queued in order without waiting for it to be written: for the notes on the path
    /// of a start, which is not slowed to the pace of the disk.
    pub fn note_soon(&self, msg: &str) {
        drop(self.queue(vec![format!("{NOTE}{msg}")]));
    }

    /// The last lines of output of the current process, oldest first (agentd's own notes left
    /// out).
    pub fn tail(&self) -> Vec<String> {
        self.kept_lock()
            .tail
            .iter()
            .filter(|l| !l.starts_with(NOTE))
            .cloned()
            .collect()
    }

    /// Forgets the current process's lines (a new process starts); the recent lines stay.
    pub fn clear_tail(&self) {
        self.kept_lock().tail.clear();
    }

    /// The last `n` recent lines (at most [`RECENT_LINES`]), oldest first, agentd's notes
    /// included.
    pub fn recent(&self, n: usize) -> Vec<String> {
        let kept = self.kept_lock();
        let skip = kept.recent.len().saturating_sub(n);
        kept.recent.iter().skip(skip).cloned().collect()
    }

    /// The last `n` recent lines and every line written after them: taken under one lock, so
    /// nothing is missed or seen twice between the two. The receiver closes when the sink is
    /// dropped, which is when its worker is gone for good.
    pub fn follow(&self, n: usize) -> (Vec<String>, broadcast::Receiver<LogLines>) {
        let kept = self.kept_lock();
        let skip = kept.recent.len().saturating_sub(n);
        let lines = kept.recent.iter().skip(skip).cloned().collect();
        (lines, self.follow.subscribe())
    }
}

/// Where a process's output goes now. A prewarmed worker's output goes to its graph's prewarm
/// log until a channel takes the worker, then to that channel's log.
pub struct Route(std::sync::RwLock<Arc<LogSink>>);

impl Route {
    pub fn new(sink: Arc<LogSink>) -> Arc<Route> {
        Arc::new(Route(std::sync::RwLock::new(sink)))
    }

    /// The sink lines go to from now on.
    pub fn get(&self) -> Arc<LogSink> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sends the lines read from now on to `sink`.
    pub fn set(&self, sink: Arc<LogSink>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = sink;
    }
}

/// Copies a child's stream into its route's sink line by line until end of file.
pub async fn pump(mut stream: impl AsyncRead + Unpin, route: Arc<Route>) {
    let mut buf = vec![0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut lines = Vec::new();
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let rest = pending.split_off(pos + 1);
            let line = std::mem::replace(&mut pending, rest);
            lines.push(text(&line[..line.len() - 1]));
        }
        while pending.len() > MAX_LINE {
            let rest = pending.split_off(MAX_LINE);
            let line = std::mem::replace(&mut pending, rest);
            lines.push(text(&line));
        }
        route.get().write(lines).await;
    }
    if !pending.is_empty() {
        route.get().write(vec![text(&pending)]).await;
    }
}

fn text(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_are_safe_and_distinct() {
        for bad in [
            "../../etc/passwd",
            "/abs",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "",
            "\u{0}x",
        ] {
            let s = safe_stem(bad);
            assert!(
                !s.contains('/') && !s.contains("..") && !s.starts_with('.'),
                "{bad:?} -> {s}"
            );
        }
        assert_ne!(safe_stem("a/b"), safe_stem("a_b"));
        assert_ne!(safe_stem("a?"), safe_stem("a*"));
        assert!(safe_stem(&"x".repeat(500)).len() < 60);
    }

    #[tokio::test]
    async fn rotates_by_size() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("w.log");
        let sink = LogSink::to_file(p.clone(), 100, 2);
        for i in 0..40 {
            sink.write(vec![format!("line {i:04} ........")]).await;
        }
        assert!(std::fs::metadata(&p).unwrap().len() <= 100);
        assert!(d.path().join("w.log.1").exists());
        assert!(d.path().join("w.log.2").exists());
        assert!(!d.path().join("w.log.3").exists());
        assert_eq!(sink.tail().len(), TAIL_LINES);
    }

    #[tokio::test]
    async fn pumped_lines_keep_their_order_and_notes_stay_out_of_the_tail() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("w.log");
        let sink = Arc::new(LogSink::to_file(p.clone(), 1 << 20, 2));
        let text: String = (0..500).map(|i| format!("line {i}\r\n")).collect();
        sink.note("before").await;
        pump(text.as_bytes(), Route::new(sink.clone())).await;
        pump(&b"no newline at the end"[..], Route::new(sink.clone())).await;
        sink.note("after").await;
        let written = std::fs::read_to_string(&p).unwrap();
        let want: String = std::iter::once("--- agentd: before".to_string())
            .chain((0..500).map(|i| format!("line {i}")))
            .chain([
                "no newline at the end".to_string(),
                "--- agentd: after".to_string(),
            ])
            .map(|l| l + "\n")
            .collect();
        assert_eq!(written, want);
        let tail = sink.tail();
        assert_eq!(tail.len(), TAIL_LINES - 1);
        assert_eq!(
            tail.last().map(String::as_str),
            Some("no newline at the end")
        );
    }

    #[tokio::test]
    async fn recent_lines_are_bounded_and_followers_get_what_comes_after_them() {
        let d = tempfile::tempdir().unwrap();
        let sink = LogSink::to_file(d.path().join("w.log"), 1 << 20, 2);
        for i in 0..(RECENT_LINES + 5) {
            sink.write(vec![format!("line {i}")]).await;
        }
        sink.clear_tail();
        let recent = sink.recent(usize::MAX);
        assert_eq!(recent.len(), RECENT_LINES);
        assert_eq!(recent[0], "line 5");
        assert_eq!(sink.recent(2), ["line 203", "line 204"]);

        let (before, mut rx) = sink.follow(1);
        assert_eq!(before, ["line 204"]);
        sink.note("after").await;
        sink.write(vec!["a".into(), "b".into()]).await;
        assert_eq!(&*rx.recv().await.unwrap(), ["--- agentd: after"]);
        assert_eq!(&*rx.recv().await.unwrap(), ["a", "b"]);
        drop(sink);
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));

        // A huge line evicts older ones by bytes, but the newest line always stays.
        let sink = LogSink::to_file(d.path().join("x.log"), 1 << 20, 2);
        sink.write(vec!["small".into()]).await;
        sink.write(vec!["x".repeat(RECENT_BYTES + 1)]).await;
        assert_eq!(sink.recent(10).len(), 1);
    }
}
