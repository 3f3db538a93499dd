//! Starting a worker process without forking agentd: `clone(CLONE_VM | CLONE_VFORK)`, the way
//! `posix_spawn` starts processes, and the handle of the process it makes.
//!
//! Why not `std::process::Command`: a worker must die with agentd (`PR_SET_PDEATHSIG`), lead its
//! own process group and join its cgroup before it runs a single instruction of its own. All of
//! that needs code between fork and exec, which makes the standard library `fork()` the whole
//! multi-threaded agentd (its page tables copied, then thrown away by `exec`): 1.2 to 3.4 ms per
//! start, most of a `/start`. Here the child shares agentd's memory and agentd's spawning thread
//! waits until the child has called `execve` (or died), so nothing is copied.
//!
//! Sharing memory has a price: the child may only make system calls. Everything it needs
//! (argv, envp, every candidate path of the program, the descriptors) is prepared in [`Prepared`]
//! before `clone`; the child allocates nothing, takes no lock and never unwinds. Signals are all
//! blocked on the spawning thread around `clone`, so no handler of agentd's can run in the child
//! before it has reset every handled signal to its default (and `SIGPIPE`, which Rust ignores,
//! too), then it unblocks them just before `execve`. An `execve` that fails is reported through
//! the shared memory ([`Prepared::err`]): when `clone` returns in agentd the child has either
//! exec'd or exited, so the value is final.
//!
//! The exit of the process is awaited through a pidfd (`CLONE_PIDFD`, Linux 5.2; `pidfd_open`,
//! 5.3), or through `SIGCHLD` on older kernels, and its status is collected by `waitpid` on that
//! pid only: agentd's reaper ([`super::reap`]) skips worker leaders.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::unix::pipe;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The child's stack: it makes a few system calls through libc, nothing deeper.
const STACK_BYTES: usize = 64 * 1024;
/// Highest signal number on Linux, plus one.
const NSIG: i32 = 65;
/// Where the program is looked up when neither the worker's environment nor agentd's has PATH
/// (the default of `execvp`).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// What to run and how; made on any thread, turned into a [`Prepared`] on the spawning thread.
pub(super) struct Spec {
    /// The program and its arguments (`argv[0]` is the program as given).
    pub argv: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// Changes to agentd's environment: `Some` sets, `None` removes.
    pub env: Vec<(OsString, Option<OsString>)>,
    /// The worker's stdin is a pipe agentd writes to (else `/dev/null`).
    pub stdin_pipe: bool,
    /// `cgroup.procs` of the cgroup to join before `execve`.
    pub procs: Option<std::fs::File>,
}

