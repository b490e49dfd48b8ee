//! Who listens on a TCP port, and whether given processes hold that socket.
//!
//! # Theory of operation
//! A `listen` marker must count only a socket of the target, never one another process
//! happens to hold on the same port. Two questions answer that:
//!
//! 1. *Which sockets listen on the port?* One `NETLINK_SOCK_DIAG` dump per address family
//!    (`SOCK_DIAG_BY_FAMILY` with an `inet_diag_req_v2` asking for TCP sockets in state
//!    `LISTEN`). The request carries the port in `id.idiag_sport`, which the kernel compares
//!    against listening sockets itself, so the answer is the few sockets of that port (and the
//!    port is checked again here). Each socket comes with its inode. This takes microseconds
//!    where reading `/proc/net/tcp` took 11 ms; `/proc/net/tcp{,6}` remains the fallback for a
//!    kernel without `inet_diag`.
//! 2. *Does one of these processes hold one of them?* A socket's inode appears in its
//!    holders' descriptor tables as the link `/proc/PID/fd/N -> socket:[INODE]`.
//!
//! Both are snapshots, as everything read from the kernel about other processes: a socket or
//! a process found here may be gone a microsecond later. No connection is ever made, so the
//! target sees nothing of the check.
//!
//! Sockets are seen in atropos's network namespace only: a target in another namespace has
//! listeners that this module cannot see.

mod diag;
mod proc_net;

use std::ffi::CString;
use std::fs;
use std::net::IpAddr;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{OFlag, readlinkat};
use nix::sys::stat::Mode;

pub use diag::Diag;
pub use proc_net::proc_listeners;

