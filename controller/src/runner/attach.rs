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

use super::{Ended, Shared, judged};
use crate::dispatch::after_plan;
use crate::judge::{After, nanos};
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

/// What a trial selected: the processes it hits, and every process that matched (none of
/// which is a replacement when the service recovers: a worker the fault spared is not one).
pub struct Selected {
    /// The `count` drawn.
    pub chosen: Vec<Process>,
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

fn identity(p: &Process) -> Identity {
    Identity {
        pid: p.pid,
        starttime: p.starttime,
    }
}

/// The generator of one trial's selection: from the experiment's seed and the trial's
/// place in the plan, so a replay with the same seed draws the same way.
pub fn selection_rng(seed: u64, trial: &PlannedTrial) -> rand::rngs::ChaCha8Rng {
    let place = (trial.fault.map_or(0, |f| f as u64 + 1) << 32) | u64::from(trial.index);
    rand::rngs::ChaCha8Rng::seed_from_u64(seed ^ SELECTION_STREAM ^ place.rotate_left(17))
}

/// The plan's form of `chosen`. A service selected by its cgroup (`cgroup:` naming it
/// exactly, or `systemd_unit:` naming a `.service`) is that cgroup: its other members are
/// the target's too. Never a cgroup that holds atropos, nor one wider than the selector
/// names (a process's leaf under `cgroup: /user.slice` is a login session, not a service).
fn target(
    chosen: &[Process],
    matched: &[Identity],
    attach: &AttachPlan,
    cwd: &std::path::Path,
) -> inj::AttachTarget {
    let ids: Vec<Identity> = chosen.iter().map(identity).collect();
    inj::AttachTarget {
        spare: matched
            .iter()
            .filter(|m| !ids.contains(m))
            .copied()
            .collect(),
        cgroup: service_cgroup(chosen, &attach.lowered.selector),
        processes: chosen.iter().map(identity).collect(),
        boot_id: inj::journal::boot_id().to_owned(),
        cwd: cwd.to_owned(),
    }
}

/// The cgroup every chosen process is in that the selector names as the service's.
fn service_cgroup(
    chosen: &[Process],
    selector: &atropos_injector::attach::Selector,
) -> Option<String> {
    let first = chosen.first()?;
    let path = first.cgroup.trim_end_matches('/');
    let named = match (&selector.cgroup, &selector.systemd_unit) {
        (Some(want), _) if !want.contains(':') && want.trim_end_matches('/') == path => {
            path.to_owned()
        }
        (_, Some(unit)) if unit.ends_with(".service") => {
            let at = path.split('/').position(|c| c == unit)?;
            path.split('/').take(at + 1).collect::<Vec<_>>().join("/")
        }
        _ => return None,
    };
    let inside = |p: &str| p == named || p.starts_with(&format!("{named}/"));
    let mine = atropos_injector::cgroup::v2_path_of(i32::try_from(std::process::id()).ok()?)?;
    let all_inside = chosen
        .iter()
        .all(|p| inside(p.cgroup.trim_end_matches('/')));
    (!named.is_empty() && named != "/" && all_inside && !inside(&mine)).then_some(named)
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
    let hit = target(&chosen, &matched, attach, &exp.cwd);
    let (iplan, first_offset) =
        plan::injector_plan(exp, trial, &env, &Default::default(), Some(hit.clone()));
    // Where each log ends before the fault: the recovery reads what was written since, so a
    // replacement's "ready" line written before it is selected still counts.
    let marks = log_marks(&iplan.phases);
    let obs = inj::trial::run_blocking(&iplan, &shared.cancel);
    let signals = signals_sent(&obs);
    shared.sent[experiment].fetch_add(signals, Ordering::Relaxed);
    let mut after = After::default();
    if obs.error.is_none() && obs.stop != inj::StopReason::Interrupted {
        // Files first (the state the fault left), then the recovery, then the check.
        let mut todo = after_plan(exp, trial, &env);
        let check = todo.check.take();
        after.files = inj::after::run(&todo, &shared.cancel).files;
        if let Some(recover) = &trial.expect.recover {
            let ctx = RecoveryContext {
                hit: &hit,
                matched: &matched,
                obs: &obs,
                marks: &marks,
            };
            after.recovery = recover_service(exp, attach, trial, &ctx, recover, shared);
        }
        todo = inj::after::AfterPlan {
            check,
            ..Default::default()
        };
        after.check = inj::after::run(&todo, &shared.cancel).check;
    }
    let ended = Ended {
        obs,
        after,
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
    let RecoveryContext {
        hit,
        matched,
        obs,
        marks,
    } = *ctx;
    let index = exp.info.phases.iter().position(|p| *p == recover.reaches)?;
    // Monotonic times: the observation's are relative to its start.
    let exit_at = obs.exit.as_ref().map(|e| obs.started_ns + e.at_ns);
    // From the last signal sent before the exit was seen.
    let detected_ns = exit_at.and_then(|exit| {
        let sent = obs
            .deliveries
            .iter()
            .map(|d| obs.started_ns + d.delivered_ns)
            .filter(|&at| at <= exit)
            .max()?;
        Some(exit - sent)
    });
    let from = exit_at.unwrap_or_else(now_ns);
    let deadline = from.saturating_add(nanos(recover.within));
    let vars = TrialEnv {
        port: 0,
        dir: shared.run_dir.join(&trial.id),
    };
    let vars = vars.vars(trial);
    // A replacement's log lines count from where each log ended before the fault; a process
    // that stayed up may simply still be in the phase, so its earlier lines count too.
    let mut phases = plan::phase_plans(&exp.loaded.experiment.spec, &vars, &exp.cwd);
    if exit_at.is_some() {
        for (phase, mark) in phases.iter_mut().zip(marks) {
            if let inj::Marker::Log { from, .. } = &mut phase.marker {
                *from = *mark;
            }
        }
    }
    // Watches `subject` until it is in the phase, or until the deadline.
    let probe = |subject: inj::AttachTarget| {
        let rplan = inj::TrialPlan {
            format: inj::PLAN_FORMAT,
            id: format!("{}-r", trial.id),
            target: inj::Target::Attach(subject),
            phases: phases.clone(),
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
        let reached = robs
            .phases
            .get(index)
            .and_then(|p| p.entered_ns)
            .map(|at| (robs.started_ns + at).saturating_sub(from));
        (robs, reached)
    };
    let times = |replaced_ns, pid, survived| Replacement {
        detected_ns,
        replaced_ns,
        pid,
        survived,
    };
    if exit_at.is_none() {
        // The fault did not take it down: recovered once it is in the phase (still, or
        // again).
        let (robs, reached_ns) = probe(hit.clone());
        return Some(Recovery {
            phase: recover.reaches.clone(),
            reached_ns,
            observation: robs,
            attached: Some(times(None, None, true)),
        });
    }
    // A new process, none of those that matched at selection; if one dies before it is in
    // the phase, the next, until the deadline.
    let mut rng = selection_rng(exp.info.seed ^ RECOVERY_STREAM, trial);
    let mut passed_over: Vec<Identity> = matched.to_vec();
    let mut last = None;
    while now_ns() < deadline && !shared.cancel.is_cancelled() {
        let left = deadline.saturating_sub(now_ns());
        let Some(fresh) = select_other(attach, &passed_over, &mut rng, left, &shared.cancel) else {
            break;
        };
        let replaced_ns = now_ns().saturating_sub(from);
        passed_over.push(identity(&fresh));
        let (robs, reached_ns) = probe(target(
            std::slice::from_ref(&fresh),
            &passed_over,
            attach,
            &exp.cwd,
        ));
        let gone = robs.stop == inj::StopReason::Exited;
        let recovery = Recovery {
            phase: recover.reaches.clone(),
            reached_ns,
            observation: robs,
            attached: Some(times(Some(replaced_ns), Some(fresh.pid), false)),
        };
        if reached_ns.is_some() || !gone {
            return Some(recovery);
        }
        last = Some(recovery);
    }
    Some(last.unwrap_or_else(|| {
        let mut robs = inj::Observation::unstarted(&format!("{}-r", trial.id), &exp.info.phases);
        robs.error = Some("no replacement process appeared".to_owned());
        Recovery {
            phase: recover.reaches.clone(),
            reached_ns: None,
            observation: robs,
            attached: Some(times(None, None, false)),
        }
    }))
}

/// What a recovery starts from: the processes the trial hit, what it saw, and where each
/// phase's log file ended before the fault.
#[derive(Clone, Copy)]
struct RecoveryContext<'a> {
    hit: &'a inj::AttachTarget,
    matched: &'a [Identity],
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

/// A process the selector matches now that is none of `excluded`: waits up to `limit_ns`.
fn select_other(
    attach: &AttachPlan,
    excluded: &[Identity],
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
                .filter(|p| !excluded.contains(&identity(p)))
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

#[cfg(test)]
mod tests {
    use atropos_injector::attach::Selector;

    use super::*;

    fn process(pid: i32, cgroup: &str) -> Process {
        Process {
            pid,
            starttime: 1,
            ppid: 1,
            uid: 0,
            argv: vec!["svc".into()],
            cgroup: cgroup.into(),
        }
    }

    #[test]
    fn a_service_is_its_cgroup_only_where_the_selector_names_that_cgroup() {
        let by_cgroup = |want: &str| Selector {
            cgroup: Some(want.into()),
            ..Selector::default()
        };
        let by_unit = |unit: &str| Selector {
            systemd_unit: Some(unit.into()),
            ..Selector::default()
        };
        let svc = [process(10, "/system.slice/redis.service")];
        let cases: [(&str, &[Process], Selector, Option<&str>); 7] = [
            (
                "named exactly",
                &svc,
                by_cgroup("/system.slice/redis.service"),
                Some("/system.slice/redis.service"),
            ),
            (
                "a wider cgroup than the process's",
                &svc,
                by_cgroup("/system.slice"),
                None,
            ),
            (
                "a v1 controller path",
                &svc,
                by_cgroup("cpu:/system.slice/redis.service"),
                None,
            ),
            (
                "a service unit",
                &[process(10, "/system.slice/redis.service/sub")],
                by_unit("redis.service"),
                Some("/system.slice/redis.service"),
            ),
            (
                "a unit that is no service (a session scope)",
                &[process(10, "/user.slice/session-1.scope")],
                by_unit("session-1.scope"),
                None,
            ),
            (
                "processes in two cgroups",
                &[process(10, "/a.service"), process(11, "/b.service")],
                by_cgroup("/a.service"),
                None,
            ),
            ("not selected by cgroup", &svc, Selector::default(), None),
        ];
        for (name, chosen, selector, want) in cases {
            assert_eq!(service_cgroup(chosen, &selector).as_deref(), want, "{name}");
        }
        // Never the cgroup atropos itself is in.
        let mine = atropos_injector::cgroup::v2_path_of(std::process::id() as i32).unwrap();
        if mine != "/" {
            let here = [process(10, &mine)];
            assert_eq!(service_cgroup(&here, &by_cgroup(&mine)), None);
        }
    }

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
