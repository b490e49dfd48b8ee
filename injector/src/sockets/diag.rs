//! The sock_diag wire: one `SOCK_DIAG_BY_FAMILY` dump request per address family, and the
//! `inet_diag_msg` answers parsed by hand from their bytes (`linux/inet_diag.h`), so that no
//! `unsafe` is needed. Netlink headers are in native byte order; the ports inside
//! `inet_diag_sockid` are big-endian.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};

use super::{Listener, SocketsError};

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
                let code = payload
                    .get(0..4)
                    .map_or(-libc::EPROTO, |b| i32::from_ne_bytes(ne4(b)));
                if code == 0 {
                    return Ok(Parsed::Done(interrupted)); // an acknowledgement: nothing follows
                }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    /// One netlink message: header, payload, padding to 4 bytes.
    fn nl(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(NLMSG_HDRLEN + payload.len()).unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    /// An `inet_diag_msg` as the kernel lays it out.
    fn diag_msg(family: i32, state: u8, src: &[u8], port: u16, uid: u32, inode: u32) -> Vec<u8> {
        let mut m = vec![0u8; MSG_LEN];
        m[0] = u8::try_from(family).unwrap();
        m[1] = state;
        m[4..6].copy_from_slice(&port.to_be_bytes());
        m[8..8 + src.len()].copy_from_slice(src);
        m[64..68].copy_from_slice(&uid.to_ne_bytes());
        m[68..72].copy_from_slice(&inode.to_ne_bytes());
        m
    }

    #[test]
    fn the_request_is_72_bytes_with_the_port_in_network_order() {
        let req = request(7, libc::AF_INET6, 0x1f90);
        assert_eq!(req.len(), 72);
        assert_eq!(ne_u32(&req[0..4]), 72);
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), SOCK_DIAG_BY_FAMILY);
        assert_eq!(u16::from_ne_bytes([req[6], req[7]]), 0x301);
        assert_eq!(ne_u32(&req[8..12]), 7);
        let body = &req[NLMSG_HDRLEN..];
        assert_eq!(
            (body[0], body[1]),
            (u8::try_from(libc::AF_INET6).unwrap(), 6)
        );
        assert_eq!(ne_u32(&body[4..8]), 1 << 10);
        assert_eq!(&body[8..10], &[0x1f, 0x90]);
        assert!(body[10..].iter().all(|&b| b == 0));
    }

    #[test]
    fn an_answer_yields_the_listeners_of_the_port_and_ends_at_done() {
        let mut data = Vec::new();
        let v4 = diag_msg(libc::AF_INET, TCP_LISTEN, &[127, 0, 0, 1], 8080, 1000, 4242);
        data.extend(nl(SOCK_DIAG_BY_FAMILY, 0x2, 5, &v4));
        let other_port = diag_msg(libc::AF_INET, TCP_LISTEN, &[0; 4], 8081, 0, 1);
        data.extend(nl(SOCK_DIAG_BY_FAMILY, 0x2, 5, &other_port));
        let stale = diag_msg(libc::AF_INET, TCP_LISTEN, &[0; 4], 8080, 0, 2);
        data.extend(nl(SOCK_DIAG_BY_FAMILY, 0x2, 4, &stale));
        let v6 = diag_msg(
            libc::AF_INET6,
            TCP_LISTEN,
            &Ipv6Addr::LOCALHOST.octets(),
            8080,
            0,
            7,
        );
        data.extend(nl(SOCK_DIAG_BY_FAMILY, 0x2, 5, &v6));
        data.extend(nl(NLMSG_DONE, 0x2, 5, &0i32.to_ne_bytes()));
        let mut found = Vec::new();
        assert_eq!(
            parse(&data, 5, 8080, &mut found).unwrap(),
            Parsed::Done(false)
        );
        assert_eq!(
            found,
            vec![
                Listener {
                    addr: IpAddr::from([127, 0, 0, 1]),
                    port: 8080,
                    inode: 4242,
                    uid: 1000,
                },
                Listener {
                    addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                    port: 8080,
                    inode: 7,
                    uid: 0,
                },
            ]
        );
    }

    #[test]
    fn a_datagram_without_done_asks_for_more_and_says_if_interrupted() {
        let v4 = diag_msg(libc::AF_INET, TCP_LISTEN, &[0; 4], 80, 0, 9);
        let data = nl(SOCK_DIAG_BY_FAMILY, NLM_F_DUMP_INTR, 1, &v4);
        let mut found = Vec::new();
        assert_eq!(parse(&data, 1, 80, &mut found).unwrap(), Parsed::More(true));
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn an_error_message_is_the_kernel_refusing() {
        let data = nl(NLMSG_ERROR, 0, 3, &(-libc::ENOENT).to_ne_bytes());
        let err = parse(&data, 3, 80, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, SocketsError::Refused(Errno::ENOENT)),
            "{err:?}"
        );
    }

    #[test]
    fn a_message_longer_than_its_datagram_is_malformed() {
        let mut data = nl(NLMSG_DONE, 0, 1, &[0; 4]);
        data[0] = 200;
        assert!(matches!(
            parse(&data, 1, 80, &mut Vec::new()),
            Err(SocketsError::Malformed(_))
        ));
        let short = nl(SOCK_DIAG_BY_FAMILY, 0, 1, &[0; 20]);
        assert!(matches!(
            parse(&short, 1, 80, &mut Vec::new()),
            Err(SocketsError::Malformed(_))
        ));
    }
}