/// A process started by [`spawn`], with agentd's ends of its pipes, not yet wrapped for tokio.
pub(super) struct RawChild {
    pid: u32,
    pidfd: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// Everything the child reads, allocated before `clone`. The pointer vectors point into the
/// `CString`s next to them, which are never moved or changed while the child runs.
struct Prepared {
    candidates: Vec<CString>,
    /// Owns what `argv_ptrs` points to.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    /// Owns what `envp_ptrs` points to.
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: Option<CString>,
    /// The child's ends: stdin, stdout, stderr.
    stdio: [RawFd; 3],
    procs: RawFd,
    parent: libc::pid_t,
    /// Written by the child when it fails before `execve` succeeds: an errno.
    err: AtomicI32,
}

/// Starts `spec`; on the thread whose end kills the worker (`PR_SET_PDEATHSIG`). The new
/// process leads its own process group, is in its cgroup, and has run `execve` when this returns.
pub(super) fn spawn(spec: Spec) -> io::Result<RawChild> {
    let (stdin_child, stdin_ours) = if spec.stdin_pipe {
        let (r, w) = pipe_pair()?;
        (r, Some(w))
    } else {
        (open_dev_null()?, None)
    };
    let (out_r, out_w) = pipe_pair()?;
    let (err_r, err_w) = pipe_pair()?;
    let prep = prepare(&spec, [&stdin_child, &out_w, &err_w])?;
    let mut stack = vec![0u8; STACK_BYTES];
    // SAFETY: the stack is ours and outlives the child's use of it (CLONE_VFORK: `clone` returns
    // once the child has exec'd or exited); the top is aligned down to 16 bytes as the ABI wants.
    let top = unsafe {
        let end = stack.as_mut_ptr().add(stack.len());
        end.sub(end as usize % 16)
    };
    let (pid, pidfd) = with_signals_blocked(|| clone_child(&prep, top.cast()))?;
    drop(stack);
    let err = prep.err.load(Ordering::Acquire);
    if err != 0 {
        // The child exited without exec: collect it here (its pid was never a worker's).
        wait_blocking(pid);
        return Err(io::Error::from_raw_os_error(err));
    }
    drop((stdin_child, out_w, err_w));
    Ok(RawChild {
        pid: pid as u32,
        pidfd,
        stdin: stdin_ours,
        stdout: out_r,
        stderr: err_r,
    })
}

impl RawChild {
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// `clone` with a pidfd where the kernel gives one; the pid and the pidfd.
fn clone_child(prep: &Prepared, stack: *mut libc::c_void) -> io::Result<(i32, Option<OwnedFd>)> {
    let base = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    let arg = prep as *const Prepared as *mut libc::c_void;
    let mut pidfd: libc::c_int = -1;
    // SAFETY: `child_main` only reads `prep` (alive for the whole call) and makes system calls;
    // `pidfd` is where CLONE_PIDFD puts the new descriptor (the `parent_tid` argument).
    let mut pid = unsafe {
        libc::clone(
            child_main,
            stack,
            base | libc::CLONE_PIDFD,
            arg,
            &mut pidfd as *mut libc::c_int,
        )
    };
    if pid < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // A kernel before 5.2: no CLONE_PIDFD.
        pidfd = -1;
        // SAFETY: as above, without the pidfd.
        pid = unsafe { libc::clone(child_main, stack, base, arg) };
    }
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let pidfd = if pidfd >= 0 {
        // SAFETY: a new descriptor the kernel just gave us (close-on-exec).
        Some(unsafe { OwnedFd::from_raw_fd(pidfd) })
    } else {
        pidfd_open(pid)
    };
    Ok((pid, pidfd))
}

/// A pidfd for `pid` (Linux 5.3+), or none.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: a plain system call; the result is a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a new descriptor, ours alone.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Runs `f` with every signal blocked on this thread, then restores the mask.
fn with_signals_blocked<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    // SAFETY: sigset_t is plain data; the calls only read and write these two sets.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let out = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        out
    }
}

