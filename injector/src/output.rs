//! Reading a target's stdout and stderr line by line, timestamped as each read returns.
//!
//! Every line is matched against the markers still awaited and against the watched
//! patterns; only a bounded tail is kept, so a chatty target costs constant memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use regex::Regex;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::mpsc::UnboundedSender;

use crate::clock::now_ns;
use crate::plan::Stream;
use crate::record::{Line, WatchHit};
use crate::trial::Event;

/// Longest line kept; the rest of a longer line is read and dropped.
pub const MAX_LINE: usize = 4096;

/// What one stream has shown so far; shared with the trial driver.
#[derive(Debug, Default)]
pub struct StreamLog {
    /// The last lines.
    pub tail: VecDeque<Line>,
    /// Lines read.
    pub count: u64,
    /// Watched patterns of this stream and their hits, with their index in the plan.
    pub watches: Vec<(usize, WatchHit)>,
}

/// Reads `pipe` to its end, reporting markers to `events` and keeping `log` current.
pub async fn read_stream(
    pipe: pipe::Receiver,
    stream: Stream,
    mut markers: Vec<(usize, Regex)>,
    watches: Vec<Regex>,
    tail_lines: usize,
    log: Arc<Mutex<StreamLog>>,
    events: UnboundedSender<Event>,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, pipe);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        match read_line_capped(&mut reader, &mut buf, MAX_LINE).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let at = now_ns();
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        let text = String::from_utf8_lossy(&buf);
        // Markers first: they are on the injection path.
        markers.retain(|(index, re)| {
            if re.is_match(&text) {
                let _ = events.send(Event::Phase {
                    index: *index,
                    at,
                    evidence: text.to_string(),
                });
                false
            } else {
                true
            }
        });
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        log.count += 1;
        for (re, (_, hit)) in watches.iter().zip(log.watches.iter_mut()) {
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
        if tail_lines > 0 {
            if log.tail.len() == tail_lines {
                log.tail.pop_front();
            }
            log.tail.push_back(Line {
                at_ns: at,
                text: text.into_owned(),
            });
        }
    }
    let _ = events.send(Event::Eof(stream));
}

/// Reads up to and including the next newline, keeping at most `cap` bytes of it.
async fn read_line_capped<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(total);
        }
        let (used, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..used.min(room)]);
        reader.consume(used);
        total += used;
        if done {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_cut_but_fully_consumed() {
        let mut data: Vec<u8> = vec![b'x'; 10_000];
        data.extend_from_slice(b"\nnext\n");
        let mut reader = BufReader::with_capacity(64, data.as_slice());
        let mut buf = Vec::new();
        let n = read_line_capped(&mut reader, &mut buf, 100).await.unwrap();
        assert_eq!(n, 10_001);
        assert_eq!(buf.len(), 100);
        buf.clear();
        read_line_capped(&mut reader, &mut buf, 100).await.unwrap();
        assert_eq!(buf, b"next\n");
    }
}
