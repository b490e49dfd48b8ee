//! The trial driver: spawn, watch phases, fire steps on time, observe the end, clean up.
//!
//! One task per trial owns the target. Output readers and marker pollers send [`Event`]s;
//! the driver reacts in a single `select!` loop, so a step due "at phase entry" is fired
//! in the same wake-up that delivers the marker: that wake-up is the injection latency.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex::Regex;
use tokio::sync::mpsc::unbounded_channel;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ns;
use crate::output::{FastStep, Reader, StreamLog};
use crate::plan::{Action, Aim, ExitedState, Finish, Marker, Stream, TrialPlan, When};
use crate::process::{Spawned, spawn};
use crate::record::{
    Delivery, DeliveryOutcome, Exit, Observation, PhaseEntry, Resources, Skipped, StopReason,
    StopSignal, WatchHit,
};
use crate::signal::Signal;
use crate::{journal, markers, orphans, process, procfs, safety};

/// What the helpers of a trial tell its driver.
#[derive(Debug)]
pub enum Event {
    /// The marker of phase `index` was observed at monotonic time `at`.
    Phase {
        /// Index into the plan's phases.
        index: usize,
        /// Absolute monotonic ns.
        at: u64,
        /// What was seen.
        evidence: String,
    },
    /// A stream reached its end.
    Eof(Stream),
}

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
    open_streams: usize,
    fast: Option<Arc<FastStep>>,
}

/// What the driver waits for next.
enum Wake {
    At(u64),
    Event,
}

/// Runs one trial to its end and reports everything observed. Never panics on what the
/// target does; harness failures end up in [`Observation::error`].
pub async fn run(plan: &TrialPlan, cancel: &CancellationToken) -> Observation {
    let mut obs = Observation {
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
    };
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
                "failed to start `{}` in {}: {err}",
                program,
                plan.target.cwd.display()
            ));
            obs.ended_ns = now_ns() - obs.started_ns;
            return obs;
        }
    };
    let t0 = child.started_ns;
    obs.started_ns = t0;
    obs.pid = Some(child.pid());

    let (events_tx, mut events) = unbounded_channel();
    let mut helpers = JoinSet::new();
    let logs = [
        Arc::new(Mutex::new(StreamLog::default())),
        Arc::new(Mutex::new(StreamLog::default())),
    ];
    for (i, w) in plan.watches.iter().enumerate() {
        let log = &logs[stream_index(w.stream)];
        log.lock()
            .unwrap_or_else(|p| p.into_inner())
            .watches
            .push((i, obs.watches[i].clone()));
    }
    // A first step due the instant its output marker appears is fired by the reader itself.
    let fast = match (plan.steps.first(), plan.steps.first().map(|s| &s.when)) {
        (Some(step), Some(When::Phase { index, offset }))
            if offset.is_zero()
                && step.aim == Aim::Main
                && matches!(
                    plan.phases[*index].marker,
                    Marker::Stdout(_) | Marker::Stderr(_)
                ) =>
        {
            match (&step.action, child.pidfd_dup()) {
                (Action::Signal(sig), Ok(fd)) => Some(Arc::new(FastStep::new(*index, *sig, fd))),
                _ => None,
            }
        }
        _ => None,
    };
    let mut open_streams = 0;
    let pipes: [Option<Box<dyn std::io::Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ];
    for (i, pipe) in pipes.into_iter().enumerate() {
        let stream = if i == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        let Some(pipe) = pipe else { continue };
        let reader = Reader {
            stream,
            markers: compiled.markers[i].clone(),
            watches: compiled.watches[i].clone(),
            tail_lines: plan.tail_lines,
            log: logs[i].clone(),
            events: events_tx.clone(),
            fast: fast.clone(),
        };
        if reader.spawn(pipe).is_ok() {
            open_streams += 1;
        }
    }
    for (index, phase) in plan.phases.iter().enumerate() {
        if !matches!(phase.marker, Marker::Stdout(_) | Marker::Stderr(_)) {
            helpers.spawn(markers::poll(
                index,
                phase.marker.clone(),
                t0,
                events_tx.clone(),
            ));
        }
    }
    let resources = Arc::new(Mutex::new(Resources::default()));
    if plan.sample_resources {
        helpers.spawn(sample(child.pid(), resources.clone()));
    }
    drop(events_tx);

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
        open_streams,
        fast,
    };
    let stop = driver.drive(&mut events, cancel).await;

    // The end: reap the main process, sweep what it left, collect the streams.
    if let Some(paused) = driver.paused.take() {
        driver.resume(paused);
    }
    let exit = match driver.child.reap() {
        Some(exit) => Some(exit),
        None => driver.child.kill_and_reap().await,
    };
    let exit = driver.exit.clone().or(exit).map(|mut e| {
        e.at_ns = driver.exited_at.unwrap_or(e.at_ns).saturating_sub(t0);
        e
    });
    let orphans = orphans::sweep(&plan.id, driver.child.pid()).await;
    // Streams end when the last holder of the pipes is gone; give them a moment to drain.
    let mut open_streams = driver.open_streams;
    let drain = tokio::time::timeout(Duration::from_millis(200), async {
        while open_streams > 0 {
            match events.recv().await {
                Some(Event::Eof(_)) => open_streams -= 1,
                Some(ev) => driver.on_event(ev),
                None => break,
            }
        }
    });
    let _ = drain.await;
    helpers.abort_all();

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
    obs.deliveries = driver.deliveries;
    obs.skipped = driver.skipped;
    obs.stop_signal = driver.stop_signal;
    obs.exit = exit;
    obs.stop = stop;
    obs.orphans = orphans;
    for (i, log) in logs.iter().enumerate() {
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        let tail: Vec<_> = log
            .tail
            .drain(..)
            .map(|mut l| {
                l.at_ns = l.at_ns.saturating_sub(t0);
                l
            })
            .collect();
        for (index, hit) in log.watches.drain(..) {
            let mut hit = hit;
            if let Some(first) = hit.first.as_mut() {
                first.at_ns = first.at_ns.saturating_sub(t0);
            }
            obs.watches[index] = hit;
        }
        if i == 0 {
            obs.stdout_tail = tail;
            obs.lines.0 = log.count;
        } else {
            obs.stderr_tail = tail;
            obs.lines.1 = log.count;
        }
    }
    if plan.sample_resources {
        obs.resources = Some(*resources.lock().unwrap_or_else(|p| p.into_inner()));
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

/// Regexes compiled once per trial, split by stream.
struct Compiled {
    markers: [Vec<(usize, Regex)>; 2],
    watches: [Vec<Regex>; 2],
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
        for w in &plan.watches {
            watches[stream_index(w.stream)].push(compile(&w.regex)?);
        }
        Ok(Compiled { markers, watches })
    }
}

