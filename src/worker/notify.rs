//! Sends the worker's notify messages ([`crate::contract::notify`]) to the socket the supervisor
//! named in `NOTIFY_SOCKET`.

use std::os::unix::net::UnixDatagram;

use crate::contract::notify::{datagram, SocketAddr};

/// Sends notifications to the socket named by `NOTIFY_SOCKET`; does nothing without one.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<String>,
}

impl Notifier {
    /// `socket` is `NOTIFY_SOCKET` as given: a path, or `@name` for a Linux abstract socket.
    pub fn new(socket: Option<String>) -> Notifier {
        Notifier { socket }
    }

    /// Sends one state line ([`READY`](crate::contract::notify::READY)); a failure is logged,
    /// never fatal.
    pub fn send(&self, state: &str) {
        let Some(socket) = &self.socket else { return };
        if let Err(e) = send_to(socket, state) {
            tracing::warn!("cannot notify {socket:?} of {state}: {e}");
        }
    }
}

fn send_to(socket: &str, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let sock = UnixDatagram::unbound()?;
    let bytes = datagram(&[state]);
    match SocketAddr::parse(socket) {
        SocketAddr::Abstract(name) => {
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(&bytes, &addr)?;
        }
        SocketAddr::Path(path) => {
            sock.send_to(&bytes, path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_socket_receives_state() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        Notifier::new(Some(path.to_string_lossy().into_owned())).send("READY=1");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn abstract_socket_receives_state() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("agentd-test-{}", nanoid::nanoid!(10));
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::new(Some(format!("@{name}"))).send("WATCHDOG=1");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn no_socket_is_fine() {
        Notifier::new(None).send("READY=1");
    }
}
