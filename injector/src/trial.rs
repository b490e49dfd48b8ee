//! The trial driver: spawn, watch phases, fire steps on time, observe the end, clean up.
//!
//! One thread per trial owns the target and everything about it. It waits in a single
//! `ppoll(2)` on the target's stdout and stderr pipes and its pidfd, with a timeout set to
//! the next thing due (a step's offset, a grace period, a pending marker's next check). A
//! marker line and the step due at that marker are handled in the same wake-up, with no
//! hop between threads: that wake-up is the injection latency. (An async design with
//! reader tasks cost 70 µs at p50 from the target's print to our read in the engine
//! benchmark; this costs what a blocking read costs.)

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, ppoll};
use regex::Regex;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ns;
use crate::markers::{Polled, TICK};
use crate::output::{Hits, StreamState};
use crate::plan::{Action, Aim, ExitedState, Finish, Marker, Stream, TrialPlan, When};
use crate::process::{Spawned, spawn};
use crate::record::{
    Delivery, DeliveryOutcome, Exit, Observation, PhaseEntry, Resources, Skipped, StopReason,
    StopSignal, WatchHit,
};
use crate::signal::Signal;
use crate::{journal, orphans, process, procfs, safety};

/// The longest the loop sleeps without looking at cancellation.
const CANCEL_CHECK: u64 = 10_000_000;
/// How often resources are sampled when asked for.
const SAMPLE_EVERY: u64 = 10_000_000;
/// How long the streams may take to end once the target and its orphans are gone.
const DRAIN: u64 = 200_000_000;

/// Processes stopped by a pause step, waiting for their SIGCONT.
struct Paused {
    resume_at: u64,
    delivery: usize,
    pinned: Vec<(process::Found, u64)>,
    group: Option<i32>,
}

struct Driver<'a> {
    plan: &'a TrialPlan,
    child: Spawned,
    t0: u64,
    entered: Vec<Option<(u64, String)>>,
    exited_at: Option<u64>,
    exit: Option<Exit>,
    next_step: usize,
    last_step_at: Option<u64>,
    deliveries: Vec<Delivery>,
    skipped: Vec<Skipped>,
    paused: Option<Paused>,
    stop_signal: Option<StopSignal>,
    stop_sent_at: Option<u64>,
    kill_reason: Option<StopReason>,
    streams: [StreamState; 2],
    polled: Vec<(usize, Polled)>,
    resources: Option<Resources>,
    next_sample: u64,
    buf: Vec<u8>,
}

/// What the driver waits for next.
enum Wake {
    At(u64),
    Event,
}

/// Runs one trial to its end on a blocking thread and reports everything observed.
pub async fn run(plan: &TrialPlan, cancel: &CancellationToken) -> Observation {
    let (owned, token) = (plan.clone(), cancel.clone());
    match tokio::task::spawn_blocking(move || run_blocking(&owned, &token)).await {
        Ok(obs) => obs,
        Err(err) => {
            let mut obs = empty_observation(plan);
            obs.error = Some(format!("the trial thread failed: {err}"));
            obs
        }
    }
}

fn empty_observation(plan: &TrialPlan) -> Observation {
    Observation {
        trial_id: plan.id.clone(),
        pid: None,
        started_ns: now_ns(),
        ended_ns: 0,
        phases: plan
            .phases
            .iter()
            .map(|p| PhaseEntry {
                name: p.name.clone(),
                entered_ns: None,
                evidence: None,
            })
            .collect(),
        deliveries: Vec::new(),
        skipped: Vec::new(),
        stop_signal: None,
        exit: None,
        stop: StopReason::SpawnFailed,
        orphans: Vec::new(),
        watches: plan
            .watches
            .iter()
            .map(|w| WatchHit {
                stream: w.stream,
                pattern: w.regex.clone(),
                first: None,
                count: 0,
            })
            .collect(),
        stdout_tail: Vec::new(),
        stderr_tail: Vec::new(),
        lines: (0, 0),
        resources: None,
        error: None,
    }
}

