//! The supervisor's end of a worker's notify socket: a Linux abstract datagram socket per
//! process, whose datagrams count only when the kernel vouches (`SCM_CREDENTIALS`) that they
//! come from that worker's own process group. The messages are [`crate::contract::notify`]'s.

use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixAddr, UnixCredentials,
};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

use super::records;
use crate::contract::notify::{Notice, SocketAddr};

/// Longest datagram read; the rest of a longer one is dropped by the kernel.
const MAX_DATAGRAM: usize = 4096;

/// One worker process's notify socket.
pub(super) struct NotifySocket {
    sock: UnixDatagram,
    name: String,
    buf: Box<[u8; MAX_DATAGRAM]>,
}

impl NotifySocket {
    /// Binds the abstract socket `name`, asking the kernel for each sender's credentials.
    pub fn bind(name: &str) -> io::Result<NotifySocket> {
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let sock = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
        sock.set_nonblocking(true)?;
        setsockopt(&sock, sockopt::PassCred, &true)?;
        Ok(NotifySocket {
            sock: UnixDatagram::from_std(sock)?,
            name: name.to_string(),
            buf: Box::new([0; MAX_DATAGRAM]),
        })
    }

    /// The `NOTIFY_SOCKET` value that names this socket.
    pub fn env_value(&self) -> String {
        SocketAddr::Abstract(&self.name).to_value()
    }

    /// The next notice from the process group `pgid`. Datagrams from anyone else are dropped:
    /// the abstract name is visible to every local user in `/proc/net/unix`.
    ///
    /// Cancel-safe: once a datagram is read, nothing is awaited before it is returned.
    pub async fn next(&mut self, pgid: u32) -> io::Result<Notice> {
        loop {
            self.sock.readable().await?;
            let buf = &mut self.buf[..];
            let fd = self.sock.as_raw_fd();
            match self
                .sock
                .try_io(Interest::READABLE, || recv_with_sender(fd, &mut *buf))
            {
                Ok((n, sender)) if from_group(sender, pgid) => return Ok(Notice::parse(&buf[..n])),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Receives one datagram and its sender's pid, as the kernel saw it.
fn recv_with_sender(fd: i32, buf: &mut [u8]) -> io::Result<(usize, Option<i32>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut control = nix::cmsg_space!(UnixCredentials);
    let msg = recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut control), MsgFlags::MSG_DONTWAIT)?;
    let sender = msg
        .cmsgs()
        .ok()
        .into_iter()
        .flatten()
        .find_map(|c| match c {
            ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
            _ => None,
        });
    Ok((msg.bytes, sender))
}

/// True when `sender` is a live member of the process group `pgid`.
fn from_group(sender: Option<i32>, pgid: u32) -> bool {
    match sender {
        // The group's leader, agentd's own child: its pid is not reused before agentd reaps it,
        // so there is no need to read its group (the usual sender, and `READY=1` is waited on).
        Some(pid) if pid as u32 == pgid => true,
        Some(pid) if pid > 0 => {
            records::proc_stat(pid).is_some_and(|(pgrp, _, _)| pgrp == pgid as i32)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::notify::{datagram, READY, WATCHDOG};

    #[tokio::test]
    async fn hears_its_own_group_only() {
        let name = format!("agentd-test-{}", nanoid::nanoid!(10));
        let mut sock = NotifySocket::bind(&name).unwrap();
        assert_eq!(sock.env_value(), format!("@{name}"));
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let tx = std::os::unix::net::UnixDatagram::unbound().unwrap();
        // Heard as from a group that is not the sender's: dropped.
        tx.send_to_addr(READY.as_bytes(), &addr).unwrap();
        let other = tokio::time::timeout(std::time::Duration::from_millis(100), sock.next(1)).await;
        assert!(other.is_err(), "a datagram from another group was heard");
        let own = nix::unistd::getpgrp().as_raw() as u32;
        tx.send_to_addr(&datagram(&[READY, WATCHDOG]), &addr)
            .unwrap();
        let n = sock.next(own).await.unwrap();
        assert!(n.ready && n.watchdog);
    }
}
