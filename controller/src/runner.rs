//! Running a planned run: baselines first, then fault trials in parallel, each judged and
//! announced as soon as it ends.
//!
//! Parallelism is a semaphore of `jobs` permits shared by all experiments; a trial holds its
//! permit through its recovery restart and check command, so `--jobs` bounds the number of
//! targets alive at once. Cancelling the token stops new trials from starting and makes the
//! running ones kill their targets; a last sweep kills anything still carrying this run's
//! token.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atropos_injector::{self as inj, CancellationToken, clock::now_ns};
use tokio::sync::Semaphore;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

use crate::judge::{self, After, FileState};
use crate::plan::{self, ExperimentPlan, PhaseLengths, PlannedTrial, RunPlan, TrialEnv};
use crate::record::{CheckRun, Recovery, RunEvent, TrialRecord};
use crate::template;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Trials alive at once.
    pub jobs: usize,
    /// Keep each trial's `${trial.dir}` after the run.
    pub keep_dirs: bool,
}

/// Default check command limit.
pub const DEFAULT_CHECK_LIMIT: Duration = Duration::from_secs(10);

struct Shared {
    permits: Semaphore,
    cancel: CancellationToken,
    events: UnboundedSender<RunEvent>,
    run_dir: PathBuf,
    ports: Mutex<HashSet<u16>>,
}

impl Shared {
    /// A free loopback port not yet handed to another trial of this run.
    fn port(&self) -> u16 {
        for _ in 0..64 {
            let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
                continue;
            };
            let Ok(addr) = listener.local_addr() else {
                continue;
            };
            let mut used = self.ports.lock().unwrap_or_else(|p| p.into_inner());
            if used.insert(addr.port()) {
                return addr.port();
            }
        }
        0
    }
}

