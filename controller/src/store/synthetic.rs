//! Synthetic runs: plausible records made from a seed, for tests, benchmarks and demos of
//! the dashboard without running any process.
//!
//! Each experiment has a few phases and faults; each fault aims at one phase with a random
//! offset, so it usually lands in that phase and sometimes in the next one (coverage spreads
//! as it does for real). Some fault × phase cells fail now and then, a few trials error.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use atropos_injector::{
    Aim, Delivery, DeliveryOutcome, Exit, Observation, PhaseEntry, Signal, StopReason, record::Line,
};

use crate::record::{
    CiInfo, ExpectationResult, ExperimentInfo, RunEnd, RunEvent, RunInfo, RunStatus, TrialRecord,
    Trigger, Verdict,
};
use crate::report::model::{FaultKind, landings};

/// A small deterministic generator (SplitMix64): the same seed gives the same records.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A fraction in `[0, 1)`.
    pub fn fraction(&mut self) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "53 random bits")]
        let f = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        f
    }
}

/// `len` random hex digits.
fn hex_of(rng: &mut Rng, len: usize) -> String {
    let mut s = String::with_capacity(len + 16);
    while s.len() < len {
        s.push_str(&format!("{:016x}", rng.next_u64()));
    }
    s.truncate(len);
    s
}

const SIGNALS: [&str; 5] = ["SIGTERM", "SIGKILL", "SIGINT", "SIGHUP", "SIGQUIT"];

/// The coverage kind of synthetic fault number `f` (its signal in [`SIGNALS`]).
fn kind(f: usize) -> FaultKind {
    [
        FaultKind::Sigterm,
        FaultKind::Sigkill,
        FaultKind::Sigint,
        FaultKind::Other,
        FaultKind::Other,
    ][f % SIGNALS.len()]
}

