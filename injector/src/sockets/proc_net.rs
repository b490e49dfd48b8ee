//! The fallback for a kernel without `inet_diag`: `/proc/net/tcp` and `/proc/net/tcp6`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Listener, SocketsError};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listening_lines_of_tcp_and_tcp6_and_skips_the_rest() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0";
        let found = proc_line(v4).expect("a listening line");
        assert_eq!(found.addr, IpAddr::from([127, 0, 0, 1]));
        assert_eq!((found.port, found.uid, found.inode), (8080, 1000, 4242));
        let v6 = "   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            proc_line(v6).map(|l| (l.addr, l.inode)),
            Some((IpAddr::V6(Ipv6Addr::LOCALHOST), 77))
        );
        let established = v4.replacen(" 0A ", " 01 ", 1);
        assert_eq!(proc_line(&established), None);
        assert_eq!(proc_line("  sl  local_address rem_address   st"), None);
    }
}