/// Runs every trial of `plan`; returns the records of the trials that ran, in plan order.
pub async fn execute(
    plan: RunPlan,
    options: &RunOptions,
    events: UnboundedSender<RunEvent>,
    cancel: CancellationToken,
) -> Vec<Arc<TrialRecord>> {
    let run_dir = std::env::temp_dir().join(format!("atropos-{}", plan.run_id));
    let shared = Arc::new(Shared {
        permits: Semaphore::new(options.jobs.max(1)),
        cancel: cancel.clone(),
        events,
        run_dir: run_dir.clone(),
        ports: Mutex::new(HashSet::new()),
    });
    let mut experiments = JoinSet::new();
    for (order, exp) in plan.experiments.into_iter().enumerate() {
        let shared = shared.clone();
        experiments.spawn(async move { (order, run_experiment(Arc::new(exp), shared).await) });
    }
    let mut by_experiment = Vec::new();
    while let Some(done) = experiments.join_next().await {
        if let Ok(done) = done {
            by_experiment.push(done);
        }
    }
    by_experiment.sort_by_key(|(order, _)| *order);
    // Nothing of this run may outlive it, whatever happened above.
    inj::orphans::kill_run(&plan.run_id);
    if !options.keep_dirs {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    by_experiment
        .into_iter()
        .flat_map(|(_, records)| records)
        .collect()
}

async fn run_experiment(exp: Arc<ExperimentPlan>, shared: Arc<Shared>) -> Vec<Arc<TrialRecord>> {
    let mut records = Vec::new();
    let Some(baseline) = run_trial(&exp, &exp.baseline, &PhaseLengths::default(), &shared).await
    else {
        return records;
    };
    let lengths = PhaseLengths::from_baseline(&baseline.observation);
    records.push(baseline);
    let mut trials = JoinSet::new();
    for (i, trial) in exp.trials.iter().enumerate() {
        let (exp, shared, lengths, trial) =
            (exp.clone(), shared.clone(), lengths.clone(), trial.clone());
        trials.spawn(async move { (i, run_trial(&exp, &trial, &lengths, &shared).await) });
    }
    let mut done = Vec::new();
    while let Some(result) = trials.join_next().await {
        if let Ok((i, Some(record))) = result {
            done.push((i, record));
        }
    }
    done.sort_by_key(|(i, _)| *i);
    records.extend(done.into_iter().map(|(_, r)| r));
    records
}

/// Runs one trial with its after-checks and judges it; `None` if it never started.
async fn run_trial(
    exp: &ExperimentPlan,
    trial: &PlannedTrial,
    lengths: &PhaseLengths,
    shared: &Shared,
) -> Option<Arc<TrialRecord>> {
    let _permit = tokio::select! {
        biased;
        () = shared.cancel.cancelled() => return None,
        permit = shared.permits.acquire() => permit.ok()?,
    };
    if shared.cancel.is_cancelled() {
        return None;
    }
    let started = now_ns();
    let dir = shared.run_dir.join(&trial.id);
    if exp.needs_dir {
        let _ = std::fs::create_dir_all(&dir);
    }
    let port = if exp.needs_port { shared.port() } else { 0 };
    let env = TrialEnv { port, dir };
    let (iplan, first_offset) = plan::injector_plan(exp, trial, &env, lengths);
    let obs = inj::run_trial(&iplan, &shared.cancel).await;
    let after = if obs.error.is_none() && obs.stop != inj::StopReason::Interrupted {
        after_checks(exp, trial, &env, &shared.cancel).await
    } else {
        After::default()
    };
    let phases = &exp.info.phases;
    let judgement = judge::judge(trial, phases, &obs, &after, iplan.grace);
    let first = obs.deliveries.first();
    let offset_spec = trial.fault.and_then(|f| {
        let steps = plan::steps_of(&exp.loaded.experiment.spec.faults[f]);
        let at = steps.first()?.at.clone()?;
        at.phase.as_ref()?;
        Some(at.offset.map_or_else(|| "0s".to_owned(), |o| o.to_string()))
    });
    let record = Arc::new(TrialRecord {
        id: trial.id.clone(),
        experiment: exp.info.name.clone(),
        fault: trial.fault_name.clone(),
        index: trial.index,
        offset_spec,
        offset_fraction: trial.fractions.first().copied().flatten(),
        offset_ns: first_offset,
        injected_phase: first.map(|d| d.phase.clone()),
        latency_ns: first.map(|d| d.latency_ns),
        delivery: first.map(|d| d.outcome),
        observation: obs,
        recovery: after.recovery,
        check: after.check,
        expectations: judgement.expectations,
        verdict: judgement.verdict,
        reasons: judgement.reasons,
        duration_ns: now_ns() - started,
    });
    let _ = shared.events.send(RunEvent::Trial(record.clone()));
    Some(record)
}

/// Files, the check command and the recovery restart, in that order: files describe the
/// state the fault left, before anything else touches it.
async fn after_checks(
    exp: &ExperimentPlan,
    trial: &PlannedTrial,
    env: &TrialEnv,
    cancel: &CancellationToken,
) -> After {
    let expect = &trial.expect;
    let vars = env.vars(trial);
    let cwd = exp.cwd.clone();
    let mut after = After::default();
    if let Some(files) = &expect.files {
        let state = |p: &String, must_exist: bool| {
            let expanded = template::expand(p, &vars);
            let exists = plan::resolve(&cwd, &expanded).exists();
            FileState {
                path: expanded,
                must_exist,
                exists,
            }
        };
        after
            .files
            .extend(files.present.iter().map(|p| state(p, true)));
        after
            .files
            .extend(files.absent.iter().map(|p| state(p, false)));
    }
    if let Some(check) = &expect.check {
        let argv = plan::argv(&check.command, &cwd, &vars);
        let env_vars = vec![("ATROPOS_TRIAL".to_owned(), format!("{}-check", trial.id))];
        let limit = check.within.unwrap_or(DEFAULT_CHECK_LIMIT);
        let result = inj::command::run_command(&argv, &cwd, &env_vars, limit, 20).await;
        let mut output = result.output;
        if let Some(error) = result.error {
            output.push(error);
        }
        after.check = Some(CheckRun {
            command: argv,
            code: if result.timed_out {
                None
            } else {
                result.exit.and_then(|e| e.code)
            },
            duration_ns: result.duration_ns,
            output,
        });
    }
    if let Some(recover) = &expect.recover
        && let Some(index) = exp.info.phases.iter().position(|p| *p == recover.reaches)
    {
        let target = plan::command(&exp.loaded, &cwd, &vars);
        let rplan = inj::TrialPlan {
            id: format!("{}-r", trial.id),
            target,
            phases: plan::phase_plans(&exp.loaded.experiment.spec, &vars, &cwd),
            steps: Vec::new(),
            watches: Vec::new(),
            finish: inj::Finish::UntilPhase(index),
            hold: Duration::ZERO,
            grace: Duration::from_millis(100),
            timeout: recover.within + Duration::from_millis(50),
            sample_resources: false,
            tail_lines: 10,
        };
        let obs = inj::run_trial(&rplan, cancel).await;
        let reached_ns = obs.phases.get(index).and_then(|p| p.entered_ns);
        after.recovery = Some(Recovery {
            phase: recover.reaches.clone(),
            reached_ns,
            observation: obs,
        });
    }
    after
}