/// The kinds `faults` synthetic faults use, in column order.
fn kinds(faults: usize) -> Vec<FaultKind> {
    let mut kinds: Vec<FaultKind> = (0..faults).map(kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    kinds
}

/// The experiment number `i` of a synthetic store: `phases` phases and `faults` faults.
pub fn experiment(i: usize, phases: usize, faults: usize) -> ExperimentInfo {
    let name = format!("service-{i:03}-lifecycle");
    let phase_names: Vec<String> = (0..phases)
        .map(|p| match p {
            0 => "init.config".to_owned(),
            1 => "init.db".to_owned(),
            p if p + 1 == phases => "ready".to_owned(),
            p => format!("init.step{p}"),
        })
        .collect();
    let fault_names: Vec<String> = (0..faults)
        .map(|f| {
            let signal = SIGNALS[f % SIGNALS.len()]
                .trim_start_matches("SIG")
                .to_lowercase();
            let phase = &phase_names[f % phases.max(1)];
            format!("{signal}-at-{phase}")
        })
        .collect();
    let source = format!(
        "apiVersion: atropos/v1\nkind: Experiment\nmetadata: {{ name: {name} }}\n# synthetic\n"
    );
    ExperimentInfo {
        name,
        file: PathBuf::from(format!("experiments/service-{i:03}.yaml")),
        content_hash: hex_of(&mut Rng::new(i as u64 + 1), 64),
        source,
        labels: BTreeMap::from([("team".to_owned(), format!("team-{}", i % 7))]),
        phases: phase_names,
        faults: fault_names,
        seed: 0,
        planned_trials: 0,
    }
}

/// The events of one run of `experiments` (`trials` per fault, plus a baseline each).
pub fn run(
    uid: &str,
    started_at: f64,
    seed: u64,
    experiments: &[ExperimentInfo],
    trials: u32,
) -> Vec<RunEvent> {
    let mut rng = Rng::new(seed);
    let experiments: Vec<ExperimentInfo> = experiments
        .iter()
        .map(|e| ExperimentInfo {
            seed,
            planned_trials: 1 + e.faults.len() * trials as usize,
            ..e.clone()
        })
        .collect();
    let info = RunInfo {
        containment: None,
        id: uid.to_owned(),
        trigger: Trigger::Ci,
        seed,
        started_at,
        version: crate::VERSION.to_owned(),
        ci: CiInfo {
            provider: Some("github".into()),
            commit: Some(hex_of(&mut rng, 40)),
            branch: Some("main".into()),
            job: None,
        },
        fault_kinds: experiments
            .iter()
            .map(|e| (e.name.clone(), kinds(e.faults.len())))
            .collect(),
        experiments: experiments.clone(),
    };
    let mut events = vec![RunEvent::Started(Arc::new(info))];
    let (mut passed, mut failed, mut errors) = (0, 0, 0);
    for exp in &experiments {
        let mut faults = vec![None];
        for (f, name) in exp.faults.iter().enumerate() {
            faults.extend((0..trials).map(|i| Some((f, name.as_str(), i))));
        }
        for fault in faults {
            let record = trial(&mut rng, uid, exp, fault);
            match record.verdict {
                Verdict::Pass => passed += 1,
                Verdict::Fail => failed += 1,
                Verdict::Error => errors += 1,
            }
            events.push(RunEvent::Trial(Arc::new(record)));
        }
    }
    events.push(RunEvent::Finished(Arc::new(RunEnd {
        ended_at: started_at + 60.0,
        status: RunStatus::Finished,
        passed,
        failed,
        errors,
        reason: None,
        probes: Vec::new(),
    })));
    events
}

fn line(at_ns: u64, text: &str) -> Line {
    Line {
        at_ns,
        text: text.to_owned(),
    }
}

/// One trial of `exp`: the baseline (`None`) or trial `index` of fault number `f`.
pub fn trial(
    rng: &mut Rng,
    run: &str,
    exp: &ExperimentInfo,
    fault: Option<(usize, &str, u32)>,
) -> TrialRecord {
    let ms = 1_000_000;
    let mut at = 0;
    let mut phases = Vec::new();
    for name in &exp.phases {
        at += (5 + rng.below(30)) * ms;
        phases.push(PhaseEntry {
            name: name.clone(),
            entered_ns: Some(at),
            evidence: Some(format!("line: {name} begins")),
        });
    }
    let ready_end = at + 200 * ms;
    let (fault_name, index) = fault.map_or(("baseline", 0), |(_, n, i)| (n, i));
    let short = fault.map_or_else(|| "b".to_owned(), |(f, _, i)| format!("{f}-{i}"));
    let mut deliveries = Vec::new();
    let mut injected = None;
    let mut latency = None;
    let mut offset = None;
    let mut verdict = Verdict::Pass;
    let exit_at;
    let mut exit = Exit {
        code: Some(0),
        signal: None,
        core_dumped: false,
        at_ns: 0,
    };
    let stop;
    if let Some((f, _, _)) = fault {
        let target = f % phases.len().max(1);
        let start = phases.get(target).and_then(|p| p.entered_ns).unwrap_or(0);
        let end = phases
            .get(target + 1)
            .and_then(|p| p.entered_ns)
            .unwrap_or(ready_end);
        // Offsets spread a little past the phase: sometimes the next phase is hit.
        let window = (end - start) * 5 / 4;
        let off = rng.below(window.max(1));
        let lat = 20_000 + rng.below(80_000) + rng.below(4) * rng.below(2 * ms);
        let delivered = start + off + lat;
        let in_phase = atropos_injector::record::phase_at(&phases, delivered);
        let signal = Signal::try_from(SIGNALS[f % SIGNALS.len()]).expect("a known signal name");
        deliveries.push(Delivery {
            step: 0,
            signal,
            aim: Aim::Main,
            pids: vec![4242],
            phase: in_phase.clone(),
            trigger_ns: start,
            offset_ns: off,
            delivered_ns: delivered,
            latency_ns: lat,
            outcome: DeliveryOutcome::Delivered,
            resumed_ns: None,
        });
        // One experiment in three has a flaky cell: a fault hitting its second phase fails
        // one time in four. Elsewhere a failure is rare.
        let flaky =
            target == 1 && exp.content_hash.as_bytes()[0].is_multiple_of(3) && rng.below(4) == 0;
        let flaky = flaky || (exp.seed.is_multiple_of(3) && rng.below(200) == 0);
        if rng.below(400) == 0 {
            verdict = Verdict::Error;
        } else if flaky || rng.below(300) == 0 {
            verdict = Verdict::Fail;
        }
        exit_at = delivered + (1 + rng.below(20)) * ms;
        if signal == Signal::KILL || verdict == Verdict::Fail {
            exit.code = None;
            exit.signal = Some(signal);
        }
        injected = Some(in_phase);
        latency = Some(lat);
        offset = Some(off);
        stop = StopReason::Exited;
    } else {
        exit_at = ready_end + 3 * ms;
        stop = StopReason::Stopped;
    }
    exit.at_ns = exit_at;
    phases.retain(|p| p.entered_ns.is_some_and(|t| t < exit_at));
    let exit_ok = exit.code == Some(0) || exit.signal == Some(Signal::KILL);
    let expectations = vec![
        ExpectationResult {
            name: "exit".into(),
            passed: exit_ok,
            expected: "exit code 0 within 5s".into(),
            actual: exit.to_string(),
        },
        ExpectationResult {
            name: "stdout.contains[0]".into(),
            passed: verdict != Verdict::Fail,
            expected: "a line matching `cleanup done`".into(),
            actual: if verdict == Verdict::Fail {
                "no line matched".into()
            } else {
                "seen".into()
            },
        },
        ExpectationResult {
            name: "orphans".into(),
            passed: true,
            expected: "no orphaned process".into(),
            actual: "none".into(),
        },
    ];
    let mut reasons: Vec<String> = expectations
        .iter()
        .filter(|e| !e.passed)
        .map(ExpectationResult::reason)
        .collect();
    let error = (verdict == Verdict::Error).then(|| "the target did not start".to_owned());
    if let Some(e) = &error {
        reasons.push(e.clone());
    }
    let mut stdout: Vec<Line> = phases
        .iter()
        .map(|p| line(p.entered_ns.unwrap_or(0), &format!("{} begins", p.name)))
        .collect();
    if verdict == Verdict::Pass {
        stdout.push(line(exit_at, "cleanup done"));
    }
    let id = format!("{run}-{}-{short}", exp.content_hash.get(..6).unwrap_or(""));
    TrialRecord {
        id: id.clone(),
        experiment: exp.name.clone(),
        fault: fault_name.to_owned(),
        index,
        offset_spec: fault.map(|_| "random".to_owned()),
        offset_fraction: offset.map(|_| rng.fraction()),
        offset_ns: offset,
        injected_phase: injected,
        latency_ns: latency,
        delivery: fault.map(|_| DeliveryOutcome::Delivered),
        landed: match fault {
            Some((f, _, _)) => landings(&[kind(f)], &deliveries),
            None => Vec::new(),
        },
        observation: Observation {
            trial_id: id,
            pid: Some(4242),
            started_ns: 1_000_000_000,
            ended_ns: exit_at + ms,
            phases,
            deliveries,
            skipped: Vec::new(),
            stop_signal: None,
            exit: Some(exit),
            stop,
            orphans: Vec::new(),
            watches: Vec::new(),
            stdout_tail: stdout,
            stderr_tail: Vec::new(),
            lines: (4, 0),
            resources: None,
            missed: None,
            error,
        },
        recovery: None,
        check: None,
        expectations,
        verdict,
        reasons,
        duration_ns: exit_at + 2 * ms,
        node: None,
    }
}