/// Runs one trial to its end on this thread. Never panics on what the target does; harness
/// failures end up in [`Observation::error`].
pub fn run_blocking(plan: &TrialPlan, cancel: &CancellationToken) -> Observation {
    let mut obs = empty_observation(plan);
    let compiled = match Compiled::new(plan) {
        Ok(c) => c,
        Err(err) => {
            obs.error = Some(err);
            return obs;
        }
    };
    let Some(program) = plan.target.argv.first() else {
        obs.error = Some("the target command is empty".to_owned());
        return obs;
    };
    crate::unix::precise_timers();
    let mut command = Command::new(program);
    command
        .args(&plan.target.argv[1..])
        .envs(plan.target.env.iter().map(|(k, v)| (k, v)))
        .env(orphans::TOKEN_VAR, &plan.id)
        .current_dir(&plan.target.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::unix::isolate(&mut command);
    let mut child = match spawn(&mut command) {
        Ok(child) => child,
        Err(err) => {
            obs.error = Some(format!(
                "failed to start `{program}` in {}: {err}",
                plan.target.cwd.display()
            ));
            obs.ended_ns = now_ns() - obs.started_ns;
            return obs;
        }
    };
    let t0 = child.started_ns;
    obs.started_ns = t0;
    obs.pid = Some(child.pid());

    let [out_markers, err_markers] = compiled.markers;
    let [out_watches, err_watches] = compiled.watches.map(|ws| {
        ws.into_iter()
            .map(|(i, re)| (i, re, obs.watches[i].clone()))
            .collect::<Vec<_>>()
    });
    let streams = [
        StreamState::new(
            child.stdout.take().map(Into::into),
            out_markers,
            out_watches,
            plan.tail_lines,
        ),
        StreamState::new(
            child.stderr.take().map(Into::into),
            err_markers,
            err_watches,
            plan.tail_lines,
        ),
    ];
    let http_stop = Arc::new(AtomicBool::new(false));
    let polled = plan
        .phases
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Polled::new(&p.marker, t0, &http_stop).map(|m| (i, m)))
        .collect();

    let mut driver = Driver {
        plan,
        child,
        t0,
        entered: vec![None; plan.phases.len()],
        exited_at: None,
        exit: None,
        next_step: 0,
        last_step_at: None,
        deliveries: Vec::new(),
        skipped: Vec::new(),
        paused: None,
        stop_signal: None,
        stop_sent_at: None,
        kill_reason: None,
        streams,
        polled,
        resources: plan.sample_resources.then(Resources::default),
        next_sample: t0,
        buf: vec![0u8; 64 * 1024],
    };
    let stop = driver.drive(cancel);
    http_stop.store(true, Ordering::Relaxed);

    // The end: reap the main process, sweep what it left, let the streams end.
    if let Some(paused) = driver.paused.take() {
        driver.resume(paused);
    }
    let exit = match driver.child.reap() {
        Some(exit) => Some(exit),
        None => driver.child.kill_and_reap(),
    };
    let exit = driver.exit.clone().or(exit).map(|mut e| {
        e.at_ns = driver.exited_at.unwrap_or(e.at_ns).saturating_sub(t0);
        e
    });
    let orphans = orphans::sweep(&plan.id, driver.child.pid());
    driver.drain();

    obs.phases = plan
        .phases
        .iter()
        .zip(&driver.entered)
        .map(|(p, e)| PhaseEntry {
            name: p.name.clone(),
            entered_ns: e.as_ref().map(|(at, _)| at.saturating_sub(t0)),
            evidence: e.as_ref().map(|(_, ev)| ev.clone()),
        })
        .collect();
    obs.deliveries = std::mem::take(&mut driver.deliveries);
    obs.skipped = std::mem::take(&mut driver.skipped);
    obs.stop_signal = driver.stop_signal.take();
    obs.exit = exit;
    obs.stop = stop;
    obs.orphans = orphans;
    obs.resources = driver.resources;
    for (i, stream) in driver.streams.iter_mut().enumerate() {
        let tail: Vec<_> = stream
            .tail
            .drain(..)
            .map(|mut l| {
                l.at_ns = l.at_ns.saturating_sub(t0);
                l
            })
            .collect();
        for (index, _, mut hit) in stream.watches.drain(..) {
            if let Some(first) = hit.first.as_mut() {
                first.at_ns = first.at_ns.saturating_sub(t0);
            }
            obs.watches[index] = hit;
        }
        if i == 0 {
            obs.stdout_tail = tail;
            obs.lines.0 = stream.count;
        } else {
            obs.stderr_tail = tail;
            obs.lines.1 = stream.count;
        }
    }
    obs.ended_ns = now_ns().saturating_sub(t0);
    obs
}

fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2)
}

struct Compiled {
    markers: [Vec<(usize, Regex)>; 2],
    watches: [Vec<(usize, Regex)>; 2],
}

/// Compiles `re`, or clones it from the cache: the trials of one experiment share patterns,
/// and a clone is a reference count where a compile is tens of microseconds.
fn cached_regex(re: &str) -> Result<Regex, String> {
    static CACHE: std::sync::OnceLock<Mutex<std::collections::HashMap<String, Regex>>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(found) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(re) {
        return Ok(found.clone());
    }
    let compiled = Regex::new(re).map_err(|e| format!("invalid regex `{re}`: {e}"))?;
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= 4096 {
        map.clear(); // per-trial templates make patterns unique; keep the cache bounded
    }
    map.insert(re.to_owned(), compiled.clone());
    Ok(compiled)
}

impl Compiled {
    fn new(plan: &TrialPlan) -> Result<Compiled, String> {
        let compile = cached_regex;
        let mut markers = [Vec::new(), Vec::new()];
        for (i, phase) in plan.phases.iter().enumerate() {
            match &phase.marker {
                Marker::Stdout(re) => markers[0].push((i, compile(re)?)),
                Marker::Stderr(re) => markers[1].push((i, compile(re)?)),
                _ => {}
            }
        }
        let mut watches = [Vec::new(), Vec::new()];
        for (i, w) in plan.watches.iter().enumerate() {
            watches[stream_index(w.stream)].push((i, compile(&w.regex)?));
        }
        Ok(Compiled { markers, watches })
    }
}

