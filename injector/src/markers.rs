//! Markers that are polled rather than read from output: a listening port, an HTTP URL
//! answering 2xx, a file existing, a line appended to a log file, a delay since start.

use std::path::Path;
use std::time::Duration;

use regex::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedSender;

use crate::clock::now_ns;
use crate::plan::Marker;
use crate::trial::Event;

const FAST_POLL: Duration = Duration::from_millis(1);
const HTTP_POLL: Duration = Duration::from_millis(5);

/// Polls one marker until it is seen (or the task is aborted), then reports the phase.
pub async fn poll(index: usize, marker: Marker, started_ns: u64, events: UnboundedSender<Event>) {
    let evidence = match marker {
        Marker::Stdout(_) | Marker::Stderr(_) => return,
        Marker::Delay(delay) => {
            let target = started_ns + u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
            tokio::time::sleep(Duration::from_nanos(target.saturating_sub(now_ns()))).await;
            let _ = events.send(Event::Phase {
                index,
                at: target.max(now_ns()),
                evidence: format!("{} elapsed", humanize(delay)),
            });
            return;
        }
        Marker::Listen(port) => {
            while !crate::procfs::tcp_listening(port) {
                tokio::time::sleep(FAST_POLL).await;
            }
            format!("port {port} listening")
        }
        Marker::File(path) => {
            while !path.exists() {
                tokio::time::sleep(FAST_POLL).await;
            }
            format!("{} exists", path.display())
        }
        Marker::Http(url) => loop {
            if let Some(status) = http_status(&url).await
                && (200..300).contains(&status)
            {
                break format!("GET {url} answered {status}");
            }
            tokio::time::sleep(HTTP_POLL).await;
        },
        Marker::Log { path, regex } => match follow_log(&path, &regex).await {
            Some(line) => line,
            None => return,
        },
    };
    let _ = events.send(Event::Phase {
        index,
        at: now_ns(),
        evidence,
    });
}

fn humanize(d: Duration) -> String {
    format!("{d:?}")
}

/// Follows `path` from its current end (or its start, if it appears later) until a line matches.
async fn follow_log(path: &Path, regex: &str) -> Option<String> {
    let re = Regex::new(regex).ok()?;
    let mut offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut pending = String::new();
    loop {
        if let Ok(mut file) = tokio::fs::File::open(path).await {
            use tokio::io::AsyncSeekExt;
            let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
            if len < offset {
                offset = 0; // truncated or replaced
            }
            if len > offset && file.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
                let mut bytes = Vec::new();
                if let Ok(n) = file.read_to_end(&mut bytes).await {
                    offset += n as u64;
                    pending.push_str(&String::from_utf8_lossy(&bytes));
                    while let Some(nl) = pending.find('\n') {
                        let line: String = pending.drain(..=nl).collect();
                        let line = line.trim_end_matches(['\n', '\r']);
                        if re.is_match(line) {
                            return Some(line.to_owned());
                        }
                    }
                }
            }
        }
        tokio::time::sleep(FAST_POLL * 2).await;
    }
}

/// GETs a plain-HTTP URL on this machine and returns the status code.
///
/// A dozen lines of HTTP/1.0 keep the injector free of an HTTP client stack; markers are
/// health endpoints of the target itself, reached over loopback.
async fn http_status(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let connect = tokio::net::TcpStream::connect(authority);
    let mut stream = tokio::time::timeout(Duration::from_millis(200), connect)
        .await
        .ok()?
        .ok()?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: atropos\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut head))
        .await
        .ok()?
        .ok()?;
    let text = std::str::from_utf8(&head[..n]).ok()?;
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_the_status_of_a_loopback_http_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = sock.read(&mut buf).await;
            sock.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
        });
        assert_eq!(
            http_status(&format!("http://{addr}/healthz")).await,
            Some(204)
        );
    }

    #[tokio::test]
    async fn follows_a_log_file_that_appears_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let writer_path = path.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            std::fs::write(&writer_path, "booting\nlistening on 9\n").unwrap();
        });
        let line = tokio::time::timeout(
            Duration::from_secs(5),
            follow_log(&path, "listening on \\d+"),
        )
        .await
        .unwrap();
        assert_eq!(line.as_deref(), Some("listening on 9"));
    }
}