/// What went wrong asking the kernel about sockets.
#[derive(Debug, thiserror::Error)]
pub enum SocketsError {
    /// The netlink socket could not be opened or set up.
    #[error("failed to open a NETLINK_SOCK_DIAG socket")]
    Open(#[source] Errno),
    /// The request could not be sent or the answer received.
    #[error("failed to exchange a sock_diag dump with the kernel")]
    Exchange(#[source] Errno),
    /// The kernel refused the request (no `inet_diag` support, for one).
    #[error("the kernel refused the sock_diag request")]
    Refused(#[source] Errno),
    /// The answer was cut short or did not parse.
    #[error("the kernel's sock_diag answer was malformed: {0}")]
    Malformed(&'static str),
    /// Neither sock_diag nor `/proc/net/tcp` could be read.
    #[error("failed to read /proc/net/tcp")]
    Proc(#[source] std::io::Error),
}

/// One listening TCP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The local address it is bound to (`0.0.0.0` or `::` for any).
    pub addr: IpAddr,
    /// The local port.
    pub port: u16,
    /// The socket's inode: how its holders' descriptors name it.
    pub inode: u64,
    /// The user that created it.
    pub uid: u32,
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// The TCP sockets listening on `port`, IPv4 and IPv6, from sock_diag, or from
/// `/proc/net/tcp{,6}` where the kernel has no `inet_diag`. One look: a caller that asks
/// again and again keeps a [`Source`].
pub fn tcp_listeners(port: u16) -> Result<Vec<Listener>, SocketsError> {
    Source::new().listeners(port)
}

/// The TCP sockets listening on `port`, from two sock_diag dumps (AF_INET, AF_INET6) on a
/// socket of their own.
pub fn diag_listeners(port: u16) -> Result<Vec<Listener>, SocketsError> {
    Diag::open()?.listeners(port)
}

/// Where a port's listeners are looked up again and again: a sock_diag socket kept open, as
/// opening one costs about as much as a dump, or `/proc/net/tcp` once sock_diag failed twice.
pub enum Source {
    /// sock_diag, through this socket.
    Diag(Diag),
    /// `/proc/net/tcp{,6}`.
    Proc,
}

impl Default for Source {
    fn default() -> Source {
        Source::new()
    }
}

impl Source {
    /// sock_diag if a socket opens, else `/proc/net/tcp`.
    pub fn new() -> Source {
        match Diag::open() {
            Ok(diag) => Source::Diag(diag),
            Err(err) => {
                tracing::debug!(error = %err, "sock_diag unavailable; reading /proc/net/tcp");
                Source::Proc
            }
        }
    }

    /// The TCP sockets listening on `port` now. A failed dump is retried on a fresh socket
    /// (a dump cut short leaves the old one busy); a second failure falls back to `/proc`.
    pub fn listeners(&mut self, port: u16) -> Result<Vec<Listener>, SocketsError> {
        if let Source::Diag(diag) = self {
            match diag.listeners(port) {
                Ok(found) => return Ok(found),
                Err(first) => match Diag::open().and_then(|mut d| Ok((d.listeners(port)?, d))) {
                    Ok((found, fresh)) => {
                        *diag = fresh;
                        return Ok(found);
                    }
                    Err(second) => {
                        tracing::debug!(%first, %second, "sock_diag failed; reading /proc/net/tcp");
                        *self = Source::Proc;
                    }
                },
            }
        }
        proc_listeners(port)
    }
}

/// Whether process `pid` holds a socket with one of `inodes`: the first such inode. A process
/// that is gone or whose descriptors we may not read holds nothing.
///
/// One readlink per descriptor, relative to the open `/proc/PID/fd` (a third cheaper than
/// walking the whole path each time, for a table of 274 descriptors).
pub fn held_by(pid: i32, inodes: &[u64]) -> Option<u64> {
    let mut dir = Dir::open(
        format!("/proc/{pid}/fd").as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let names: Vec<CString> = dir
        .iter()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_owned())
        .filter(|name| !name.as_bytes().starts_with(b"."))
        .collect();
    names.iter().find_map(|name| {
        let link = readlinkat(&dir, name.as_c_str()).ok()?;
        let inode = socket_inode(link.as_encoded_bytes())?;
        inodes.contains(&inode).then_some(inode)
    })
}

/// The inode in a descriptor link `socket:[INODE]`.
fn socket_inode(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The first of `pids` holding one of `listeners`, with the listener it holds.
pub fn holder_among<'l>(listeners: &'l [Listener], pids: &[i32]) -> Option<(i32, &'l Listener)> {
    let inodes: Vec<u64> = listeners.iter().map(|l| l.inode).collect();
    pids.iter().find_map(|&pid| {
        let inode = held_by(pid, &inodes)?;
        Some((pid, listeners.iter().find(|l| l.inode == inode)?))
    })
}

/// Some process holding the socket `inode`, searched in all of `/proc`, with its command line
/// cut to a readable length. Costs a readlink per descriptor on the machine: for reports, not
/// for a loop.
pub fn find_holder(inode: u64) -> Option<(i32, String)> {
    let pid = fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|&pid| held_by(pid, &[inode]).is_some())?;
    let raw = crate::procfs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut cmd = String::from_utf8_lossy(&raw)
        .trim_end_matches('\0')
        .replace('\0', " ");
    if let Some((cut, _)) = cmd.char_indices().nth(80) {
        cmd.truncate(cut);
        cmd.push('…');
    }
    Some((pid, cmd))
}

/// `root` and its descendants: the processes a trial's `listen` marker accepts as owners
/// until trials have a cgroup to ask.
pub fn process_tree(root: i32) -> Vec<i32> {
    std::iter::once(root)
        .chain(
            crate::procfs::descendants_of(root)
                .into_iter()
                .map(|s| s.pid),
        )
        .collect()
}

/// Whether `port` can be bound on loopback: tried with a socket that is bound and never
/// listens. A probe that listened (`TcpListener::bind`) was a listener on the trial's port
/// for a moment, and a fork by another lane in that moment held a copy of it until its
/// exec: that trial's `listen` marker then found the port taken before its target began.
pub fn port_is_free(port: u16) -> bool {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, socket};
    use std::os::fd::AsRawFd;
    let Ok(probe) = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    bind(probe.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port)).is_ok()
}

/// The loopback ports handed to trials still running, so that two trials alive at once never
/// get the same one.
///
/// Drawn uniformly from [`trial_port_range`] and checked free by a bind, rather than taken
/// from `bind(port 0)`: the kernel hands recently freed ports out again soon, so two atropos
/// runs side by side often got the same one, and the `listen` marker then (rightly) found
/// the other run's target holding it.
#[derive(Debug, Default)]
pub struct PortPool {
    used: std::sync::Mutex<std::collections::HashSet<u16>>,
}

impl PortPool {
    /// A free port not handed out and not yet given back; 0 if none was found.
    pub fn take(&self) -> u16 {
        use rand::RngExt;
        let (low, high) = trial_port_range();
        let mut rng = rand::rng();
        for _ in 0..256 {
            let port: u16 = rng.random_range(low..=high);
            if !port_is_free(port) {
                continue;
            }
            let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            if used.insert(port) {
                return port;
            }
        }
        0
    }

    /// Gives back a port from [`PortPool::take`] once its trial (and its recovery) ended:
    /// the set stays as large as the trials alive, not as the run.
    pub fn give_back(&self, port: u16) {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&port);
    }
}

/// The ports trials are given: those below the kernel's ephemeral range (from 10000),
/// which the kernel never hands out by itself. A port drawn from the ephemeral range could
/// be taken, between the check and the target's `listen`, as the local port of anyone's
/// outgoing connection or `bind(port 0)` (a clean-clone CI run saw the `listen` marker
/// refuse such a port). The ephemeral range itself when it leaves too little below it.
pub fn trial_port_range() -> (u16, u16) {
    const LOWEST: u16 = 10_000;
    let (low, high) = ephemeral_range();
    if low > LOWEST + 1024 {
        (LOWEST, low - 1)
    } else {
        (low, high)
    }
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`), else Linux's default.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_ascii_whitespace().map(str::parse::<u16>);
            Some((parts.next()?.ok()?, parts.next()?.ok()?))
        })
        .filter(|(low, high)| low < high && *low > 1024)
        .unwrap_or((32768, 60999))
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::net::{Ipv6Addr, TcpListener};
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    use super::*;

    /// A loopback listener held by this test process, and its port.
    fn hold(addr: &str) -> (TcpListener, u16) {
        let l = TcpListener::bind(addr).unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    }

    #[test]
    fn a_listener_of_this_process_is_found_with_its_inode_among_our_fds() {
        let (_l, port) = hold("127.0.0.1:0");
        let found = diag_listeners(port).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].addr, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(found[0].port, port);
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(
            holder_among(&found, &[me]).map(|(p, l)| (p, l.inode)),
            Some((me, found[0].inode))
        );
    }

    #[test]
    fn an_ipv6_loopback_listener_is_found() {
        let Ok(l) = TcpListener::bind("[::1]:0") else {
            eprintln!("skipped: no IPv6 loopback here");
            return;
        };
        let port = l.local_addr().unwrap().port();
        let found = diag_listeners(port).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].addr, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(found[0].to_string(), format!("[::1]:{port}"));
    }

    #[test]
    fn sock_diag_and_proc_net_tcp_agree() {
        let (_a, port) = hold("127.0.0.1:0");
        let from_diag = diag_listeners(port).unwrap();
        assert_eq!(from_diag.len(), 1);
        assert_eq!(proc_listeners(port).unwrap(), from_diag);
    }

    #[test]
    fn a_closed_port_has_no_listener() {
        let (l, port) = hold("127.0.0.1:0");
        drop(l);
        assert_eq!(diag_listeners(port).unwrap(), Vec::new());
    }

    #[test]
    fn a_port_held_by_this_process_is_not_held_by_a_child_that_never_listens() {
        let (_l, port) = hold("127.0.0.1:0");
        let token = format!("atropos-sockets-test-{}-idle", std::process::id());
        let child = Reaped(
            Command::new("sh")
                .args(["-c", "sleep 5", &token])
                .spawn()
                .unwrap(),
        );
        let found = diag_listeners(port).unwrap();
        assert_eq!(found.len(), 1);
        let pid = i32::try_from(child.0.id()).unwrap();
        assert_eq!(holder_among(&found, &process_tree(pid)), None);
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(find_holder(found[0].inode).map(|(p, _)| p), Some(me));
    }

    #[test]
    fn a_child_that_listens_is_found_through_its_descriptor() {
        let Some(python) = python() else {
            eprintln!("skipped: no python3 to play the listening child");
            return;
        };
        let (l, port) = hold("127.0.0.1:0");
        drop(l);
        let (child, found) = listening_child(&python, port);
        let pid = i32::try_from(child.0.id()).unwrap();
        let (holder, listener) = holder_among(&found, &process_tree(pid)).unwrap();
        assert_eq!(holder, pid);
        assert_eq!(listener.port, port);
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(holder_among(&found, &[me]), None);
    }

    /// What one `listen` check costs: the dumps on a kept socket, then the walk of a small
    /// target's tree and its descriptors. Printed, not asserted:
    /// `cargo test --release -p atropos-injector cost_of -- --nocapture`.
    #[test]
    fn cost_of_one_check_is_printed() {
        // The best of 10 batches: the machine is shared, and the floor is what a check costs.
        fn per<T>(n: u32, mut f: impl FnMut() -> T) -> Duration {
            (0..10)
                .map(|_| {
                    let started = Instant::now();
                    for _ in 0..n / 10 {
                        std::hint::black_box(f());
                    }
                    started.elapsed() / (n / 10)
                })
                .min()
                .expect("10 batches")
        }
        let (_l, port) = hold("127.0.0.1:0");
        let token = format!("atropos-sockets-test-{}-cost", std::process::id());
        let child = Reaped(
            Command::new("sh")
                .args(["-c", "sleep 5", &token])
                .spawn()
                .unwrap(),
        );
        let target = i32::try_from(child.0.id()).unwrap();
        let mut diag = Diag::open().unwrap();
        let listeners = diag.listeners(port).unwrap();
        assert_eq!(listeners.len(), 1);
        let kept = per(2000, || diag.listeners(port).unwrap());
        let fresh = per(2000, || diag_listeners(port).unwrap());
        let scan = per(2000, || holder_among(&listeners, &process_tree(target)));
        let proc = per(20, || proc_listeners(port).unwrap());
        eprintln!(
            "listen check: sock_diag v4+v6 {kept:?} on a kept socket ({fresh:?} on a fresh \
             one); process tree + fd scan of a `sh` target {scan:?}; /proc/net/tcp{{,6}} {proc:?}"
        );
    }

    /// A child process killed and reaped when the test ends, pass or fail.
    pub(crate) struct Reaped(pub(crate) Child);

    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    pub(crate) fn python() -> Option<String> {
        let out = Command::new("sh")
            .args(["-c", "command -v python3"])
            .output()
            .ok()?;
        let path = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (!path.is_empty()).then_some(path)
    }

    /// A python3 child listening on loopback `port` for 5 s, once its socket is seen.
    pub(crate) fn listening_child(python: &str, port: u16) -> (Reaped, Vec<Listener>) {
        let token = format!("atropos-sockets-test-{}-listens", std::process::id());
        let script = format!(
            "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); \
             s.listen(); time.sleep(5)"
        );
        let child = Reaped(
            Command::new(python)
                .args(["-c", &script, &token])
                .spawn()
                .unwrap(),
        );
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let found = diag_listeners(port).unwrap();
            if !found.is_empty() {
                return (child, found);
            }
            assert!(Instant::now() < until, "the child never listened");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_port_probe_sees_a_listener_and_leaves_no_listener_of_its_own() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        assert!(!port_is_free(port), "a listener holds it");
        drop(held);
        assert!(port_is_free(port));
        // What the probe left is nothing that listens: the port binds and listens at once.
        let again = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert_eq!(again.local_addr().unwrap().port(), port);
    }
}
