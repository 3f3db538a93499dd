//! The notify messages a worker sends agentd on [`NOTIFY_SOCKET`](super::env::NOTIFY_SOCKET):
//! the part of systemd's notify protocol agentd reads. One datagram holds one or more
//! `KEY=VALUE` lines; lines agentd does not know are ignored.

/// The worker is ready: `/start` answers.
pub const READY: &str = "READY=1";
/// A prewarmed worker has loaded what it can without a channel and waits for one on stdin.
pub const PREWARM: &str = "PREWARM=1";
/// The worker is shutting down.
pub const STOPPING: &str = "STOPPING=1";
/// The worker is alive: the watchdog deadline moves.
pub const WATCHDOG: &str = "WATCHDOG=1";
/// The worker asks to be treated as hung (killed, then restarted per policy).
pub const WATCHDOG_TRIGGER: &str = "WATCHDOG=trigger";

/// What one datagram says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Notice {
    pub ready: bool,
    pub prewarm: bool,
    pub stopping: bool,
    pub watchdog: bool,
    pub watchdog_trigger: bool,
}

impl Notice {
    /// Reads a datagram; any bytes are accepted.
    pub fn parse(datagram: &[u8]) -> Notice {
        let mut n = Notice::default();
        for line in String::from_utf8_lossy(datagram).lines() {
            match line.trim() {
                READY => n.ready = true,
                PREWARM => n.prewarm = true,
                STOPPING => n.stopping = true,
                WATCHDOG => n.watchdog = true,
                WATCHDOG_TRIGGER => n.watchdog_trigger = true,
                _ => {}
            }
        }
        n
    }
}

/// One datagram carrying `lines` (such as [`READY`]), in order.
pub fn datagram(lines: &[&str]) -> Vec<u8> {
    lines.join("\n").into_bytes()
}

/// Where a `NOTIFY_SOCKET` value points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketAddr<'a> {
    /// `@name`: a Linux abstract socket (what agentd gives its workers).
    Abstract(&'a str),
    /// A file-system path.
    Path(&'a str),
}

impl<'a> SocketAddr<'a> {
    /// Reads a `NOTIFY_SOCKET` value.
    pub fn parse(value: &'a str) -> SocketAddr<'a> {
        match value.strip_prefix('@') {
            Some(name) => SocketAddr::Abstract(name),
            None => SocketAddr::Path(value),
        }
    }

    /// The `NOTIFY_SOCKET` value that names this socket.
    pub fn to_value(self) -> String {
        match self {
            SocketAddr::Abstract(name) => format!("@{name}"),
            SocketAddr::Path(p) => p.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices() {
        assert!(Notice::parse(READY.as_bytes()).ready);
        assert!(Notice::parse(b"STATUS=x\nREADY=1\n").ready);
        assert!(Notice::parse(WATCHDOG.as_bytes()).watchdog);
        assert!(Notice::parse(b"WATCHDOG=trigger").watchdog_trigger);
        assert_eq!(Notice::parse(b"READY=0"), Notice::default());
        assert_eq!(Notice::parse(&[0xff, b'\n', 0]), Notice::default());
    }

    #[test]
    fn several_lines_in_one_datagram() {
        let d = datagram(&[READY, WATCHDOG]);
        assert_eq!(d, b"READY=1\nWATCHDOG=1");
        let n = Notice::parse(&d);
        assert!(n.ready && n.watchdog && !n.stopping);
        assert_eq!(datagram(&[STOPPING]), STOPPING.as_bytes());
    }

    #[test]
    fn socket_values() {
        assert_eq!(
            SocketAddr::parse("@agentd-1"),
            SocketAddr::Abstract("agentd-1")
        );
        assert_eq!(
            SocketAddr::parse("/run/n.sock"),
            SocketAddr::Path("/run/n.sock")
        );
        assert_eq!(SocketAddr::Abstract("x").to_value(), "@x");
    }
}
