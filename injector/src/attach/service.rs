//! A running service around the processes a trial hits: the trial's attach target built
//! from what was selected (its cgroup where the selector names one), and its recovery by a
//! replacement process after a fault took it down.
//!
//! Recovery is measured where the service runs, in-process or on an injector node, by this
//! one function ([`recover`]): after the exit, a process that the same selector matches and
//! that did not match at selection (a worker the fault spared is no replacement) must appear
//! and reach the phase, all within the deadline; if one dies before the phase, the next one
//! is tried. Times are kept from the exit: to detect it (from the last signal), to replace
//! (a new process) and to recover (in the phase: MTTR).

use std::path::Path;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Guard, Process, Selector};
use crate::clock::now_ns;
use crate::logfollow::LogMark;
use crate::plan::{AttachTarget, Finish, Identity, Marker, PLAN_FORMAT, PhasePlan, Target};
use crate::record::{Observation, StopReason};

/// The least time between two resolutions of the selector while waiting for a replacement
/// (on a host with thousands of processes a resolution takes tens of milliseconds, and the
/// wait is at least as long: half a core at most).
const RETRY: Duration = Duration::from_millis(5);

/// The longest a recovery is watched, whatever a plan asks (a node takes plans from afar).
pub const MAX_WITHIN: Duration = Duration::from_secs(3600);

/// The identity a selected process is pinned by.
pub fn identity(p: &Process) -> Identity {
    Identity {
        pid: p.pid,
        starttime: p.starttime,
    }
}

/// The attach target of `chosen`, among `matched` (every process the selector matched at
/// selection; the others are the target's spare peers, never its descendants). A service
/// selected by its cgroup (`cgroup:` naming it exactly, or `systemd_unit:` naming a
/// `.service`) is that cgroup: its other members are the target's too.
pub fn target(
    chosen: &[Process],
    matched: &[Identity],
    selector: &Selector,
    cwd: &Path,
) -> AttachTarget {
    let ids: Vec<Identity> = chosen.iter().map(identity).collect();
    AttachTarget {
        spare: matched
            .iter()
            .filter(|m| !ids.contains(m))
            .copied()
            .collect(),
        cgroup: service_cgroup(chosen, selector),
        processes: ids,
        boot_id: crate::journal::boot_id().to_owned(),
        cwd: cwd.to_owned(),
    }
}

/// The cgroup every chosen process is in that the selector names as the service's. Never a
/// cgroup that holds this process (atropos or its injector), nor one wider than the
/// selector names (a process's leaf under `cgroup: /user.slice` is a login session, not a
/// service).
pub fn service_cgroup(chosen: &[Process], selector: &Selector) -> Option<String> {
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
    let mine = crate::cgroup::v2_path_of(i32::try_from(std::process::id()).ok()?)?;
    let all_inside = chosen
        .iter()
        .all(|p| inside(p.cgroup.trim_end_matches('/')));
    (!named.is_empty() && named != "/" && all_inside && !inside(&mine)).then_some(named)
}

/// Where a phase's lines are read from in a recovery: what was written after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Where a log file ended.
    Log(LogMark),
    /// A wall-clock time, µs since the epoch: the journal's entries from then on.
    Journal(u64),
}

/// For each phase, where its log file or journal ends now (`None` for other markers):
/// taken before the fault, so that a replacement's lines written before it is found still
/// count.
pub fn marks(phases: &[PhasePlan]) -> Vec<Option<Mark>> {
    let now = crate::journald::realtime_us();
    phases
        .iter()
        .map(|p| match &p.marker {
            Marker::Log { path, .. } => Some(Mark::Log(LogMark::of(path))),
            Marker::Journald { .. } => Some(Mark::Journal(now)),
            _ => None,
        })
        .collect()
}

/// How a running service's recovery is watched after a trial against it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceRecoveryPlan {
    /// The name of the phase a replacement must reach.
    pub phase: String,
    /// Its index among the trial's phases.
    pub index: usize,
    /// How long from the exit (or from the trial's end, if the process stayed up), ns.
    pub within_ns: u64,
    /// The selector that chose the target: a replacement is what it matches.
    pub selector: Selector,
    /// The refusals beyond the fixed ones.
    pub guard: Guard,
    /// The seed of the draw when several replacements appear.
    pub seed: u64,
}

impl PartialEq for ServiceRecoveryPlan {
    fn eq(&self, other: &ServiceRecoveryPlan) -> bool {
        // Regexes have no equality; their JSON forms do.
        serde_json::to_value(self).ok() == serde_json::to_value(other).ok()
    }
}

/// How a running service came back after a fault took its process: the recovery's
/// `reached_ns` counts from the exit being seen to the phase (time to recover, MTTR).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    /// From the fault's last signal to the exit being seen (time to detect); `None` when
    /// no signal preceded it.
    pub detected_ns: Option<u64>,
    /// From the exit to a new process matching the selector (time to replace); `None` if
    /// none appeared in time.
    pub replaced_ns: Option<u64>,
    /// The replacement's pid.
    pub pid: Option<i32>,
    /// The process hit did not exit: recovery was it being in the phase, still or again.
    #[serde(default)]
    pub survived: bool,
}

/// What [`recover`] found: when the phase was reached (from the exit), what the watched
/// process did, and the replacement's times.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRecovery {
    /// When the phase was reached, from the exit; `None` if it was not.
    pub reached_ns: Option<u64>,
    /// What the last process watched did.
    pub observation: Observation,
    /// The times of the replacement.
    pub replacement: Replacement,
}

