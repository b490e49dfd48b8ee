//! Markers that are polled rather than read from output: a listening port, a file existing,
//! a line appended to a log file, a delay since start, and an HTTP URL answering 2xx.
//!
//! The trial loop calls [`Polled::check`] on every tick (1 ms while one is pending). HTTP
//! is the one check that can block, so it runs on a thread of its own and only its result
//! is polled.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex::Regex;

use crate::clock::now_ns;
use crate::plan::Marker;

/// How often pending markers are checked.
pub const TICK: Duration = Duration::from_millis(1);

/// One polled marker and what it needs between checks.
pub enum Polled {
    /// A TCP port listening.
    Listen(u16),
    /// A file existing.
    File(PathBuf),
    /// A log file followed from its end at spawn time.
    Log {
        /// The file.
        path: PathBuf,
        /// The regex lines must match.
        regex: Regex,
        /// How far it was read.
        offset: u64,
        /// An incomplete last line.
        pending: String,
    },
    /// A moment: spawn time plus the delay (monotonic ns).
    Delay(u64),
    /// An HTTP check running on its own thread: set once it answered 2xx.
    Http(Arc<Mutex<Option<(u64, String)>>>),
}

impl Polled {
    /// The polled form of `marker`; `None` for output markers.
    pub fn new(
        marker: &Marker,
        started_ns: u64,
        stop: &Arc<std::sync::atomic::AtomicBool>,
    ) -> Option<Polled> {
        Some(match marker {
            Marker::Stdout(_) | Marker::Stderr(_) => return None,
            Marker::Listen(port) => Polled::Listen(*port),
            Marker::File(path) => Polled::File(path.clone()),
            Marker::Log { path, regex } => Polled::Log {
                path: path.clone(),
                regex: Regex::new(regex).ok()?,
                offset: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
                pending: String::new(),
            },
            Marker::Delay(d) => {
                Polled::Delay(started_ns + u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2))
            }
            Marker::Http(url) => {
                let slot = Arc::new(Mutex::new(None));
                let (url, out, stop) = (url.clone(), slot.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("atropos-http-marker".into())
                    .spawn(move || {
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            if let Some(status) = http_status(&url)
                                && (200..300).contains(&status)
                            {
                                *out.lock().unwrap_or_else(|p| p.into_inner()) =
                                    Some((now_ns(), format!("GET {url} answered {status}")));
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    })
                    .ok()?;
                Polled::Http(slot)
            }
        })
    }

    /// When a delay marker is due; the loop wakes exactly then instead of ticking.
    pub fn due_at(&self) -> Option<u64> {
        match self {
            Polled::Delay(at) => Some(*at),
            _ => None,
        }
    }

    /// Checks once: `Some((time, evidence))` when the marker is seen.
    pub fn check(&mut self) -> Option<(u64, String)> {
        match self {
            Polled::Listen(port) => {
                tcp_listening(*port).then(|| (now_ns(), format!("port {port} listening")))
            }
            Polled::File(path) => path
                .exists()
                .then(|| (now_ns(), format!("{} exists", path.display()))),
            Polled::Delay(at) => (now_ns() >= *at).then(|| (*at, "delay elapsed".to_owned())),
            Polled::Http(slot) => slot.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            Polled::Log {
                path,
                regex,
                offset,
                pending,
            } => follow(path, regex, offset, pending).map(|l| (now_ns(), l)),
        }
    }
}

/// Whether something accepts TCP connections on loopback `port` (IPv4, then IPv6).
///
/// A connect probe, as a TCP readiness probe does: the target sees one connection that
/// closes at once, and refused probes before it. Reading `/proc/net/tcp` would be silent, but
/// it cost 11 ms per read on the CI kernel, which delayed steps due in the meantime.
pub fn tcp_listening(port: u16) -> bool {
    let addrs = [
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
    ];
    addrs
        .iter()
        .any(|a| std::net::TcpStream::connect_timeout(a, Duration::from_millis(50)).is_ok())
}

/// Reads what was appended to `path` since `offset`; returns the first new line matching.
fn follow(path: &Path, regex: &Regex, offset: &mut u64, pending: &mut String) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    if len < *offset {
        *offset = 0; // truncated or replaced
    }
    if len == *offset {
        return None;
    }
    file.seek(std::io::SeekFrom::Start(*offset)).ok()?;
    let mut bytes = Vec::new();
    let n = file.read_to_end(&mut bytes).ok()?;
    *offset += n as u64;
    pending.push_str(&String::from_utf8_lossy(&bytes));
    while let Some(nl) = pending.find('\n') {
        let line: String = pending.drain(..=nl).collect();
        let line = line.trim_end_matches(['\n', '\r']);
        if regex.is_match(line) {
            return Some(line.to_owned());
        }
    }
    None
}

/// GETs a plain-HTTP URL on this machine and returns the status code.
///
/// A dozen lines of HTTP/1.0 keep the injector free of an HTTP client stack; markers are
/// health endpoints of the target itself, reached over loopback.
pub fn http_status(url: &str) -> Option<u16> {
    use std::net::ToSocketAddrs;
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let addr = authority.to_socket_addrs().ok()?.next()?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: atropos\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    let text = std::str::from_utf8(&head[..n]).ok()?;
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn reads_the_status_of_a_loopback_http_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = sock.read(&mut buf);
            sock.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        });
        assert_eq!(http_status(&format!("http://{addr}/healthz")), Some(204));
        server.join().unwrap();
    }

    #[test]
    fn sees_a_listening_socket_by_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(tcp_listening(port));
        drop(listener);
        assert!(!tcp_listening(port));
    }

    #[test]
    fn follows_a_log_file_that_appears_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let mut polled = Polled::new(
            &Marker::Log {
                path: path.clone(),
                regex: "listening on \\d+".into(),
            },
            now_ns(),
            &Default::default(),
        )
        .unwrap();
        assert!(polled.check().is_none());
        std::fs::write(&path, "booting\nlistening on 9\n").unwrap();
        assert_eq!(
            polled.check().map(|(_, l)| l).as_deref(),
            Some("listening on 9")
        );
    }
}
