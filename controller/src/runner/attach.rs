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

use atropos_injector::attach::SelectError;
use atropos_injector::attach::service::{self, identity};
use atropos_injector::{self as inj, CancellationToken, Identity, clock::now_ns};
use rand::{RngExt, SeedableRng};

use super::{Ended, Shared, judged};
use crate::dispatch::after_plan;
use crate::plan::{self, AttachPlan, ExperimentPlan, PlannedTrial, TrialEnv};
use crate::record::TrialRecord;

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

/// What a trial selected: the processes it hits, and every process that matched (none of
/// which is a replacement when the service recovers: a worker the fault spared is not one).
pub struct Selected {
    /// The `count` drawn.
    pub chosen: Vec<inj::attach::Process>,
    /// All that matched and may be aimed at.
    pub matched: Vec<Identity>,
}

/// The processes `attach` selects now, `count` of them drawn with `rng`; waits up to
/// `limit` while nothing matches (a service between two processes). More matches than
/// allowed is an error at once: never a guess.
pub fn select(
    attach: &AttachPlan,
    rng: &mut impl rand::Rng,
    limit: Duration,
    cancel: &CancellationToken,
) -> Result<Selected, SelectError> {
    let deadline = Instant::now() + limit;
    loop {
        let lowered = &attach.lowered;
        let outcome = lowered.selector.resolve(&lowered.guard).and_then(|s| {
            let matched = s.allowed.iter().map(identity).collect();
            s.choose(lowered.count, lowered.max_targets, |n| {
                rng.random_range(0..n)
            })
            .map(|chosen| Selected { chosen, matched })
        });
        match outcome {
            Ok(selected) => return Ok(selected),
            Err(err @ SelectError::TooMany { .. }) => return Err(err),
            Err(err) if Instant::now() >= deadline || cancel.is_cancelled() => return Err(err),
            Err(_) => std::thread::sleep(RETRY),
        }
    }
}

/// The generator of one trial's selection: from the experiment's seed and the trial's
/// place in the plan, so a replay with the same seed draws the same way.
pub fn selection_rng(seed: u64, trial: &PlannedTrial) -> rand::rngs::ChaCha8Rng {
    rand::rngs::ChaCha8Rng::seed_from_u64(selection_seed(seed, trial))
}

/// The seed of [`selection_rng`].
fn selection_seed(seed: u64, trial: &PlannedTrial) -> u64 {
    let place = (trial.fault.map_or(0, |f| f as u64 + 1) << 32) | u64::from(trial.index);
    seed ^ SELECTION_STREAM ^ place.rotate_left(17)
}

/// The seed of a recovery's draw among several replacements.
pub(crate) fn recovery_seed(seed: u64, trial: &PlannedTrial) -> u64 {
    selection_seed(seed ^ RECOVERY_STREAM, trial)
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
        let ended = Ended::failed(obs);
        Some(judged(exp, trial, ended, started))
    };
    let mut rng = selection_rng(exp.info.seed, trial);
    let Selected { chosen, matched } = match select(attach, &mut rng, timeout, &shared.cancel) {
        Ok(selected) => selected,
        Err(_) if shared.cancel.is_cancelled() => return None,
        Err(err) => return failed(format!("selection: {err}")),
    };
    // The blast radius, before anything is sent: the most this trial can send to what it
    // chose (a pause is a SIGSTOP and a SIGCONT; `descendant` steps and orphans killed are
    // counted once sent).
    let steps = trial
        .fault
        .map_or(0, |f| plan::signals_per_target(&exp.faults[f].lowered));
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
    let hit = service::target(&chosen, &matched, &attach.lowered.selector, &exp.cwd);
    let (iplan, first_offset) =
        plan::injector_plan(exp, trial, &env, &Default::default(), Some(hit.clone()));
    // Where each log ends before the fault: the recovery reads what was written since, so a
    // replacement's "ready" line written before it is selected still counts.
    let marks = if trial.expect.recover.is_some() {
        service::marks(&iplan.phases)
    } else {
        Vec::new()
    };
    let obs = inj::trial::run_blocking(&iplan, &shared.cancel);
    let signals = signals_sent(&obs);
    shared.sent[experiment].fetch_add(signals, Ordering::Relaxed);
    let mut seen = inj::after::AfterSeen::default();
    if obs.error.is_none() && obs.stop != inj::StopReason::Interrupted {
        let after = service::AfterTrial {
            id: &iplan.id,
            phases: &iplan.phases,
            hit: &hit,
            obs: &obs,
            marks: &marks,
        };
        seen = inj::after::run(&after_plan(exp, trial, &env), Some(after), &shared.cancel);
    }
    let ended = Ended {
        obs,
        after: super::after_facts(seen),
        grace: iplan.grace,
        first_offset,
        node: None,
    };
    Some(judged(exp, trial, ended, started))
}

