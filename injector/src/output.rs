//! Splitting a target's stdout and stderr into lines, each stamped with the monotonic time
//! its read returned, matched against the awaited markers and the watched patterns.
//!
//! The trial loop reads the pipes itself (non-blocking, woken by poll(2)), so a marker line
//! and the step it triggers are handled in the same wake-up. Only a bounded tail of lines is
//! kept: a chatty target costs constant memory.

use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use regex::Regex;

use crate::record::{Line, WatchHit};

/// Longest line kept; the rest of a longer line is read and dropped.
pub const MAX_LINE: usize = 4096;

/// One output stream of the target, as the trial loop sees it.
pub struct StreamState {
    file: Option<std::fs::File>,
    partial: Vec<u8>,
    overflow: bool,
    /// Markers awaited on this stream: (phase index, regex).
    pub markers: Vec<(usize, Regex)>,
    /// Watched patterns with their index in the plan and their hits.
    pub watches: Vec<(usize, Regex, WatchHit)>,
    /// The last lines.
    pub tail: VecDeque<Line>,
    tail_lines: usize,
    /// Lines read.
    pub count: u64,
}

/// What a read produced: marker hits (phase index, time, line).
pub type Hits = Vec<(usize, u64, String)>;

impl StreamState {
    /// A stream reading `fd` (set non-blocking here).
    pub fn new(
        fd: Option<OwnedFd>,
        markers: Vec<(usize, Regex)>,
        watches: Vec<(usize, Regex, WatchHit)>,
        tail_lines: usize,
    ) -> StreamState {
        let file = fd.map(|fd| {
            use nix::fcntl::{FcntlArg, OFlag, fcntl};
            if let Ok(flags) = fcntl(&fd, FcntlArg::F_GETFL) {
                let _ = fcntl(
                    &fd,
                    FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
                );
            }
            std::fs::File::from(fd)
        });
        StreamState {
            file,
            partial: Vec::new(),
            overflow: false,
            markers,
            watches,
            tail: VecDeque::new(),
            tail_lines,
            count: 0,
        }
    }

    /// The descriptor to poll, while the stream is open.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.file.as_ref().map(AsFd::as_fd)
    }

    /// Whether the stream is still open.
    pub fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Reads what is available; returns marker hits. Closes the stream at its end.
    pub fn read_available(&mut self, buf: &mut [u8]) -> Hits {
        let mut hits = Vec::new();
        while let Some(file) = self.file.as_mut() {
            match file.read(buf) {
                Ok(0) => {
                    if !self.partial.is_empty() || self.overflow {
                        let line = std::mem::take(&mut self.partial);
                        self.line(&line, crate::clock::now_ns(), &mut hits);
                        self.overflow = false;
                    }
                    self.file = None;
                }
                Ok(n) => {
                    let at = crate::clock::now_ns();
                    let mut rest = &buf[..n];
                    while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
                        let room = MAX_LINE.saturating_sub(self.partial.len());
                        self.partial.extend_from_slice(&rest[..nl.min(room)]);
                        let line = std::mem::take(&mut self.partial);
                        self.line(&line, at, &mut hits);
                        self.overflow = false;
                        rest = &rest[nl + 1..];
                    }
                    let room = MAX_LINE.saturating_sub(self.partial.len());
                    self.overflow |= rest.len() > room;
                    self.partial
                        .extend_from_slice(&rest[..rest.len().min(room)]);
                    if n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => self.file = None,
            }
        }
        hits
    }

    fn line(&mut self, raw: &[u8], at: u64, hits: &mut Hits) {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = String::from_utf8_lossy(raw);
        // Markers first: they are on the injection path.
        self.markers.retain(|(index, re)| {
            if re.is_match(&text) {
                hits.push((*index, at, text.to_string()));
                false
            } else {
                true
            }
        });
        self.count += 1;
        for (_, re, hit) in &mut self.watches {
            if re.is_match(&text) {
                hit.count += 1;
                if hit.first.is_none() {
                    hit.first = Some(Line {
                        at_ns: at,
                        text: text.to_string(),
                    });
                }
            }
        }
        if self.tail_lines > 0 {
            if self.tail.len() == self.tail_lines {
                self.tail.pop_front();
            }
            self.tail.push_back(Line {
                at_ns: at,
                text: text.into_owned(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn stream(data: &[u8]) -> (StreamState, Hits) {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut w = std::fs::File::from(w);
        std::io::Write::write_all(&mut w, data).unwrap();
        drop(w);
        let markers = vec![(3, Regex::new("^ready$").unwrap())];
        let mut s = StreamState::new(Some(r), markers, Vec::new(), 3);
        let mut buf = vec![0u8; 64];
        let mut hits = Vec::new();
        while s.is_open() {
            hits.extend(s.read_available(&mut buf));
        }
        (s, hits)
    }

    #[test]
    fn splits_lines_across_reads_and_reports_markers_once() {
        let (s, hits) = stream(b"booting\r\nready\nready\nlast line without newline");
        assert_eq!(hits.len(), 1);
        assert_eq!((hits[0].0, hits[0].2.as_str()), (3, "ready"));
        assert_eq!(s.count, 4);
        let tail: Vec<_> = s.tail.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(tail, ["ready", "ready", "last line without newline"]);
    }

    #[test]
    fn long_lines_are_cut_but_fully_consumed() {
        let mut data = vec![b'x'; 10_000];
        data.extend_from_slice(b"\nready\n");
        let (s, hits) = stream(&data);
        assert_eq!(s.tail[0].text.len(), MAX_LINE);
        assert_eq!(hits.len(), 1, "the line after the long one is whole");
        assert_eq!(s.count, 2);
    }
}