/// The child, from `clone` to `execve`. Only system calls: no allocation, no lock, no panic.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Prepared` that `spawn` keeps alive until the child exec'd or exited;
    // everything below is an async-signal-safe libc call on data prepared before `clone`.
    unsafe {
        let p = &*(arg as *const Prepared);
        let errno = || *libc::__errno_location();
        // No handler of agentd's may run here (all signals are still blocked).
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        let mut sig = 1;
        while sig < NSIG {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && (old.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
                && old.sa_sigaction != libc::SIG_DFL
            {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
            sig += 1;
        }
        if libc::setpgid(0, 0) != 0 {
            fail(p, errno());
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(p, errno());
        }
        // agentd died between clone and prctl: do not run as an orphan.
        if libc::getppid() != p.parent {
            fail(p, libc::ESRCH);
        }
        // Into the cgroup before exec, so nothing the worker starts can be outside it.
        if p.procs >= 0 && libc::write(p.procs, b"0".as_ptr().cast(), 1) != 1 {
            fail(p, errno());
        }
        let mut target = 0;
        while target < 3 {
            let fd = p.stdio[target as usize];
            let ok = if fd == target {
                // dup2 onto itself keeps close-on-exec: clear it.
                libc::fcntl(fd, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, target) == target
            };
            if !ok {
                fail(p, errno());
            }
            target += 1;
        }
        if let Some(dir) = &p.cwd {
            if libc::chdir(dir.as_ptr()) != 0 {
                fail(p, errno());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // execvp's search: the first candidate that execs; EACCES wins over "not found".
        let mut denied = false;
        let mut last = libc::ENOENT;
        for c in &p.candidates {
            libc::execve(c.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
            last = errno();
            match last {
                libc::EACCES => denied = true,
                libc::ENOENT
                | libc::ENOTDIR
                | libc::ESTALE
                | libc::ELOOP
                | libc::ENAMETOOLONG
                | libc::ENODEV
                | libc::ETIMEDOUT => {}
                _ => break,
            }
        }
        fail(
            p,
            if denied && last != libc::ENOEXEC {
                libc::EACCES
            } else {
                last
            },
        )
    }
}

/// The child's end when something before `execve` failed: the errno for agentd, exit 127.
fn fail(p: &Prepared, err: i32) -> ! {
    p.err.store(err.max(1), Ordering::Release);
    // SAFETY: _exit ends the child at once (no atexit handlers, no flush of shared buffers).
    unsafe { libc::_exit(127) }
}

/// Builds everything the child reads; `stdio` are the child's ends.
fn prepare(spec: &Spec, stdio: [&OwnedFd; 3]) -> io::Result<Prepared> {
    let program = spec.argv.first().map(String::as_str).unwrap_or_default();
    if program.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for (k, v) in &spec.env {
        match v {
            Some(v) => env.insert(k.clone(), v.clone()),
            None => env.remove(k),
        };
    }
    let path = env
        .get(OsStr::new("PATH"))
        .cloned()
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| DEFAULT_PATH.into());
    let candidates = candidates(program, path.as_bytes())?;
    let argv = spec
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes().to_vec()))
        .collect::<io::Result<Vec<_>>>()?;
    let envp = env
        .into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            cstring(kv)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let cwd = spec
        .cwd
        .as_ref()
        .map(|d| cstring(d.as_os_str().as_bytes().to_vec()))
        .transpose()?;
    let ptrs = |v: &[CString]| {
        v.iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect::<Vec<_>>()
    };
    Ok(Prepared {
        argv_ptrs: ptrs(&argv),
        envp_ptrs: ptrs(&envp),
        candidates,
        _argv: argv,
        _envp: envp,
        cwd,
        stdio: stdio.map(AsRawFd::as_raw_fd),
        procs: spec.procs.as_ref().map_or(-1, AsRawFd::as_raw_fd),
        // SAFETY: a plain system call.
        parent: unsafe { libc::getpid() },
        err: AtomicI32::new(0),
    })
}

/// The paths `execve` tries for `program`: itself when it names a path, else each directory
/// of `path` (an empty entry is the working directory), in order.
fn candidates(program: &str, path: &[u8]) -> io::Result<Vec<CString>> {
    if program.contains('/') {
        return Ok(vec![cstring(program.as_bytes().to_vec())?]);
    }
    path.split(|b| *b == b':')
        .map(|dir| {
            let mut full = if dir.is_empty() {
                b".".to_vec()
            } else {
                dir.to_vec()
            };
            full.push(b'/');
            full.extend_from_slice(program.as_bytes());
            cstring(full)
        })
        .collect()
}

fn cstring(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in the worker's command or environment",
        )
    })
}

/// A close-on-exec pipe: (read end, write end).
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors, ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn open_dev_null() -> io::Result<OwnedFd> {
    Ok(std::fs::File::open("/dev/null")?.into())
}

/// Collects the status of `pid`, blocking (only for a child known to have exited).
fn wait_blocking(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
}

/// How the exit of a worker process is noticed.
enum Exit {
    Pidfd(AsyncFd<OwnedFd>),
    /// Kernels without pidfds: every SIGCHLD, then a look at this pid.
    Sigchld(Option<Signal>),
}

/// A running worker process (its leader): its pid, its exit, agentd's ends of its pipes.
pub(super) struct Child {
    pid: u32,
    exit: Exit,
    status: Option<ExitStatus>,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

impl Child {
    /// Wraps a started process for tokio (needs the runtime).
    pub fn new(raw: RawChild) -> io::Result<Child> {
        let exit = match raw.pidfd {
            // SAFETY: the pidfd is owned by the AsyncFd and neither replaced nor closed while
            // registered.
            Some(fd) => {
                Exit::Pidfd(unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? })
            }
            None => Exit::Sigchld(signal(SignalKind::child()).ok()),
        };
        Ok(Child {
            pid: raw.pid,
            exit,
            status: None,
            stdin: raw.stdin.map(pipe::Sender::from_owned_fd).transpose()?,
            stdout: Some(pipe::Receiver::from_owned_fd(raw.stdout)?),
            stderr: Some(pipe::Receiver::from_owned_fd(raw.stderr)?),
        })
    }

    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Its exit status, once it has exited (collected once, then remembered). Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(st) = collect(self.pid, &mut self.status)? {
                return Ok(st);
            }
            match &mut self.exit {
                Exit::Pidfd(fd) => {
                    let mut ready = fd.readable().await?;
                    if collect(self.pid, &mut self.status)?.is_none() {
                        ready.clear_ready();
                    }
                }
                Exit::Sigchld(Some(sig)) => {
                    sig.recv().await;
                }
                Exit::Sigchld(None) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        collect(self.pid, &mut self.status)
    }

