//! Reading a target's stdout and stderr line by line, timestamped as each read returns.
//!
//! Each stream is read by its own thread with blocking reads: a blocked `read(2)` wakes as
//! soon as the target writes, which an event loop hop does not match (70 µs at p50 through
//! the async reactor against about 10 µs here, in the engine benchmark). Every line is
//! matched against the markers still awaited and against the watched patterns; only a bounded
//! tail is kept, so a chatty target costs constant memory. A step due at the very moment a
//! marker appears is fired from this thread ([`FastStep`]), before the driver even hears of it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::wait::{Id, WaitPidFlag, waitid};
use regex::Regex;
use tokio::sync::mpsc::UnboundedSender;

use crate::clock::now_ns;
use crate::plan::Stream;
use crate::record::{DeliveryOutcome, Line, WatchHit};
use crate::signal::Signal;
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

/// A first step due at a phase with no offset, fired by whichever reader sees the marker.
#[derive(Debug)]
pub struct FastStep {
    /// The phase whose marker fires it.
    pub phase: usize,
    /// The signal.
    pub signal: Signal,
    /// A duplicate of the target's pidfd.
    pub pidfd: OwnedFd,
    /// Cleared by whoever fires it (a reader) or gives it up (the driver).
    pub armed: AtomicBool,
    /// When the marker line was read (monotonic ns); 0 until then.
    pub marker_at: AtomicU64,
    /// When it was sent (monotonic ns); 0 until then.
    pub sent_at: AtomicU64,
    /// What became of it, as `DeliveryOutcome as u8`.
    pub outcome: AtomicU8,
}

impl FastStep {
    /// A fast step for `signal` at `phase` through a duplicate of the target's pidfd.
    pub fn new(phase: usize, signal: Signal, pidfd: OwnedFd) -> FastStep {
        FastStep {
            phase,
            signal,
            pidfd,
            armed: AtomicBool::new(true),
            marker_at: AtomicU64::new(0),
            sent_at: AtomicU64::new(0),
            outcome: AtomicU8::new(0),
        }
    }

    /// Fires the step if still armed; returns whether this call fired it.
    fn fire(&self, marker_at: u64) -> bool {
        if !self.armed.swap(false, Ordering::AcqRel) {
            return false;
        }
        self.marker_at.store(marker_at, Ordering::Release);
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let exited =
            matches!(waitid(Id::PIDFd(self.pidfd.as_fd()), flags), Ok(s) if s.pid().is_some());
        let outcome = crate::process::send_pidfd(&self.pidfd, self.signal);
        let outcome = if exited && outcome == DeliveryOutcome::Delivered {
            DeliveryOutcome::Zombie
        } else {
            outcome
        };
        self.outcome.store(outcome as u8, Ordering::Release);
        self.sent_at.store(now_ns(), Ordering::Release);
        true
    }

    /// Takes the step away from the readers; false when a reader already fired it.
    pub fn disarm(&self) -> bool {
        self.armed.swap(false, Ordering::AcqRel)
    }

    /// Marker time, send time and outcome, once a reader fired it; waits out the few
    /// instructions between a reader disarming it and recording the result.
    pub fn wait_result(&self) -> (u64, u64, DeliveryOutcome) {
        loop {
            if let Some((at, outcome)) = self.result() {
                return (self.marker_at.load(Ordering::Acquire), at, outcome);
            }
            std::hint::spin_loop();
        }
    }

    /// The send time and outcome, once fired.
    pub fn result(&self) -> Option<(u64, DeliveryOutcome)> {
        let at = self.sent_at.load(Ordering::Acquire);
        (at != 0).then(|| {
            let outcome = match self.outcome.load(Ordering::Acquire) {
                x if x == DeliveryOutcome::Delivered as u8 => DeliveryOutcome::Delivered,
                x if x == DeliveryOutcome::AlreadyFinished as u8 => {
                    DeliveryOutcome::AlreadyFinished
                }
                x if x == DeliveryOutcome::Zombie as u8 => DeliveryOutcome::Zombie,
                x if x == DeliveryOutcome::NoTarget as u8 => DeliveryOutcome::NoTarget,
                _ => DeliveryOutcome::Denied,
            };
            (at, outcome)
        })
    }
}

/// Everything a reader thread needs.
pub struct Reader {
    /// Which stream.
    pub stream: Stream,
    /// Markers awaited on this stream, with their phase index.
    pub markers: Vec<(usize, Regex)>,
    /// Watched patterns of this stream.
    pub watches: Vec<Regex>,
    /// Lines to keep.
    pub tail_lines: usize,
    /// The shared log.
    pub log: Arc<Mutex<StreamLog>>,
    /// The driver's event channel.
    pub events: UnboundedSender<Event>,
    /// A step to fire on a marker, if any.
    pub fast: Option<Arc<FastStep>>,
}

impl Reader {
    /// Reads `pipe` to its end on a new thread.
    pub fn spawn(self, pipe: impl Read + Send + 'static) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("atropos-output".into())
            .spawn(move || self.run(pipe))
            .map(|_| ())
    }

    fn run(mut self, pipe: impl Read) {
        let mut reader = BufReader::with_capacity(64 * 1024, pipe);
        let mut buf = Vec::with_capacity(256);
        loop {
            buf.clear();
            match read_line_capped(&mut reader, &mut buf, MAX_LINE) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let at = now_ns();
            while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                buf.pop();
            }
            let text = String::from_utf8_lossy(&buf);
            // Markers first: they are on the injection path.
            let (events, fast) = (&self.events, &self.fast);
            self.markers.retain(|(index, re)| {
                if !re.is_match(&text) {
                    return true;
                }
                if let Some(fast) = fast
                    && fast.phase == *index
                {
                    fast.fire(at);
                }
                let _ = events.send(Event::Phase {
                    index: *index,
                    at,
                    evidence: text.to_string(),
                });
                false
            });
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            log.count += 1;
            for (re, (_, hit)) in self.watches.iter().zip(log.watches.iter_mut()) {
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
                if log.tail.len() == self.tail_lines {
                    log.tail.pop_front();
                }
                log.tail.push_back(Line {
                    at_ns: at,
                    text: text.into_owned(),
                });
            }
        }
        let _ = self.events.send(Event::Eof(self.stream));
    }
}

/// Reads up to and including the next newline, keeping at most `cap` bytes of it.
fn read_line_capped<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
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

    #[test]
    fn long_lines_are_cut_but_fully_consumed() {
        let mut data: Vec<u8> = vec![b'x'; 10_000];
        data.extend_from_slice(b"\nnext\n");
        let mut reader = BufReader::with_capacity(64, data.as_slice());
        let mut buf = Vec::new();
        let n = read_line_capped(&mut reader, &mut buf, 100).unwrap();
        assert_eq!(n, 10_001);
        assert_eq!(buf.len(), 100);
        buf.clear();
        read_line_capped(&mut reader, &mut buf, 100).unwrap();
        assert_eq!(buf, b"next\n");
    }
}