/// What a trial against a service leaves for its recovery: the trial's plan (its phases,
/// its target as it ran), the observation, and where each phase's log ended before it.
#[derive(Clone, Copy)]
pub struct AfterTrial<'a> {
    /// The trial's id (the recovery's observation is `ID-r`).
    pub id: &'a str,
    /// The trial's phases, as planned.
    pub phases: &'a [PhasePlan],
    /// The target the trial hit.
    pub hit: &'a AttachTarget,
    /// What the trial saw.
    pub obs: &'a Observation,
    /// Where each phase's log or journal ended before the trial ([`marks`]).
    pub marks: &'a [Option<Mark>],
}

/// After a fault took the service's process: waits for a process that matches the same
/// selector and matched nothing at selection, then for it to reach the phase; all within
/// `within` of the exit. A target still running is watched until it is in the phase (the
/// fault did not take it down; the service must still be in its steady state).
pub fn recover(
    plan: &ServiceRecoveryPlan,
    trial: AfterTrial<'_>,
    cancel: &CancellationToken,
) -> ServiceRecovery {
    let AfterTrial {
        id,
        phases,
        hit,
        obs,
        marks,
    } = trial;
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
    let within = plan
        .within_ns
        .min(u64::try_from(MAX_WITHIN.as_nanos()).unwrap_or(u64::MAX));
    let deadline = from.saturating_add(within);
    // A replacement's log lines count from where each log ended before the fault; a process
    // that stayed up may simply still be in the phase, so its earlier lines count too.
    let mut phases = phases.to_vec();
    if exit_at.is_some() {
        for (phase, mark) in phases.iter_mut().zip(marks) {
            match (&mut phase.marker, mark) {
                (Marker::Log { from, .. }, Some(Mark::Log(mark))) => *from = Some(*mark),
                (Marker::Journald { since_us, .. }, Some(Mark::Journal(at))) => {
                    *since_us = Some(*at);
                }
                _ => {}
            }
        }
    }
    let index = plan.index;
    // Watches `subject` until it is in the phase, or until the deadline.
    let probe = |subject: AttachTarget| {
        let rplan = crate::plan::TrialPlan {
            format: PLAN_FORMAT,
            id: format!("{id}-r"),
            target: Target::Attach(subject),
            phases: phases.clone(),
            steps: Vec::new(),
            watches: Vec::new(),
            finish: Finish::UntilPhase(index),
            hold: Duration::ZERO,
            grace: Duration::ZERO,
            timeout: Duration::from_nanos(deadline.saturating_sub(now_ns()).max(1)),
            sample_resources: false,
            tail_lines: 0,
            kill_orphans: false,
        };
        let robs = crate::trial::run_blocking(&rplan, cancel);
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
        let (observation, reached_ns) = probe(hit.clone());
        return ServiceRecovery {
            reached_ns,
            observation,
            replacement: times(None, None, true),
        };
    }
    // A new process, none of those that matched at selection; if one dies before it is in
    // the phase, the next, until the deadline.
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(plan.seed);
    let mut passed_over: Vec<Identity> = hit.processes.clone();
    passed_over.extend(hit.spare.iter().copied());
    let mut last = None;
    while now_ns() < deadline && !cancel.is_cancelled() {
        let left = deadline.saturating_sub(now_ns());
        let Some(fresh) = select_other(plan, &passed_over, &mut rng, left, cancel) else {
            break;
        };
        let replaced_ns = now_ns().saturating_sub(from);
        passed_over.push(identity(&fresh));
        let (observation, reached_ns) = probe(target(
            std::slice::from_ref(&fresh),
            &passed_over,
            &plan.selector,
            &hit.cwd,
        ));
        let gone = observation.stop == StopReason::Exited;
        let recovery = ServiceRecovery {
            reached_ns,
            observation,
            replacement: times(Some(replaced_ns), Some(fresh.pid), false),
        };
        if reached_ns.is_some() || !gone {
            return recovery;
        }
        last = Some(recovery);
    }
    last.unwrap_or_else(|| {
        let names: Vec<String> = phases.iter().map(|p| p.name.clone()).collect();
        let mut observation = Observation::unstarted(&format!("{id}-r"), &names);
        observation.error = Some("no replacement process appeared".to_owned());
        ServiceRecovery {
            reached_ns: None,
            observation,
            replacement: times(None, None, false),
        }
    })
}

/// A process the selector matches now that is none of `excluded`: waits up to `limit_ns`.
fn select_other(
    plan: &ServiceRecoveryPlan,
    excluded: &[Identity],
    rng: &mut impl rand::Rng,
    limit_ns: u64,
    cancel: &CancellationToken,
) -> Option<Process> {
    let deadline = Instant::now() + Duration::from_nanos(limit_ns);
    loop {
        let scan = Instant::now();
        if let Ok(selection) = plan.selector.resolve(&plan.guard) {
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
        std::thread::sleep(RETRY.max(scan.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

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
        let mine = crate::cgroup::v2_path_of(std::process::id() as i32).unwrap();
        if mine != "/" {
            let here = [process(10, &mine)];
            assert_eq!(service_cgroup(&here, &by_cgroup(&mine)), None);
        }
    }
}
