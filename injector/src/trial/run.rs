//! Starting a trial, and assembling its observation once it has ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use regex::Regex;
use tokio_util::sync::CancellationToken;

use super::driver::*;
use crate::clock::now_ns;
use crate::markers::Polled;
use crate::orphans;
use crate::output::StreamState;
use crate::plan::{Marker, Stream, TrialPlan};
use crate::process::{self, spawn};
use crate::record::{MissedPhase, Observation, PhaseEntry, Resources, StopReason, WatchHit};

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
        missed: None,
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
    crate::unix::tune_trial_thread();
    let mut command = process::command(
        program,
        &plan.target.argv[1..],
        &plan.target.env,
        &plan.target.cwd,
    );
    command.env(orphans::TOKEN_VAR, &plan.id);
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
    let mut child = match spawn(&command) {
        Ok(child) => child,
        Err(err) => {
            http_stop.store(true, std::sync::atomic::Ordering::Relaxed);
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
            child.stdout.take(),
            out_markers,
            out_watches,
            plan.tail_lines,
        ),
        StreamState::new(
            child.stderr.take(),
            err_markers,
            err_watches,
            plan.tail_lines,
        ),
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
    let orphans = orphans::sweep(
        &plan.id,
        driver.child.pid(),
        driver.child.lane().map(|l| &**l),
    );
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
