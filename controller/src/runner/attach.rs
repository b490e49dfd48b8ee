//! Trials against running services (`target: attach:`).
//!
//! Each trial selects afresh (the process a previous trial hit may have been replaced by
//! its supervisor), with the run's seeded generator, waiting up to the trial's timeout for a
//! match; pins what it chose by identity; checks the run's blast radius before any signal;
//! and runs like any trial, except that atropos never stops or kills what it attached to.
//! Its recovery is a new process matching the same selector that reaches the phase, timed
//! from the exit: time to detect, to replace, to be ready again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use atropos_injector::attach::{Process, SelectError};
use atropos_injector::logfollow::LogMark;
use atropos_injector::{self as inj, CancellationToken, Identity, clock::now_ns};
use rand::{RngExt, SeedableRng};

use super::{Shared, check_run, files_left, judged};
use crate::judge::After;
use crate::plan::{self, AttachPlan, ExperimentPlan, PlannedTrial, TrialEnv};
use crate::record::{Recovery, Replacement, TrialRecord};

/// How often a selector is resolved again while waiting for a match.
const RETRY: Duration = Duration::from_millis(20);

/// The generator stream of target selection, apart from the trials' draws (so that adding
/// `count:` does not move any offset).
const SELECTION_STREAM: u64 = 0x6174_7461_6368;

/// The stream of a recovery's choice among several replacements.
const RECOVERY_STREAM: u64 = 0x7265_636f_7665_7279;

/// Waits out the cooldown since the experiment's last trial (cut short by cancellation).
pub(super) fn cool_down(attach: &AttachPlan, since: Option<Instant>, cancel: &CancellationToken) {
    let Some(since) = since else { return };
    let until = since + attach.cooldown;
    while !cancel.is_cancelled() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(10)));
    }
}

/// The processes `attach` selects now, `count` of them drawn with `rng`; waits up to
/// `limit` while nothing matches (a service between two processes). More matches than
/// allowed is an error at once: never a guess.
pub fn select(
    attach: &AttachPlan,
    rng: &mut impl rand::Rng,
    limit: Duration,
    cancel: &CancellationToken,
) -> Result<Vec<Process>, SelectError> {
    let deadline = Instant::now() + limit;
    loop {
        let lowered = &attach.lowered;
        let outcome = lowered.selector.resolve(&lowered.guard).and_then(|s| {
            s.choose(lowered.count, lowered.max_targets, |n| {
                rng.random_range(0..n)
            })
        });
        match outcome {
            Ok(chosen) => return Ok(chosen),
            Err(err @ SelectError::TooMany { .. }) => return Err(err),
            Err(err) if Instant::now() >= deadline || cancel.is_cancelled() => return Err(err),
            Err(_) => std::thread::sleep(RETRY),
        }
    }
}

/// The generator of one trial's selection: from the experiment's seed and the trial's
/// place in the plan, so a replay with the same seed draws the same way.
pub fn selection_rng(seed: u64, trial: &PlannedTrial) -> rand::rngs::ChaCha8Rng {
    let place = (trial.fault.map_or(0, |f| f as u64 + 1) << 32) | u64::from(trial.index);
    rand::rngs::ChaCha8Rng::seed_from_u64(seed ^ SELECTION_STREAM ^ place.rotate_left(17))
}

/// The plan's form of `chosen`. Selected by cgroup or systemd unit, the service is its
/// cgroup: the members of that cgroup are the target's too (when the chosen share one, and
/// it is not the root).
fn target(chosen: &[Process], attach: &AttachPlan, cwd: &std::path::Path) -> inj::AttachTarget {
    let selector = &attach.lowered.selector;
    let by_cgroup = selector.cgroup.is_some() || selector.systemd_unit.is_some();
    let shared = chosen
        .first()
        .map(|p| p.cgroup.clone())
        .filter(|c| c != "/" && !c.is_empty() && chosen.iter().all(|p| p.cgroup == *c));
    inj::AttachTarget {
        cgroup: shared.filter(|_| by_cgroup),
        processes: chosen
            .iter()
            .map(|p| Identity {
                pid: p.pid,
                starttime: p.starttime,
            })
            .collect(),
        boot_id: inj::journal::boot_id().to_owned(),
        cwd: cwd.to_owned(),
    }
}