async fn sample(pid: i32, into: Arc<Mutex<Resources>>) {
    loop {
        let Some(usage) = procfs::usage(pid) else {
            return;
        };
        {
            let mut r = into.lock().unwrap_or_else(|p| p.into_inner());
            r.max_threads = r.max_threads.max(usage.threads);
            r.max_rss_bytes = r.max_rss_bytes.max(usage.rss_bytes);
            r.samples += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Sleeps until monotonic `at`: the timer wheel for the bulk (1 ms resolution), then
/// yielding to other tasks for the last stretch so that offsets land within microseconds.
async fn sleep_until_ns(at: u64) {
    let now = now_ns();
    if at > now + 1_500_000 {
        tokio::time::sleep(Duration::from_nanos(at - now - 1_200_000)).await;
    }
    while now_ns() < at {
        tokio::task::yield_now().await;
    }
}

impl Driver<'_> {
    async fn drive(
        &mut self,
        events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
        cancel: &CancellationToken,
    ) -> StopReason {
        let deadline = self.t0 + ns(self.plan.timeout);
        let mut events_open = true;
        loop {
            if let Some(reason) = self.kill_reason {
                return reason;
            }
            let wake = match self.advance() {
                Ok(wake) => wake,
                Err(reason) => return reason,
            };
            let exited = self.exited_at.is_some();
            let wake_at = match wake {
                Wake::At(at) => at.min(deadline),
                Wake::Event => deadline,
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    self.kill(StopReason::Interrupted);
                }
                ev = events.recv(), if events_open => match ev {
                    Some(Event::Eof(_)) => self.open_streams -= 1,
                    Some(ev) => self.on_event(ev),
                    None => events_open = false,
                },
                () = self.child.exited(), if !exited => {
                    self.exited_at = Some(now_ns());
                    self.exit = self.child.peek();
                }
                () = sleep_until_ns(wake_at) => {
                    if now_ns() >= deadline {
                        self.kill(StopReason::Timeout);
                    }
                }
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        if let Event::Phase {
            index,
            at,
            evidence,
        } = ev
            && self.entered[index].is_none()
        {
            self.entered[index] = Some((at, evidence));
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

        // A reader fired the first step already: record it once its marker is known here.
        if self.next_step == 0
            && let Some(fast) = self.fast.clone()
            && self.entered[fast.phase].is_some()
            && fast.result().is_some()
        {
            let (marker_at, sent_at, outcome) = fast.wait_result();
            self.record_delivery(0, marker_at, 0, sent_at, outcome, vec![self.child.pid()]);
            self.next_step = 1;
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
        if self.next_step == 0
            && let Some(fast) = self.fast.clone()
            && !fast.disarm()
        {
            // A reader fired it after all: it was delivered, not skipped.
            let (marker_at, sent_at, outcome) = fast.wait_result();
            self.record_delivery(0, marker_at, 0, sent_at, outcome, vec![self.child.pid()]);
            self.next_step = 1;
            if self.next_step >= self.plan.steps.len() {
                return;
            }
        }
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
        if index == 0
            && let Some(fast) = self.fast.clone()
            && !fast.disarm()
        {
            let (marker_at, sent_at, outcome) = fast.wait_result();
            self.record_delivery(0, marker_at, 0, sent_at, outcome, vec![self.child.pid()]);
            return;
        }
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