/// Runs one trial against the service on every node the experiment names, one node after
/// the other (trials against live services never overlap): each node selects the processes
/// from its own `/proc`, with a draw seeded from the run's seed, the trial and the node, and
/// runs the trial there. One record per node, its id the trial's and the node's
/// (`TRIAL-NODE`). The run's blast radius counts what every node sent.
pub(super) fn run_on_nodes(
    exp: &ExperimentPlan,
    attach: &AttachPlan,
    trial: &PlannedTrial,
    experiment: usize,
    shared: &Shared,
) -> Vec<Arc<TrialRecord>> {
    use rand::RngExt;
    let spec = &exp.loaded.experiment.spec;
    let timeout = spec.timeout.unwrap_or(plan::DEFAULT_TIMEOUT);
    let steps = trial
        .fault
        .map_or(0, |f| plan::signals_per_target(&exp.faults[f].lowered));
    let mut records = Vec::new();
    for &node in &exp.nodes {
        if shared.cancel.is_cancelled() {
            break;
        }
        let Some(name) = shared.places.node_name(node) else {
            break;
        };
        let started = now_ns();
        let mut here = trial.clone();
        here.id = format!("{}-{name}", trial.id);
        let failed = |why: String| {
            let mut obs = inj::Observation::unstarted(&here.id, &exp.info.phases);
            obs.error = Some(why);
            let mut ended = Ended::failed(obs);
            ended.node = Some(name.to_owned());
            judged(exp, &here, ended, started)
        };
        // The most this node can send: every process it may match, every step.
        let most = attach.lowered.max_targets * steps;
        let sent = shared.sent[experiment].load(Ordering::Relaxed);
        if sent + most > attach.max_signals {
            shared.cancel.cancel();
            records.push(failed(format!(
                "the run's blast radius: {sent} signal(s) sent, and this trial could send \
                 {most} more on node `{name}`, past max_signals {}; the run stops here",
                attach.max_signals
            )));
            break;
        }
        let env = TrialEnv::on_node();
        let placeholder = inj::AttachTarget {
            processes: Vec::new(),
            boot_id: String::new(),
            cwd: exp.cwd.clone(),
            cgroup: None,
            spare: Vec::new(),
        };
        let (iplan, first_offset) =
            plan::injector_plan(exp, &here, &env, &Default::default(), Some(placeholder));
        let mut rng = selection_rng(exp.info.seed, trial);
        let seed = rng.random::<u64>() ^ (node as u64).rotate_left(29);
        let lowered = &attach.lowered;
        let grace = iplan.grace;
        let limit = timeout + iplan.timeout + Duration::from_secs(15);
        let request = inj::wire::TrialRequest {
            format: inj::PLAN_FORMAT,
            node: name.to_owned(),
            run: shared.places.run_id().to_owned(),
            trial: iplan,
            after: crate::dispatch::after_plan(exp, &here, &env),
            bind: inj::wire::Bind {
                port: exp.needs_port,
                dir: exp.needs_dir,
            },
            select: Some(inj::wire::SelectPlan {
                selector: lowered.selector.clone(),
                guard: lowered.guard.clone(),
                count: lowered.count,
                max_targets: lowered.max_targets,
                seed,
                wait_ns: u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
            }),
        };
        let record = match shared.places.run_at(node, &request, limit) {
            None => break,
            Some(Err(failure)) => failed(failure.to_string()),
            Some(Ok(done)) => {
                shared.sent[experiment]
                    .fetch_add(signals_sent(&done.observation), Ordering::Relaxed);
                let ended = Ended {
                    obs: done.observation,
                    after: crate::runner::after_facts(done.after),
                    grace,
                    first_offset,
                    node: Some(name.to_owned()),
                };
                judged(exp, &here, ended, started)
            }
        };
        records.push(record);
    }
    records
}

/// Every signal a trial sent: each delivery to each process it hit, the SIGCONT of each
/// pause that was resumed, each orphan killed.
fn signals_sent(obs: &inj::Observation) -> usize {
    let deliveries: usize = obs
        .deliveries
        .iter()
        .map(|d| d.pids.len() * if d.resumed_ns.is_some() { 2 } else { 1 })
        .sum();
    deliveries + obs.orphans.iter().filter(|o| o.killed).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_sent_counts_against_the_blast_radius() {
        let mut obs = inj::Observation::unstarted("t", &[]);
        let delivery = |pids: Vec<i32>, resumed_ns| inj::Delivery {
            step: 0,
            signal: inj::Signal::TERM,
            aim: inj::Aim::Main,
            pids,
            phase: "up".into(),
            trigger_ns: 0,
            offset_ns: 0,
            delivered_ns: 0,
            latency_ns: 0,
            outcome: inj::DeliveryOutcome::Delivered,
            resumed_ns,
        };
        obs.deliveries = vec![delivery(vec![1, 2], None), delivery(vec![3], Some(5))];
        let orphan = |killed| inj::Orphan {
            pid: 9,
            comm: "h".into(),
            cmdline: String::new(),
            left_group: false,
            killed,
            kept: !killed,
        };
        obs.orphans = vec![orphan(true), orphan(false)];
        // Two processes hit, one paused and resumed (two signals), one orphan killed.
        assert_eq!(signals_sent(&obs), 2 + 2 + 1);
    }
}
