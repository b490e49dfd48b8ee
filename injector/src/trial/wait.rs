//! The wait: one ppoll over the pipes and the pidfd, and what each wake-up brings in.

use std::time::Duration;

use nix::poll::{PollFd, PollFlags, ppoll};
use tokio_util::sync::CancellationToken;

use super::driver::*;
use crate::clock::now_ns;
use crate::markers::TICK;
use crate::output::{Hits, StreamState};
use crate::procfs;
use crate::record::StopReason;

impl Driver<'_> {
    /// The loop: one ppoll over the pipes and the pidfd, until the trial ends.
    pub(super) fn drive(&mut self, cancel: &CancellationToken) -> StopReason {
        let deadline = self.t0 + ns(self.plan.timeout);
        loop {
            if let Some(reason) = self.kill_reason {
                return reason;
            }
            let wake = match self.advance() {
                Ok(wake) => wake,
                Err(reason) => return reason,
            };
            // After the steps due are fired, and not while a signal just sent is being
            // handled: telling wakes the follower's thread, which on a small machine takes
            // the CPU the target's handler needs (the felt latency through an injector was
            // 126 µs at p50 with each event told at once).
            let now = now_ns();
            let quiet = self.last_step_at.map_or(0, |at| at + TELL_AFTER);
            if now >= quiet {
                self.tell();
            }
            if cancel.is_cancelled() {
                self.kill(StopReason::Interrupted);
                continue;
            }
            if now >= deadline {
                self.kill(StopReason::Timeout);
                continue;
            }
            let mut until = match wake {
                Wake::At(at) => at.min(deadline),
                Wake::Event => deadline,
            };
            until = until.min(now + CANCEL_CHECK);
            if self.follower.is_some() && self.untold() {
                until = until.min(quiet.max(now));
            }
            for (index, polled) in &self.polled {
                // A marker with a descriptor wakes the wait itself; the others are looked
                // at every tick.
                if self.entered[*index].is_none() && polled.wake_fd().is_none() {
                    until = until.min(polled.due_at().unwrap_or(now + ns(TICK)));
                }
            }
            if self.resources.is_some() && self.exited_at.is_none() {
                until = until.min(self.next_sample);
            }
            self.wait(until.saturating_sub(now));
            self.check_polled();
            self.sample();
            self.look_at_descendants();
        }
    }

    /// Whether the follower has something it was not told yet.
    fn untold(&self) -> bool {
        self.told.1 < self.deliveries.len()
            || self
                .entered
                .iter()
                .zip(&self.told.0)
                .any(|(e, told)| e.is_some() && !told)
    }

    /// Tells the follower, if any, of the phases entered and the deliveries made since it
    /// was last told.
    pub(super) fn tell(&mut self) {
        let Some(follower) = self.follower else {
            return;
        };
        for (index, entered) in self.entered.iter().enumerate() {
            if let Some((at, evidence)) = entered
                && !self.told.0[index]
            {
                self.told.0[index] = true;
                follower(crate::record::Progress::Phase(crate::record::PhaseSeen {
                    index,
                    name: self.plan.phases[index].name.clone(),
                    entered_ns: at.saturating_sub(self.t0),
                    evidence: evidence.clone(),
                }));
            }
        }
        for delivery in &self.deliveries[self.told.1..] {
            follower(crate::record::Progress::Delivery(delivery.clone()));
        }
        self.told.1 = self.deliveries.len();
    }

    /// Waits up to `timeout_ns` for output or the exit, and takes in what came.
    pub(super) fn wait(&mut self, timeout_ns: u64) {
        let watch_exit = self.exited_at.is_none();
        let ready = {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(3);
            let mut which: Vec<usize> = Vec::with_capacity(3);
            for (i, s) in self.streams.iter().enumerate() {
                if let Some(fd) = s.fd() {
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                    which.push(i);
                }
            }
            if watch_exit {
                fds.push(PollFd::new(self.child.pidfd(), PollFlags::POLLIN));
                which.push(2);
            }
            // Pending log markers: their watch's events are read by `check_polled`.
            for (index, polled) in &self.polled {
                if self.entered[*index].is_none()
                    && let Some(fd) = polled.wake_fd()
                {
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                    which.push(3);
                }
            }
            let timeout = nix::sys::time::TimeSpec::from_duration(Duration::from_nanos(timeout_ns));
            if fds.is_empty() {
                std::thread::sleep(Duration::from_nanos(timeout_ns));
                return;
            }
            if ppoll(&mut fds, Some(timeout), None).is_err() {
                return;
            }
            which
                .into_iter()
                .zip(
                    fds.iter()
                        .map(|f| f.revents().is_some_and(|r| !r.is_empty())),
                )
                .filter_map(|(w, hit)| hit.then_some(w))
                .collect::<Vec<_>>()
        };
        for w in ready {
            if w < 2 {
                let hits = self.streams[w].read_available(&mut self.buf);
                self.on_hits(hits);
            } else if w == 2 && self.child.peek().is_some() {
                self.exited_at = Some(now_ns());
                self.exit = self.child.peek();
            }
        }
    }

    pub(super) fn on_hits(&mut self, hits: Hits) {
        for (index, at, evidence) in hits {
            if self.entered[index].is_none() {
                self.entered[index] = Some((at, evidence));
            }
        }
    }

    /// Reads whatever output is waiting (the pipes are non-blocking): a line the target
    /// wrote is stamped before a polled marker looked at after it.
    fn drain_output(&mut self) {
        for w in 0..2 {
            if self.streams[w].fd().is_some() {
                let hits = self.streams[w].read_available(&mut self.buf);
                self.on_hits(hits);
            }
        }
    }

    pub(super) fn check_polled(&mut self) {
        let pending = self
            .polled
            .iter()
            .any(|(index, _)| self.entered[*index].is_none());
        if !pending {
            return;
        }
        // Output first: a target that prints `main: entered` and then listens must not be
        // seen listening before the line that came first is read.
        self.drain_output();
        let seen = self.look_at_polled();
        if seen.is_empty() {
            return;
        }
        // A polled marker was seen at T. A line of an earlier phase that the target wrote
        // before (its program order) may have reached the pipe between the drain and T:
        // read it now, and the polled phase is entered no earlier than it.
        self.drain_output();
        for index in seen {
            let latest_earlier = self.entered[..index]
                .iter()
                .filter_map(|e| e.as_ref().map(|(t, _)| *t))
                .max();
            if let Some(t) = latest_earlier
                && let Some(entry) = self.entered[index].as_mut()
                && t > entry.0
            {
                entry.0 = t;
            }
        }
    }

    /// Looks at every polled marker not seen yet; the phases seen now (no allocation when
    /// none is, as on most ticks).
    fn look_at_polled(&mut self) -> Vec<usize> {
        // The trial's processes: the main one and everything in its lane cgroup (or, without
        // one, its descendants and the orphans carrying its token).
        // Borrowed field by field, so that this costs nothing on a wake-up without a marker
        // that asks for the owners.
        let child = &self.child;
        let token = self.plan.id.as_str();
        let owners = || {
            let main = child.pid();
            let mut pids = vec![main];
            match child.lane() {
                Some(lane) => pids.extend(lane.members()),
                None if !child.is_child() => {
                    pids.extend(child.pids());
                    pids.extend(child.descendants().iter().map(|p| p.pid));
                }
                None => {
                    pids.extend(crate::procfs::descendants_of(main).iter().map(|p| p.pid));
                    pids.extend(
                        crate::orphans::find(token, main, None)
                            .iter()
                            .map(|p| p.pid),
                    );
                }
            }
            pids.sort_unstable();
            pids.dedup();
            pids
        };
        let mut seen_now = Vec::new();
        for (index, polled) in &mut self.polled {
            if self.entered[*index].is_none()
                && let Some(seen) = polled.check(&owners)
            {
                self.entered[*index] = Some(seen);
                seen_now.push(*index);
            }
        }
        seen_now
    }

    /// An attached service may be past some of its phases when the trial begins (it is up):
    /// each marker is looked at now (a port, a URL, a file, a delay, a log file's last
    /// [`LOG_LOOKBACK`] bytes for a matching line, and a unit's last
    /// [`crate::journald::LOOKBACK_ENTRIES`] journal entries of this boot), and a phase found reached counts as
    /// entered at the start, as does every phase before it. The evidence says so.
    pub(super) fn reached_at_selection(&mut self) {
        for (index, phase) in self.plan.phases.iter().enumerate() {
            match &phase.marker {
                crate::plan::Marker::Http(url) => {
                    if let Some(status) = crate::markers::http_status(url)
                        && (200..300).contains(&status)
                    {
                        self.entered[index] =
                            Some((self.t0, format!("GET {url} answered {status}")));
                    }
                }
                crate::plan::Marker::Log {
                    path,
                    regex,
                    from: None,
                } => {
                    if let Some(line) = last_match(path, regex) {
                        self.entered[index] = Some((self.t0, format!("in the log: {line}")));
                    }
                }
                crate::plan::Marker::Journald {
                    unit,
                    regex,
                    directory,
                    since_us: None,
                } => {
                    let Ok(regex) = regex::Regex::new(regex) else {
                        continue;
                    };
                    let found = crate::journald::last_match(unit, directory.as_deref(), |m| {
                        regex.is_match(m)
                    });
                    if let Some(message) = found {
                        self.entered[index] =
                            Some((self.t0, format!("in the journal of {unit}: {message}")));
                    }
                }
                _ => {}
            }
        }
        self.check_polled();
        let Some(last) = self.entered.iter().rposition(Option::is_some) else {
            return;
        };
        let later = self.plan.phases[last].name.clone();
        for entry in &mut self.entered[..=last] {
            *entry = Some(match entry.take() {
                Some((_, evidence)) => {
                    (self.t0, format!("already reached at selection: {evidence}"))
                }
                None => (
                    self.t0,
                    format!("already passed at selection: phase `{later}` was reached"),
                ),
            });
        }
    }

    /// What an attached target left: its descendants seen during the trial that still run
    /// once it has exited. They are reported, and killed (through a pidfd pinned by their
    /// start time) only under `orphans: kill`: on a live host they may be someone's work.
    pub(super) fn attached_orphans(&mut self) -> Vec<crate::record::Orphan> {
        if self.exited_at.is_none() {
            return Vec::new();
        }
        // Only what was seen while the target ran: a process that joined its cgroup after the
        // exit may be its replacement.
        let kill = self.plan.kill_orphans;
        self.descendants
            .iter()
            .filter_map(|&(pid, start)| {
                let stat = procfs::ProcStat::read(pid)
                    .filter(|s| s.starttime == start && !s.is_zombie())?;
                // Read before the kill: a dying process shows an empty command line.
                let cmdline = procfs::cmdline(pid);
                let killed = kill
                    && crate::safety::may_signal(pid)
                    && crate::process::pin(pid, start).is_some_and(|pin| {
                        crate::process::send_pidfd(&pin.pidfd, crate::signal::Signal::KILL)
                            == crate::record::DeliveryOutcome::Delivered
                    });
                Some(crate::record::Orphan {
                    pid,
                    comm: stat.comm,
                    cmdline,
                    left_group: false,
                    killed,
                    kept: !kill,
                })
            })
            .collect()
    }

    /// Adds the attached target's current descendants (and the other members of its
    /// service's cgroup, where it was selected by one) to those it is known to have had.
    pub(super) fn note_descendants(&mut self) {
        let seen = self.child.cgroup_members().into_iter();
        for stat in seen.chain(self.child.descendants()) {
            let id = (stat.pid, stat.starttime);
            if !self.descendants.contains(&id) {
                self.descendants.push(id);
            }
        }
    }

    /// An attached target's descendants, looked at every [`SAMPLE_EVERY`] while it runs (the
    /// loop wakes at least that often), so that those it had just before a fault are known.
    pub(super) fn look_at_descendants(&mut self) {
        let now = now_ns();
        if !self.child.is_child() && self.exited_at.is_none() && now >= self.next_look {
            self.note_descendants();
            self.next_look = now + SAMPLE_EVERY;
        }
    }

    pub(super) fn sample(&mut self) {
        let now = now_ns();
        if let Some(r) = self.resources.as_mut()
            && self.exited_at.is_none()
            && now >= self.next_sample
        {
            if let Some(usage) = procfs::usage(self.child.pid()) {
                r.max_threads = r.max_threads.max(usage.threads);
                r.max_rss_bytes = r.max_rss_bytes.max(usage.rss_bytes);
                r.samples += 1;
            }
            self.next_sample = now + SAMPLE_EVERY;
        }
    }

    /// Reads the streams to their end: they end when the last holder of the pipes is gone.
    pub(super) fn drain(&mut self) {
        let until = now_ns() + DRAIN;
        while self.streams.iter().any(StreamState::is_open) {
            let now = now_ns();
            if now >= until {
                break;
            }
            self.wait(until - now);
        }
    }

    pub(super) fn kill(&mut self, reason: StopReason) {
        if self.exited_at.is_none() {
            self.child.kill();
        }
        self.kill_reason = Some(reason);
    }
}

/// How far back a log file is read for a phase an attached service reached before the trial.
pub(super) const LOG_LOOKBACK: u64 = 1 << 20;

/// The last line of `path`'s last [`LOG_LOOKBACK`] bytes that matches `regex`.
fn last_match(path: &std::path::Path, regex: &str) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let re = super::run::cached_regex(regex).ok()?;
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(LOG_LOOKBACK)))
        .ok()?;
    let mut tail = Vec::new();
    file.take(LOG_LOOKBACK).read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    text.lines()
        .rev()
        .find(|l| re.is_match(l))
        .map(str::to_owned)
}
