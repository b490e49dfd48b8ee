//! Starting a trial, and assembling its observation once it has ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use regex::Regex;
use tokio_util::sync::CancellationToken;

use super::driver::*;
use super::subject::Subject;
use crate::attach::Attached;
use crate::clock::now_ns;
use crate::markers::Polled;
use crate::orphans;
use crate::output::StreamState;
use crate::plan::{Marker, RunTarget, Stream, Target, TrialPlan};
use crate::process::{self, spawn};
use crate::record::{MissedPhase, Observation, PhaseEntry, Resources, WatchHit};

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

pub(super) fn empty_observation(plan: &TrialPlan) -> Observation {
    let phases: Vec<String> = plan.phases.iter().map(|p| p.name.clone()).collect();
    let mut obs = Observation::unstarted(&plan.id, &phases);
    obs.watches = plan
        .watches
        .iter()
        .map(|w| WatchHit {
            stream: w.stream,
            pattern: w.regex.clone(),
            first: None,
            count: 0,
        })
        .collect();
    obs
}

/// Runs one trial to its end on this thread. Never panics on what the target does; harness
/// failures end up in [`Observation::error`].
pub fn run_blocking(plan: &TrialPlan, cancel: &CancellationToken) -> Observation {
    run_inner(plan, cancel, None)
}

/// [`run_blocking`], telling `follower` of each phase entered and each delivery as they
/// happen (after the steps due at that moment were fired, so it adds nothing to their
/// latency).
pub fn run_followed(
    plan: &TrialPlan,
    cancel: &CancellationToken,
    follower: &dyn Fn(crate::record::Progress),
) -> Observation {
    run_inner(plan, cancel, Some(follower))
}

fn run_inner(
    plan: &TrialPlan,
    cancel: &CancellationToken,
    follower: Option<&dyn Fn(crate::record::Progress)>,
) -> Observation {
    let with_pid;
    let plan = match &plan.target {
        Target::Attach(attach) => {
            with_pid = with_target_pid(plan, attach.processes.first().map_or(0, |p| p.pid));
            &with_pid
        }
        Target::Run(_) => plan,
    };
    let mut obs = empty_observation(plan);
    let compiled = match Compiled::new(plan) {
        Ok(c) => c,
        Err(err) => {
            obs.error = Some(err);
            return obs;
        }
    };
    crate::unix::tune_trial_thread();
    // Polled markers start watching before the target exists: a log file is followed from
    // its end as it is now, so the first line the target writes is not taken for old.
    let http_stop = Arc::new(AtomicBool::new(false));
    let provisional = now_ns();
    let mut polled: Vec<(usize, Polled)> = plan
        .phases
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Polled::new(&p.marker, provisional, &http_stop).map(|m| (i, m)))
        .collect();
    let started = match &plan.target {
        Target::Run(run) => start(plan, run),
        Target::Attach(attach) => Attached::pin(attach)
            .map(|held| Started {
                subject: Box::new(held),
                stdout: None,
                stderr: None,
                t0: now_ns(),
            })
            .map_err(|err| format!("cannot attach: {err}")),
    };
    let Started {
        subject: child,
        stdout,
        stderr,
        t0,
    } = match started {
        Ok(started) => started,
        Err(err) => {
            http_stop.store(true, std::sync::atomic::Ordering::Relaxed);
            obs.error = Some(err);
            obs.ended_ns = now_ns() - obs.started_ns;
            return obs;
        }
    };
    obs.started_ns = t0;
    obs.pid = Some(child.pid());

    let [out_markers, err_markers] = compiled.markers;
    let [out_watches, err_watches] = compiled.watches.map(|ws| {
        ws.into_iter()
            .map(|(i, re)| (i, re, obs.watches[i].clone()))
            .collect::<Vec<_>>()
    });
    let streams = [
        StreamState::new(stdout, out_markers, out_watches, plan.tail_lines),
        StreamState::new(stderr, err_markers, err_watches, plan.tail_lines),
    ];
    for (_, p) in &mut polled {
        p.spawned(t0.saturating_sub(provisional));
    }

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
        missed: None,
        streams,
        polled,
        resources: plan.sample_resources.then(Resources::default),
        next_sample: t0,
        buf: vec![0u8; 64 * 1024],
        descendants: Vec::new(),
        next_look: t0 + SAMPLE_EVERY,
        follower,
        told: (vec![false; plan.phases.len()], 0),
    };
    if !driver.child.is_child() {
        driver.note_descendants();
        driver.reached_at_selection();
    }
    let stop = driver.drive(cancel);
    driver.tell();
    http_stop.store(true, Ordering::Relaxed);

    // The end: reap the main process, sweep what it left, let the streams end.
    if let Some(paused) = driver.paused.take() {
        driver.resume(paused);
    }
    let exit = driver.child.finish();
    let exit = driver.exit.clone().or(exit).map(|mut e| {
        e.at_ns = driver.exited_at.unwrap_or(e.at_ns).saturating_sub(t0);
        e
    });
    let orphans = if driver.child.is_child() {
        orphans::sweep(
            &plan.id,
            driver.child.pid(),
            driver.child.lane().map(|l| &**l),
        )
    } else {
        driver.attached_orphans()
    };
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
    driver.skip_unfired(stop);
    obs.missed = driver.missed.map(|i| MissedPhase {
        phase: plan.phases[i].name.clone(),
        within_ns: plan.phases[i].within.map_or(0, super::driver::ns),
        in_phase: driver.phase_name_at(driver.exited_at.unwrap_or_else(now_ns).saturating_sub(1)),
    });
    obs.deliveries = std::mem::take(&mut driver.deliveries);
    obs.skipped = std::mem::take(&mut driver.skipped);
    obs.stop_signal = driver.stop_signal.take();
    obs.exit = exit;
    obs.stop = stop;
    obs.orphans = orphans;
    obs.resources = driver.resources;
    obs.error = driver.polled.iter().find_map(|(_, p)| p.note());
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