/// Runs one trial against the service; `None` if the run was cancelled before it began.
pub(super) fn run_trial(
    exp: &ExperimentPlan,
    attach: &AttachPlan,
    trial: &PlannedTrial,
    experiment: usize,
    shared: &Shared,
) -> Option<Arc<TrialRecord>> {
    if shared.cancel.is_cancelled() {
        return None;
    }
    let started = now_ns();
    let spec = &exp.loaded.experiment.spec;
    let timeout = spec.timeout.unwrap_or(plan::DEFAULT_TIMEOUT);
    let env = TrialEnv {
        port: 0,
        dir: shared.run_dir.join(&trial.id),
    };
    let failed = |why: String| {
        let mut obs = inj::Observation::unstarted(&trial.id, &exp.info.phases);
        obs.error = Some(why);
        Some(judged(
            exp,
            trial,
            obs,
            After::default(),
            Duration::ZERO,
            None,
            started,
        ))
    };
    let mut rng = selection_rng(exp.info.seed, trial);
    let chosen = match select(attach, &mut rng, timeout, &shared.cancel) {
        Ok(chosen) => chosen,
        Err(_) if shared.cancel.is_cancelled() => return None,
        Err(err) => return failed(format!("selection: {err}")),
    };
    // The blast radius, before anything is sent: the most this trial can send.
    let steps = trial.fault.map_or(0, |f| exp.faults[f].lowered.steps.len());
    let most = chosen.len() * steps;
    let sent = shared.sent[experiment].load(Ordering::Relaxed);
    if sent + most > attach.max_signals {
        shared.cancel.cancel();
        return failed(format!(
            "the run's blast radius: {sent} signal(s) sent, and this trial could send {most} \
             more, past max_signals {}; the run stops here",
            attach.max_signals
        ));
    }
    let hit = target(&chosen, attach, &exp.cwd);
    let (iplan, first_offset) =
        plan::injector_plan(exp, trial, &env, &Default::default(), Some(hit.clone()));
    // Where each log ends before the fault: the recovery reads what was written since, so a
    // replacement's "ready" line written before it is selected still counts.
    let marks = log_marks(&iplan.phases);
    let obs = inj::trial::run_blocking(&iplan, &shared.cancel);
    let signals: usize = obs.deliveries.iter().map(|d| d.pids.len()).sum();
    shared.sent[experiment].fetch_add(signals, Ordering::Relaxed);
    let mut after = After::default();
    if obs.error.is_none() && obs.stop != inj::StopReason::Interrupted {
        after.files = files_left(exp, trial, &env);
        if let Some(recover) = &trial.expect.recover {
            let ctx = RecoveryContext {
                hit: &hit,
                obs: &obs,
                marks: &marks,
            };
            after.recovery = recover_service(exp, attach, trial, &ctx, recover, shared);
        }
        after.check = check_run(exp, trial, &env);
    }
    Some(judged(
        exp,
        trial,
        obs,
        after,
        iplan.grace,
        first_offset,
        started,
    ))
}

