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

use std::ffi::CString;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{OFlag, readlinkat};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::stat::Mode;
use nix::sys::time::{TimeVal, TimeValLike};

/// `SOCK_DIAG_BY_FAMILY` from `linux/sock_diag.h`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `TCP_LISTEN` from `netinet/tcp.h`: the state of a listening socket.
const TCP_LISTEN: u8 = 10;
/// `NLMSG_ERROR` and `NLMSG_DONE` from `linux/netlink.h`.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `NLM_F_REQUEST | NLM_F_DUMP`.
const DUMP_REQUEST: u16 = 0x1 | 0x300;
/// `NLM_F_DUMP_INTR`: the dump saw the table change under it and may be inconsistent.
const NLM_F_DUMP_INTR: u16 = 0x10;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct inet_diag_req_v2)`.
const REQ_LEN: usize = 56;
/// `sizeof(struct inet_diag_msg)`.
const MSG_LEN: usize = 72;
/// The largest datagram the kernel builds for a dump (`SKB_WITH_OVERHEAD(32768)` at most).
const RECV_BUF: usize = 32 * 1024;

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

/// A `NETLINK_SOCK_DIAG` socket and the sequence number of its last request.
pub struct Diag {
    fd: OwnedFd,
    seq: u32,
}

impl Diag {
    /// Opens the socket.
    pub fn open() -> Result<Diag, SocketsError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )
        .map_err(SocketsError::Open)?;
        // The kernel answers within sendto and recv themselves; the timeout only bounds the
        // wait should it ever not, so that a trial's loop cannot hang here.
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::milliseconds(100))
            .map_err(SocketsError::Open)?;
        Ok(Diag { fd, seq: 0 })
    }

    /// The TCP sockets listening on `port`: one dump per address family.
    pub fn listeners(&mut self, port: u16) -> Result<Vec<Listener>, SocketsError> {
        let mut found = Vec::new();
        for family in [libc::AF_INET, libc::AF_INET6] {
            // A dump interrupted by a change of the table is repeated, a few times at most.
            for attempt in 0.. {
                let before = found.len();
                self.seq = self.seq.wrapping_add(1);
                match dump(&self.fd, self.seq, family, port, &mut found)? {
                    true if attempt < 3 => found.truncate(before),
                    _ => break,
                }
            }
        }
        Ok(found)
    }
}

/// The bytes of one dump request: `nlmsghdr` then `inet_diag_req_v2`, in native byte order
/// but for the port, which `inet_diag_sockid` holds in network order.
fn request(seq: u32, family: i32, port: u16) -> [u8; NLMSG_HDRLEN + REQ_LEN] {
    let mut req = [0u8; NLMSG_HDRLEN + REQ_LEN];
    let len = u32::try_from(req.len()).expect("72 fits in u32");
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&DUMP_REQUEST.to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel fills in our port id.
    let body = &mut req[NLMSG_HDRLEN..];
    body[0] = u8::try_from(family).expect("address families fit in u8");
    body[1] = u8::try_from(libc::IPPROTO_TCP).expect("IPPROTO_TCP is 6");
    // idiag_ext 0 (no attributes wanted), pad 0.
    body[4..8].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    // id.idiag_sport: the kernel skips listening sockets of other ports.
    body[8..10].copy_from_slice(&port.to_be_bytes());
    req
}

/// Sends one dump request and reads its answer to `NLMSG_DONE`, appending the listeners of
/// `port`. Returns whether the kernel flagged the dump as interrupted.
fn dump(
    fd: &OwnedFd,
    seq: u32,
    family: i32,
    port: u16,
    found: &mut Vec<Listener>,
) -> Result<bool, SocketsError> {
    let req = request(seq, family, port);
    sendto(
        fd.as_raw_fd(),
        &req,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(SocketsError::Exchange)?;
    let mut buf = [0u8; RECV_BUF];
    let mut interrupted = false;
    loop {
        let n = loop {
            match recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_TRUNC) {
                Err(Errno::EINTR) => continue,
                other => break other.map_err(SocketsError::Exchange)?,
            }
        };
        if n > buf.len() {
            return Err(SocketsError::Malformed("a datagram larger than the buffer"));
        }
        match parse(&buf[..n], seq, port, found)? {
            Parsed::More(intr) => interrupted |= intr,
            Parsed::Done(intr) => return Ok(interrupted | intr),
        }
    }
}

/// Where a datagram left the dump.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// More datagrams follow; whether one of these messages was flagged interrupted.
    More(bool),
    /// `NLMSG_DONE` was seen.
    Done(bool),
}

/// Walks the netlink messages of one datagram.
fn parse(
    mut data: &[u8],
    seq: u32,
    port: u16,
    found: &mut Vec<Listener>,
) -> Result<Parsed, SocketsError> {
    let mut interrupted = false;
    while data.len() >= NLMSG_HDRLEN {
        let len = usize::try_from(ne_u32(&data[0..4])).unwrap_or(usize::MAX);
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let flags = u16::from_ne_bytes([data[6], data[7]]);
        let msg_seq = ne_u32(&data[8..12]);
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(SocketsError::Malformed(
                "a message longer than its datagram",
            ));
        }
        let payload = &data[NLMSG_HDRLEN..len];
        // NLMSG_ALIGN: messages start on 4-byte boundaries.
        data = &data[len.next_multiple_of(4).min(data.len())..];
        if msg_seq != seq {
            continue; // a leftover of an earlier request
        }
        interrupted |= flags & NLM_F_DUMP_INTR != 0;
        match kind {
            NLMSG_DONE => return Ok(Parsed::Done(interrupted)),
            NLMSG_ERROR => {
                let code = payload.get(0..4).map_or(0, |b| i32::from_ne_bytes(ne4(b)));
                return Err(SocketsError::Refused(Errno::from_raw(-code)));
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(listener) = listener(payload)?
                    && listener.port == port
                {
                    found.push(listener);
                }
            }
            _ => {}
        }
    }
    Ok(Parsed::More(interrupted))
}

/// One `inet_diag_msg`: family at 0, state at 1, `id` at 4 (sport, dport big-endian, then
/// src and dst as 16 bytes each), uid at 64, inode at 68; attributes may follow.
fn listener(msg: &[u8]) -> Result<Option<Listener>, SocketsError> {
    if msg.len() < MSG_LEN {
        return Err(SocketsError::Malformed(
            "an inet_diag_msg shorter than 72 bytes",
        ));
    }
    if msg[1] != TCP_LISTEN {
        return Ok(None);
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&msg[8..24]);
    let addr = match i32::from(msg[0]) {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3])),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(src)),
        _ => return Ok(None),
    };
    Ok(Some(Listener {
        addr,
        port: u16::from_be_bytes([msg[4], msg[5]]),
        inode: u64::from(ne_u32(&msg[68..72])),
        uid: ne_u32(&msg[64..68]),
    }))
}

fn ne4(b: &[u8]) -> [u8; 4] {
    [b[0], b[1], b[2], b[3]]
}

fn ne_u32(b: &[u8]) -> u32 {
    u32::from_ne_bytes(ne4(b))
}

/// The TCP sockets listening on `port`, from `/proc/net/tcp` and `/proc/net/tcp6`: silent
/// and always there, but slow (11 ms per read on the CI kernel).
pub fn proc_listeners(port: u16) -> Result<Vec<Listener>, SocketsError> {
    let mut found = Vec::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match crate::procfs::read_text(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // no IPv6
            Err(e) => return Err(SocketsError::Proc(e)),
        };
        found.extend(
            text.lines()
                .skip(1)
                .filter_map(proc_line)
                .filter(|l| l.port == port),
        );
    }
    Ok(found)
}

/// One line of `/proc/net/tcp{,6}` if it is a listening socket: `sl local rem st txq:rxq
/// tr:when retrnsmt uid timeout inode ...`, the address as 32-bit words in host order.
fn proc_line(line: &str) -> Option<Listener> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    if fields.get(3).copied()? != "0A" {
        return None;
    }
    let (addr, port) = fields.get(1)?.split_once(':')?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..addr.len()).step_by(8) {
        let word = u32::from_str_radix(addr.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let addr = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(Listener {
        addr,
        port: u16::from_str_radix(port, 16).ok()?,
        uid: fields.get(7)?.parse().ok()?,
        inode: fields.get(9)?.parse().ok()?,
    })
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

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::net::TcpListener;
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
}