    /// A watch on its exit that does not hold the `Child`, so that the `Child` can be kept (and
    /// taken) elsewhere meanwhile; [`try_wait`](Self::try_wait) then says whether it exited.
    pub fn exit_watch(&self) -> ExitWatch {
        let watch = match &self.exit {
            Exit::Pidfd(fd) => fd
                .get_ref()
                .try_clone()
                .and_then(|dup| {
                    // SAFETY: the duplicate is owned by the AsyncFd and neither replaced nor
                    // closed while registered.
                    unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE) }
                        .map_err(io::Error::from)
                })
                .map(ExitWatch::Pidfd)
                .ok(),
            Exit::Sigchld(_) => signal(SignalKind::child()).ok().map(ExitWatch::Sigchld),
        };
        watch.unwrap_or(ExitWatch::Poll)
    }
}

/// See [`Child::exit_watch`].
pub(super) enum ExitWatch {
    Pidfd(AsyncFd<OwnedFd>),
    Sigchld(Signal),
    /// Nothing to wait on: a look every 50 ms.
    Poll,
}

impl ExitWatch {
    /// Returns when the process may have exited (after it did, or on any `SIGCHLD`, or after a
    /// while); the caller looks with [`Child::try_wait`]. Once the process has exited, it
    /// returns at once.
    pub async fn changed(&mut self) {
        match self {
            ExitWatch::Pidfd(fd) => {
                // Readable from the exit on, so the guard is never cleared.
                if fd.readable().await.is_err() {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
            ExitWatch::Sigchld(sig) => {
                if sig.recv().await.is_none() {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
            ExitWatch::Poll => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

/// The exit status of `pid`, collected now (`waitpid`, no wait) or remembered in `status`.
fn collect(pid: u32, status: &mut Option<ExitStatus>) -> io::Result<Option<ExitStatus>> {
    if let Some(st) = *status {
        return Ok(Some(st));
    }
    let mut raw = 0;
    loop {
        // SAFETY: waitpid on our own child, WNOHANG.
        let r = unsafe { libc::waitpid(pid as i32, &mut raw, libc::WNOHANG) };
        match r {
            0 => return Ok(None),
            r if r > 0 => {
                let st = ExitStatus::from_raw(raw);
                *status = Some(st);
                return Ok(Some(st));
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_path_or_the_given_path() {
        let c = candidates("sh", b"/a::/b").unwrap();
        let c: Vec<_> = c.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(c, ["/a/sh", "./sh", "/b/sh"]);
        let c = candidates("./x/sh", b"/a").unwrap();
        assert_eq!(c[0].to_str().unwrap(), "./x/sh");
        assert!(candidates("a\0b", b"/a").is_err());
    }

    fn spec(argv: &[&str]) -> Spec {
        Spec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: Some(PathBuf::from("/")),
            env: vec![
                ("AGENTD_CHILD_TEST".into(), Some("yes".into())),
                ("HOME".into(), None),
            ],
            stdin_pipe: true,
            procs: None,
        }
    }

    #[tokio::test]
    async fn runs_in_its_own_group_with_its_environment_and_directory() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let raw = spawn(spec(&[
            "sh",
            "-c",
            "read line; echo \"$line $AGENTD_CHILD_TEST ${HOME:-nohome} $(pwd)\"; \
             ps -o pgid= -p $$ | tr -d ' '; echo err >&2; exit 3",
        ]))
        .unwrap();
        let mut child = Child::new(raw).unwrap();
        let pid = child.id();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello\n").await.unwrap();
        drop(stdin);
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        let st = child.wait().await.unwrap();
        assert_eq!(st.code(), Some(3));
        assert_eq!(child.wait().await.unwrap().code(), Some(3), "remembered");
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("hello yes nohome /"));
        if let Some(pgid) = lines.next() {
            assert_eq!(pgid, pid.to_string(), "leads its own group");
        }
        assert_eq!(err.trim(), "err");
    }

    #[test]
    fn a_missing_or_unexecutable_program_is_its_errno() {
        let e = spawn(spec(&["agentd-no-such-program-here"])).err().unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        // Not executable (no x bit at all: refused even to root).
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "not a program").unwrap();
        let e = spawn(spec(&[file.to_str().unwrap()])).err().unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    }
}