/// After a fault took the service's process: waits for a process that matches the same
/// selector and is not one the trial hit, then for it to reach the phase; all within
/// `recover.within` of the exit. A target still running is watched until it is in the
/// phase (the fault did not take it down; the service must still be in its steady state).
fn recover_service(
    exp: &ExperimentPlan,
    attach: &AttachPlan,
    trial: &PlannedTrial,
    ctx: &RecoveryContext<'_>,
    recover: &crate::spec::Recover,
    shared: &Shared,
) -> Option<Recovery> {
    let RecoveryContext { hit, obs, marks } = *ctx;
    let index = exp.info.phases.iter().position(|p| *p == recover.reaches)?;
    // Monotonic times: the observation's are relative to its start.
    let exit_at = obs.exit.as_ref().map(|e| obs.started_ns + e.at_ns);
    let detected_ns = match (exit_at, obs.deliveries.last()) {
        (Some(exit), Some(d)) => Some(exit.saturating_sub(obs.started_ns + d.delivered_ns)),
        _ => None,
    };
    let from = exit_at.unwrap_or_else(now_ns);
    let deadline = from + plan_ns(recover.within);
    let mut rng = selection_rng(exp.info.seed ^ RECOVERY_STREAM, trial);
    let replacement = exit_at.and_then(|_| {
        let left = deadline.saturating_sub(now_ns());
        select_other(attach, hit, &mut rng, left, &shared.cancel).map(|p| (p, now_ns()))
    });
    let (subject, replaced_ns, pid) = match (&replacement, exit_at) {
        (Some((p, seen)), _) => (
            target(std::slice::from_ref(p), attach, &exp.cwd),
            Some(seen.saturating_sub(from)),
            Some(p.pid),
        ),
        (None, None) => (hit.clone(), None, None),
        (None, Some(_)) => {
            let mut obs = inj::Observation::unstarted(&format!("{}-r", trial.id), &exp.info.phases);
            obs.error = Some("no replacement process appeared".to_owned());
            return Some(Recovery {
                phase: recover.reaches.clone(),
                reached_ns: None,
                observation: obs,
                attached: Some(Replacement {
                    detected_ns,
                    replaced_ns: None,
                    pid: None,
                }),
            });
        }
    };
    let vars = TrialEnv {
        port: 0,
        dir: shared.run_dir.join(&trial.id),
    };
    let vars = vars.vars(trial);
    let mut phases = plan::phase_plans(&exp.loaded.experiment.spec, &vars, &exp.cwd);
    for (phase, mark) in phases.iter_mut().zip(marks) {
        if let inj::Marker::Log { from, .. } = &mut phase.marker {
            *from = *mark;
        }
    }
    let rplan = inj::TrialPlan {
        id: format!("{}-r", trial.id),
        target: inj::Target::Attach(subject),
        phases,
        steps: Vec::new(),
        watches: Vec::new(),
        finish: inj::Finish::UntilPhase(index),
        hold: Duration::ZERO,
        grace: Duration::ZERO,
        timeout: Duration::from_nanos(deadline.saturating_sub(now_ns()).max(1)),
        sample_resources: false,
        tail_lines: 0,
        kill_orphans: false,
    };
    let robs = inj::trial::run_blocking(&rplan, &shared.cancel);
    let reached_ns = robs
        .phases
        .get(index)
        .and_then(|p| p.entered_ns)
        .map(|at| (robs.started_ns + at).saturating_sub(from));
    Some(Recovery {
        phase: recover.reaches.clone(),
        reached_ns,
        observation: robs,
        attached: Some(Replacement {
            detected_ns,
            replaced_ns,
            pid,
        }),
    })
}

/// What a recovery starts from: the processes the trial hit, what it saw, and where each
/// phase's log file ended before the fault.
#[derive(Clone, Copy)]
struct RecoveryContext<'a> {
    hit: &'a inj::AttachTarget,
    obs: &'a inj::Observation,
    marks: &'a [Option<LogMark>],
}

/// For each phase, where its log file ends now (`None` for other markers).
fn log_marks(phases: &[inj::PhasePlan]) -> Vec<Option<LogMark>> {
    phases
        .iter()
        .map(|p| match &p.marker {
            inj::Marker::Log { path, .. } => Some(LogMark::of(path)),
            _ => None,
        })
        .collect()
}

/// A process the selector matches now that is none of `hit`: waits up to `limit_ns`.
fn select_other(
    attach: &AttachPlan,
    hit: &inj::AttachTarget,
    rng: &mut impl rand::Rng,
    limit_ns: u64,
    cancel: &CancellationToken,
) -> Option<Process> {
    let deadline = Instant::now() + Duration::from_nanos(limit_ns);
    let lowered = &attach.lowered;
    loop {
        if let Ok(selection) = lowered.selector.resolve(&lowered.guard) {
            let fresh: Vec<Process> = selection
                .allowed
                .into_iter()
                .filter(|p| {
                    !hit.processes
                        .iter()
                        .any(|h| h.pid == p.pid && h.starttime == p.starttime)
                })
                .collect();
            if !fresh.is_empty() {
                let i = rng.random_range(0..fresh.len());
                return fresh.into_iter().nth(i);
            }
        }
        if Instant::now() >= deadline || cancel.is_cancelled() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn plan_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2)
}