/// `plan` with [`crate::markers::TARGET_PID`] in its log markers' regexes replaced by `pid`.
fn with_target_pid(plan: &TrialPlan, pid: i32) -> TrialPlan {
    let mut plan = plan.clone();
    for phase in &mut plan.phases {
        if let Marker::Log { regex, .. } = &mut phase.marker {
            *regex = regex.replace(crate::markers::TARGET_PID, &pid.to_string());
        }
    }
    plan
}

/// A target that began: the subject, its output pipes if it has them, and when it began.
struct Started {
    subject: Box<dyn Subject>,
    stdout: Option<std::os::fd::OwnedFd>,
    stderr: Option<std::os::fd::OwnedFd>,
    t0: u64,
}

/// Spawns the command of a `run:` target.
fn start(plan: &TrialPlan, run: &RunTarget) -> Result<Started, String> {
    let Some(program) = run.argv.first() else {
        return Err("the target command is empty".to_owned());
    };
    let mut command = process::command(program, &run.argv[1..], &run.env, &run.cwd);
    command.env(orphans::TOKEN_VAR, &plan.id);
    let mut child = spawn(&command).map_err(|err| {
        format!(
            "failed to start `{program}` in {}: {err}",
            run.cwd.display()
        )
    })?;
    Ok(Started {
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
        t0: child.started_ns,
        subject: Box::new(child),
    })
}

pub(super) fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

pub(super) struct Compiled {
    pub(super) markers: [Vec<(usize, Regex)>; 2],
    pub(super) watches: [Vec<(usize, Regex)>; 2],
}

/// Compiles `re`, or clones it from the cache: the trials of one experiment share patterns,
/// and a clone is a reference count where a compile is tens of microseconds.
pub(super) fn cached_regex(re: &str) -> Result<Regex, String> {
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
    pub(super) fn new(plan: &TrialPlan) -> Result<Compiled, String> {
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