impl Driver<'_> {
    /// The loop: one ppoll over the pipes and the pidfd, until the trial ends.
    fn drive(&mut self, cancel: &CancellationToken) -> StopReason {
        let deadline = self.t0 + ns(self.plan.timeout);
        loop {
            if let Some(reason) = self.kill_reason {
                return reason;
            }
            let wake = match self.advance() {
                Ok(wake) => wake,
                Err(reason) => return reason,
            };
            let now = now_ns();
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
            for (index, polled) in &self.polled {
                if self.entered[*index].is_none() {
                    until = until.min(polled.due_at().unwrap_or(now + ns(TICK)));
                }
            }
            if self.resources.is_some() && self.exited_at.is_none() {
                until = until.min(self.next_sample);
            }
            self.wait(until.saturating_sub(now));
            self.check_polled();
            self.sample();
        }
    }

    /// Waits up to `timeout_ns` for output or the exit, and takes in what came.
    fn wait(&mut self, timeout_ns: u64) {
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
            } else if self.child.peek().is_some() {
                self.exited_at = Some(now_ns());
                self.exit = self.child.peek();
            }
        }
    }

    fn on_hits(&mut self, hits: Hits) {
        for (index, at, evidence) in hits {
            if self.entered[index].is_none() {
                self.entered[index] = Some((at, evidence));
            }
        }
    }

    fn check_polled(&mut self) {
        for (index, polled) in &mut self.polled {
            if self.entered[*index].is_none()
                && let Some(seen) = polled.check()
            {
                self.entered[*index] = Some(seen);
            }
        }
    }

    fn sample(&mut self) {
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
    fn drain(&mut self) {
        let until = now_ns() + DRAIN;
        while self.streams.iter().any(StreamState::is_open) {
            let now = now_ns();
            if now >= until {
                break;
            }
            self.wait(until - now);
        }
    }

    fn kill(&mut self, reason: StopReason) {
        if self.exited_at.is_none() {
            let _ = self.child.signal_group(Signal::KILL);
            let _ = self.child.signal(Signal::KILL);
        }
        self.kill_reason = Some(reason);
    }

    /// Fires whatever is due and says when to look again; `Err` ends the trial.
    fn advance(&mut self) -> Result<Wake, StopReason> {
        let now = now_ns();
        let mut wake: Option<u64> = None;
        let mut soonest = |at: u64| wake = Some(wake.map_or(at, |w| w.min(at)));

        if let Some(paused) = &self.paused {
            if now >= paused.resume_at {
                if let Some(paused) = self.paused.take() {
                    self.resume(paused);
                    self.last_step_at = Some(now_ns());
                }
            } else {
                soonest(paused.resume_at);
            }
        }

        while self.paused.is_none() && self.next_step < self.plan.steps.len() {
            let step = &self.plan.steps[self.next_step];
            let (trigger, offset) = match &step.when {
                When::Phase { index, offset } => match &self.entered[*index] {
                    Some((at, _)) => (*at, ns(*offset)),
                    None if self.exited_at.is_some() => {
                        let reason = format!(
                            "phase `{}` never reached: the target ended first ({})",
                            self.plan.phases[*index].name,
                            self.exit
                                .as_ref()
                                .map_or_else(|| "exited".to_owned(), ToString::to_string)
                        );
                        self.skip_rest(reason);
                        break;
                    }
                    None => break,
                },
                When::After(d) => (self.last_step_at.unwrap_or(self.t0), ns(*d)),
                When::Exited(state) => match self.exited_at {
                    Some(at) => {
                        if *state == ExitedState::Reaped && !self.child.is_reaped() {
                            let _ = self.child.reap();
                        }
                        (at, 0)
                    }
                    None => {
                        // The target must end before this step: end it as a baseline would.
                        self.stop_when_done(now, &mut soonest);
                        break;
                    }
                },
            };
            let due = trigger + offset;
            if due > now_ns() {
                soonest(due);
                break;
            }
            self.fire(self.next_step, trigger, offset);
            self.next_step += 1;
        }

        if let Some(paused) = &self.paused {
            soonest(paused.resume_at);
        }

        // Reap as soon as no pending step needs the zombie.
        let next_needs_zombie = self
            .plan
            .steps
            .get(self.next_step)
            .is_some_and(|s| s.when == When::Exited(ExitedState::Zombie));
        if self.exited_at.is_some() && !next_needs_zombie && !self.child.is_reaped() {
            let _ = self.child.reap();
        }

        if self.paused.is_some() || self.next_step < self.plan.steps.len() {
            return Ok(wake.map_or(Wake::Event, Wake::At));
        }

        // Every step is done (or skipped): how does the trial end?
        if self.exited_at.is_some() {
            return Err(StopReason::Exited);
        }
        match &self.plan.finish {
            Finish::AwaitExit => {
                let since = self.stop_sent_at.or(self.last_step_at);
                match since {
                    Some(since) => {
                        let limit = since + ns(self.plan.grace);
                        if now_ns() >= limit {
                            self.kill(StopReason::Hung);
                            return Err(StopReason::Hung);
                        }
                        soonest(limit);
                    }
                    None => self.stop_when_done(now, &mut soonest),
                }
            }
            Finish::Stop => self.stop_when_done(now, &mut soonest),
            Finish::UntilPhase(index) => {
                if self.entered[*index].is_some() {
                    self.kill(StopReason::Reached);
                    return Err(StopReason::Reached);
                }
            }
        }
        if let Some(reason) = self.kill_reason {
            return Err(reason);
        }
        Ok(wake.map_or(Wake::Event, Wake::At))
    }

    /// Once every phase is entered and `hold` has passed, stop the target with SIGTERM; if it
    /// is still there `grace` later, it hung.
    fn stop_when_done(&mut self, now: u64, soonest: &mut impl FnMut(u64)) {
        if let Some(sent) = self.stop_sent_at {
            let limit = sent + ns(self.plan.grace);
            if now >= limit {
                self.kill(StopReason::Hung);
            } else {
                soonest(limit);
            }
            return;
        }
        let hold = ns(self.plan.hold);
        let all_entered = self.entered.iter().all(Option::is_some);
        if !all_entered {
            return;
        }
        let last = self
            .entered
            .iter()
            .flatten()
            .map(|(at, _)| *at)
            .max()
            .unwrap_or(self.t0);
        let base = last.max(self.last_step_at.unwrap_or(0));
        if now >= base + hold {
            let outcome = self.child.signal(Signal::TERM);
            let at = now_ns();
            self.stop_sent_at = Some(at);
            self.stop_signal = Some(StopSignal {
                signal: Signal::TERM,
                at_ns: at - self.t0,
                outcome,
            });
            soonest(at + ns(self.plan.grace));
        } else {
            soonest(base + hold);
        }
    }

    fn skip_rest(&mut self, reason: String) {
        for step in self.next_step..self.plan.steps.len() {
            let reason = if step == self.next_step {
                reason.clone()
            } else {
                format!("an earlier step was skipped ({reason})")
            };
            self.skipped.push(Skipped { step, reason });
        }
        self.next_step = self.plan.steps.len();
    }

    fn record_delivery(
        &mut self,
        index: usize,
        trigger: u64,
        offset: u64,
        delivered: u64,
        outcome: DeliveryOutcome,
        pids: Vec<i32>,
    ) {
        let step = &self.plan.steps[index];
        let signal = match &step.action {
            Action::Signal(sig) => *sig,
            Action::Pause(_) => Signal::STOP,
        };
        let phase = self.phase_name_at(delivered);
        self.deliveries.push(Delivery {
            step: index,
            signal,
            aim: step.aim.clone(),
            pids,
            phase,
            trigger_ns: trigger.saturating_sub(self.t0),
            offset_ns: offset,
            delivered_ns: delivered - self.t0,
            latency_ns: delivered.saturating_sub(trigger + offset),
            outcome,
            resumed_ns: None,
        });
        self.last_step_at = Some(delivered);
    }

    /// Carries out step `index` now.
    fn fire(&mut self, index: usize, trigger: u64, offset: u64) {
        let step = &self.plan.steps[index];
        let (signal, pause) = match &step.action {
            Action::Signal(sig) => (*sig, None),
            Action::Pause(d) => (Signal::STOP, Some(*d)),
        };
        let mut pinned = Vec::new();
        let mut pids = Vec::new();
        let (outcome, delivered) = match &step.aim {
            Aim::Main => {
                pids.push(self.child.pid());
                if pause.is_some()
                    && let Some(stat) = procfs::ProcStat::read(self.child.pid())
                {
                    let _ = journal::record(stat.pid, stat.starttime);
                    if let Some(pin) = process::pin(stat.pid, stat.starttime) {
                        pinned.push((pin, stat.starttime));
                    }
                }
                let outcome = self.child.signal(signal);
                (outcome, now_ns())
            }
            Aim::Group => {
                pids.push(self.child.pid());
                let outcome = if self.exited_at.is_some() && self.group_is_empty() {
                    if self.child.is_reaped() {
                        DeliveryOutcome::AlreadyFinished
                    } else {
                        DeliveryOutcome::Zombie
                    }
                } else {
                    if pause.is_some() {
                        for stat in self.group_members() {
                            let _ = journal::record(stat.pid, stat.starttime);
                            if let Some(pin) = process::pin(stat.pid, stat.starttime) {
                                pinned.push((pin, stat.starttime));
                            }
                        }
                    }
                    self.child.signal_group(signal)
                };
                (outcome, now_ns())
            }
            Aim::Descendant(pattern) => {
                let re = Regex::new(pattern).ok();
                let matches: Vec<_> = self
                    .trial_processes()
                    .into_iter()
                    .filter(|p| {
                        re.as_ref().is_some_and(|re| {
                            re.is_match(&p.comm) || re.is_match(&procfs::cmdline(p.pid))
                        })
                    })
                    .collect();
                let mut best = DeliveryOutcome::NoTarget;
                for stat in matches {
                    if !safety::may_signal(stat.pid) {
                        best = rank(best, DeliveryOutcome::Denied);
                        continue;
                    }
                    let Some(pin) = process::pin(stat.pid, stat.starttime) else {
                        best = rank(best, DeliveryOutcome::AlreadyFinished);
                        continue;
                    };
                    if pause.is_some() {
                        let _ = journal::record(stat.pid, stat.starttime);
                    }
                    let outcome = if stat.is_zombie() {
                        DeliveryOutcome::Zombie
                    } else {
                        process::send_pidfd(&pin.pidfd, signal)
                    };
                    pids.push(stat.pid);
                    best = rank(best, outcome);
                    if pause.is_some() {
                        pinned.push((pin, stat.starttime));
                    }
                }
                (best, now_ns())
            }
        };
        self.record_delivery(index, trigger, offset, delivered, outcome, pids);
        if let Some(d) = pause {
            if outcome == DeliveryOutcome::Delivered {
                let group = matches!(step.aim, Aim::Group).then_some(self.child.pid());
                self.paused = Some(Paused {
                    resume_at: delivered + ns(d),
                    delivery: self.deliveries.len() - 1,
                    pinned,
                    group,
                });
            } else {
                for (pin, start) in &pinned {
                    journal::clear(pin.pid, *start);
                }
            }
        }
    }

    fn resume(&mut self, paused: Paused) {
        let at = now_ns();
        if let Some(pgid) = paused.group
            && safety::may_signal_group(pgid)
        {
            let _ = crate::unix::killpg(pgid, Signal::CONT.number());
        }
        for (pin, start) in &paused.pinned {
            let _ = process::send_pidfd(&pin.pidfd, Signal::CONT);
            journal::clear(pin.pid, *start);
        }
        if let Some(d) = self.deliveries.get_mut(paused.delivery) {
            d.resumed_ns = Some(at - self.t0);
        }
    }

    fn phase_name_at(&self, at: u64) -> String {
        if self.exited_at.is_some_and(|e| e <= at) {
            return "exited".to_owned();
        }
        self.entered
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|(t, _)| (i, *t)))
            .filter(|(_, t)| *t <= at)
            .max_by_key(|(i, t)| (*t, *i))
            .map_or_else(
                || "start".to_owned(),
                |(i, _)| self.plan.phases[i].name.clone(),
            )
    }

    /// Live processes of this trial other than the main one.
    fn trial_processes(&self) -> Vec<procfs::ProcStat> {
        let main = self.child.pid();
        let mut found = procfs::descendants_of(main);
        found.extend(orphans::find(&self.plan.id, main));
        found.sort_by_key(|p| p.pid);
        found.dedup_by_key(|p| p.pid);
        found
    }

    fn group_members(&self) -> Vec<procfs::ProcStat> {
        let main = self.child.pid();
        let mut members: Vec<_> = self
            .trial_processes()
            .into_iter()
            .filter(|p| p.pgid == main)
            .collect();
        if let Some(stat) = procfs::ProcStat::read(main) {
            members.push(stat);
        }
        members
    }

    fn group_is_empty(&self) -> bool {
        self.group_members().iter().all(procfs::ProcStat::is_zombie)
    }
}

/// Of two outcomes for the processes a step hit, the one that says most.
fn rank(a: DeliveryOutcome, b: DeliveryOutcome) -> DeliveryOutcome {
    let score = |o| match o {
        DeliveryOutcome::Delivered => 4,
        DeliveryOutcome::Zombie => 3,
        DeliveryOutcome::AlreadyFinished => 2,
        DeliveryOutcome::Denied => 1,
        DeliveryOutcome::NoTarget => 0,
    };
    if score(b) > score(a) { b } else { a }
}
