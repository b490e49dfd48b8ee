//! Running a planned run: baselines first, then fault trials in parallel, each judged and
//! announced shortly after it ends.
//!
//! `jobs` lanes (threads of the blocking pool) take work from one board shared by all
//! experiments: every experiment's baseline first, then, once a baseline has measured its
//! phases, that experiment's trials. A lane runs one trial at a time to its end, with its
//! recovery restart and check command, judges it and takes the next, so `--jobs` bounds the
//! number of targets alive at once. Nothing wakes another thread between two trials: on
//! this kind of machine each cross-thread hand-off costs tens of microseconds, which the
//! engine benchmark counts against the bare loop. Finished records reach `events` in
//! batches, every [`ANNOUNCE_EVERY`], from the async side.
//!
//! Cancelling the token stops new trials from starting and makes the running ones kill
//! their targets; a last sweep kills anything still carrying this run's token.

pub mod attach;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use atropos_injector::{self as inj, CancellationToken, clock::now_ns};
use tokio::sync::mpsc::Sender;

use crate::judge::{self, After};
use crate::plan::{self, ExperimentPlan, PhaseLengths, PlannedTrial, RunPlan, TrialEnv};
use crate::record::{Recovery, RunEvent, TrialRecord};
use crate::report::model::{self, Counts};
use crate::spec::When;
use crate::template;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Trials alive at once.
    pub jobs: usize,
    /// Keep each trial's `${trial.dir}` after the run.
    pub keep_dirs: bool,
    /// The injector nodes experiments may name (`target.node`, `target.nodes`).
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}

/// Default check command limit.
pub const DEFAULT_CHECK_LIMIT: Duration = Duration::from_secs(10);

/// How often finished trials are handed to `events`.
pub const ANNOUNCE_EVERY: Duration = Duration::from_millis(20);

/// The most records `events` holds: a listener that falls behind (a store on a slow disk)
/// makes the run wait, instead of the run holding every record it made.
pub const EVENTS_CAPACITY: usize = 1024;

/// The most finished records waiting for the announcer: a lane that would add one more
/// waits until the announcer took them. (At 5,000 trials a second, a 20 ms tick finds 100.)
/// With the batch the announcer is sending, a run holds at most the channel's capacity and
/// twice this many records that its listener has not taken.
pub const OUTBOX_LIMIT: usize = 256;

/// One piece of work: an experiment's baseline (`trial: None`) or one of its trials.
struct Work {
    experiment: usize,
    trial: Option<PlannedTrial>,
}

/// What the lanes share, under one lock.
#[derive(Default)]
struct Board {
    /// Baselines not started yet, in plan order: they go first.
    baselines: VecDeque<usize>,
    /// Experiments whose baseline has run, with the generator of their trials: each trial
    /// is made as a lane takes it, so the board holds one generator per experiment, not one
    /// entry per trial.
    released: VecDeque<(usize, plan::Trials)>,
    /// Baselines not finished yet: lanes that find the queue empty wait for them.
    baselines_left: usize,
    /// Phase lengths per experiment, once its baseline has run.
    lengths: Vec<Option<Arc<PhaseLengths>>>,
    /// Records not yet handed to `events`. Nothing else keeps them: what a run holds does
    /// not grow with its trials.
    outbox: Vec<Arc<TrialRecord>>,
    /// Whether a trial against running processes runs now. Such trials hit live services
    /// (two experiments may name the same one), so they run one at a time, in the whole run.
    attach_busy: bool,
    /// Per experiment: when its last trial against a live service ended (its cooldown
    /// counts from then).
    last_end: Vec<Option<std::time::Instant>>,
}

struct Shared {
    experiments: Vec<Arc<ExperimentPlan>>,
    board: Mutex<Board>,
    /// Signalled when a baseline ends: its trials become ready, or it was the last one.
    ready: Condvar,
    /// Signalled when the announcer took the outbox.
    drained: Condvar,
    cancel: CancellationToken,
    run_dir: PathBuf,
    /// Ports handed to trials still running (given back when each ends).
    ports: inj::sockets::PortPool,
    /// Per experiment: signals sent to attached processes so far (its blast radius).
    sent: Vec<AtomicUsize>,
    /// The injector nodes, and the runtime their clients run on.
    fleet: Option<Arc<crate::fleet::Fleet>>,
    handle: tokio::runtime::Handle,
    run_id: String,
}

impl Shared {
    fn board(&self) -> MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next work for a lane, waiting while only baselines are running; `None` when
    /// there is none left or the run is cancelled.
    fn next(&self) -> Option<(Work, Option<Arc<PhaseLengths>>)> {
        let mut board = self.board();
        loop {
            if self.cancel.is_cancelled() {
                return None;
            }
            if let Some(experiment) = board.baselines.pop_front() {
                let work = Work {
                    experiment,
                    trial: None,
                };
                return Some((work, None));
            }
            // The first experiment with trials left that may start one now: while a trial
            // against running processes runs, no other starts (its lane takes the next).
            let mut i = 0;
            while i < board.released.len() {
                let experiment = board.released[i].0;
                let attached = self.experiments[experiment].attach.is_some();
                if attached && board.attach_busy {
                    i += 1;
                    continue;
                }
                match board.released[i].1.next() {
                    Some(trial) => {
                        board.attach_busy |= attached;
                        let lengths = board.lengths[experiment].clone();
                        let work = Work {
                            experiment,
                            trial: Some(trial),
                        };
                        return Some((work, lengths));
                    }
                    None => {
                        board.released.remove(i);
                    }
                }
            }
            if board.baselines_left == 0 {
                return None;
            }
            // A baseline ends within its timeout, a cancelled one at once; the timeout
            // only bounds how late a cancellation is noticed here.
            board = self
                .ready
                .wait_timeout(board, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Files a finished piece of work; a baseline that ran releases its trials.
    fn finish(&self, work: &Work, record: Option<Arc<TrialRecord>>) {
        let mut board = self.board();
        if self.experiments[work.experiment].attach.is_some() {
            board.attach_busy = false;
            board.last_end[work.experiment] = Some(std::time::Instant::now());
        }
        if work.trial.is_none() {
            board.baselines_left -= 1;
            if let Some(baseline) = &record {
                let lengths = PhaseLengths::from_baseline(&baseline.observation);
                board.lengths[work.experiment] = Some(Arc::new(lengths));
                let trials = self.experiments[work.experiment].trials();
                board.released.push_back((work.experiment, trials));
            }
            self.ready.notify_all();
        }
        if let Some(record) = record {
            // Back-pressure: the records of a run wait here, bounded, while the listener is
            // behind; the announcer takes them every tick.
            while board.outbox.len() >= OUTBOX_LIMIT && !self.cancel.is_cancelled() {
                board = self
                    .drained
                    .wait_timeout(board, Duration::from_millis(50))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            board.outbox.push(record);
        }
    }
}

/// Runs every trial of `plan`, handing each judged record to `events` (in the order they
/// end) and keeping none; returns the trials that ran, by verdict.
pub async fn execute(
    plan: RunPlan,
    options: &RunOptions,
    events: Sender<RunEvent>,
    cancel: CancellationToken,
) -> Counts {
    let run_dir = std::env::temp_dir().join(format!("{}{}", inj::workdir::PREFIX, plan.run_id));
    // The folders of runs that were killed before they could remove their own.
    for gone in inj::workdir::sweep_dead(&std::env::temp_dir()) {
        tracing::info!(folder = %gone.display(), "removed the trial folders of a dead run");
    }
    if plan.experiments.iter().any(|e| e.needs_dir)
        && let Err(err) = inj::workdir::create(&run_dir)
    {
        tracing::warn!(%err, folder = %run_dir.display(), "cannot create the run's folder");
    }
    let count = plan.experiments.len();
    // A running service has no baseline: its trials are released at once.
    let baselines: VecDeque<usize> = (0..count)
        .filter(|&e| plan.experiments[e].attach.is_none())
        .collect();
    let released = (0..count)
        .filter(|&e| plan.experiments[e].attach.is_some())
        .map(|e| (e, plan.experiments[e].trials()))
        .collect();
    let shared = Arc::new(Shared {
        experiments: plan.experiments.into_iter().map(Arc::new).collect(),
        board: Mutex::new(Board {
            baselines_left: baselines.len(),
            baselines,
            released,
            lengths: vec![None; count],
            last_end: vec![None; count],
            ..Board::default()
        }),
        sent: (0..count).map(|_| AtomicUsize::new(0)).collect(),
        ready: Condvar::new(),
        drained: Condvar::new(),
        cancel: cancel.clone(),
        run_dir: run_dir.clone(),
        ports: inj::sockets::PortPool::default(),
        fleet: options.fleet.clone(),
        handle: tokio::runtime::Handle::current(),
        run_id: plan.run_id.clone(),
    });
    let mut lanes = tokio::task::JoinSet::new();
    for _ in 0..options.jobs.max(1) {
        let shared = shared.clone();
        lanes.spawn_blocking(move || lane(&shared));
    }
    let mut counts = Counts::default();
    let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            lane = lanes.join_next() => {
                if lane.is_none() {
                    break;
                }
            }
            _ = tick.tick() => announce(&shared, &events, &mut counts).await,
        }
    }
    announce(&shared, &events, &mut counts).await;
    // Nothing of this run may outlive it, whatever happened above.
    inj::orphans::kill_run(&plan.run_id);
    if options.keep_dirs {
        inj::workdir::keep(&run_dir);
    } else if let Err(err) = inj::workdir::remove(&run_dir) {
        tracing::warn!(%err, folder = %run_dir.display(), "cannot remove the run's folder");
    }
    counts
}

/// Hands the finished records to `events`, waiting while it is full; the lanes may add
/// more meanwhile, up to their limit.
async fn announce(shared: &Shared, events: &Sender<RunEvent>, counts: &mut Counts) {
    let ready = std::mem::take(&mut shared.board().outbox);
    shared.drained.notify_all();
    for record in ready {
        counts.count(record.verdict);
        // A listener that is gone (its receiver dropped) takes nothing more: the run goes on.
        let _ = events.send(RunEvent::Trial(record)).await;
    }
}

/// One lane: trials back to back on this thread until the board is empty.
fn lane(shared: &Shared) {
    while let Some((work, lengths)) = shared.next() {
        let exp = &shared.experiments[work.experiment];
        let (trial, lengths) = match &work.trial {
            Some(trial) => (trial, lengths.unwrap_or_default()),
            None => (&exp.baseline, Arc::default()),
        };
        let started = now_ns();
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &exp.attach {
            Some(attach) => {
                let since = shared.board().last_end[work.experiment];
                attach::cool_down(attach, since, &shared.cancel);
                attach::run_trial(exp, attach, trial, work.experiment, shared)
            }
            None if !exp.nodes.is_empty() => run_remote(exp, trial, &lengths, shared),
            None => run_trial(exp, trial, &lengths, shared),
        }));
        // A bug that panics in one trial is that trial's `error`, and the board still
        // hears of its end: a lost end left an attached experiment's "one at a time"
        // taken, and its other trials were silently never run.
        let record = ran.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            let mut obs = inj::Observation::unstarted(&trial.id, &exp.info.phases);
            obs.error = Some(format!("atropos failed while running the trial: {what}"));
            let after = After::default();
            Some(judged(
                exp,
                trial,
                obs,
                after,
                Duration::ZERO,
                None,
                started,
            ))
        });
        shared.finish(&work, record);
    }
}

/// Runs one trial with its after-checks and judges it; `None` if it never started.
fn run_trial(
    exp: &ExperimentPlan,
    trial: &PlannedTrial,
    lengths: &PhaseLengths,
    shared: &Shared,
) -> Option<Arc<TrialRecord>> {
    if shared.cancel.is_cancelled() {
        return None;
    }
    let started = now_ns();
    let dir = shared.run_dir.join(&trial.id);
    if exp.needs_dir {
        let _ = std::fs::create_dir_all(&dir);
    }
    let port = if exp.needs_port {
        shared.ports.take()
    } else {
        0
    };
    let env = TrialEnv { port, dir };
    let (iplan, first_offset) = plan::injector_plan(exp, trial, &env, lengths, None);
    let obs = inj::trial::run_blocking(&iplan, &shared.cancel);
    let after = if obs.error.is_none() && obs.stop != inj::StopReason::Interrupted {
        after_facts(inj::after::run(
            &after_plan(exp, trial, &env),
            &shared.cancel,
        ))
    } else {
        After::default()
    };
    if port != 0 {
        shared.ports.give_back(port);
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

/// Runs one trial on an injector node (the least busy of those the experiment names, once
/// one has room), the whole of it there: target, after-checks, port and folder. Judges it
/// here; a trial the node lost is an `error` saying why. `None` if it never started.
fn run_remote(
    exp: &ExperimentPlan,
    trial: &PlannedTrial,
    lengths: &PhaseLengths,
    shared: &Shared,
) -> Option<Arc<TrialRecord>> {
    let fleet = shared.fleet.as_ref()?;
    let started = now_ns();
    let env = TrialEnv::on_node();
    let (iplan, first_offset) = plan::injector_plan(exp, trial, &env, lengths, None);
    let after = after_plan(exp, trial, &env);
    // The whole exchange is bounded by what the node may take: the trial, its check and
    // its recovery, and a margin for the stream.
    let limit = iplan.timeout
        + after.check.as_ref().map_or(Duration::ZERO, |c| c.limit)
        + after
            .recovery
            .as_ref()
            .map_or(Duration::ZERO, |r| r.plan.timeout)
        + Duration::from_secs(5);
    let grace = iplan.grace;
    let slot = match fleet.acquire(&exp.nodes, &shared.cancel) {
        Ok(slot) => slot,
        Err(None) => return None,
        Err(Some(why)) => {
            let mut obs = inj::Observation::unstarted(&trial.id, &exp.info.phases);
            obs.error = Some(why);
            let after = After::default();
            return Some(judged(exp, trial, obs, after, grace, first_offset, started));
        }
    };
    let node = &fleet.nodes[slot.node];
    let request = inj::wire::TrialRequest {
        format: inj::PLAN_FORMAT,
        node: node.name.clone(),
        run: shared.run_id.clone(),
        trial: iplan,
        after,
        bind: inj::wire::Bind {
            port: exp.needs_port,
            dir: exp.needs_dir,
        },
    };
    let (obs, after) = match node.run(&request, limit, &shared.cancel, &shared.handle) {
        Ok(done) => (done.observation, after_facts(done.after)),
        Err(failure) => {
            if let crate::fleet::Failure::Lost(_) = &failure {
                slot.lost();
            }
            let mut obs = inj::Observation::unstarted(&trial.id, &exp.info.phases);
            obs.error = Some(failure.to_string());
            (obs, After::default())
        }
    };
    let name = node.name.clone();
    drop(slot);
    let record = judged(exp, trial, obs, after, grace, first_offset, started);
    let mut record = Arc::unwrap_or_clone(record);
    record.node = Some(name);
    Some(Arc::new(record))
}

/// Judges a trial that ran and makes its record.
fn judged(
    exp: &ExperimentPlan,
    trial: &PlannedTrial,
    obs: inj::Observation,
    after: After,
    grace: Duration,
    first_offset: Option<u64>,
    started: u64,
) -> Arc<TrialRecord> {
    let phases = &exp.info.phases;
    let attached = exp.attach.is_some();
    let judgement = judge::judge(trial, phases, &obs, &after, grace, attached);
    let first = obs.deliveries.first();
    let fault = trial.fault.and_then(|f| exp.faults.get(f));
    let offset_spec = fault
        .and_then(|f| f.lowered.steps.first())
        .and_then(|step| match step.when {
            When::Phase { offset, .. } => Some(offset.to_string()),
            _ => None,
        });
    let landed = fault.map_or_else(Vec::new, |f| model::landings(&f.kinds, &obs.deliveries));
    Arc::new(TrialRecord {
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
        landed,
        observation: obs,
        recovery: after.recovery,
        check: after.check,
        expectations: judgement.expectations,
        verdict: judgement.verdict,
        reasons: judgement.reasons,
        duration_ns: now_ns() - started,
        node: None,
    })
}

/// What runs on the node once the target ended: the files it left, the check command and
/// the recovery restart ([`inj::after`] runs them, in that order).
pub(crate) fn after_plan(
    exp: &ExperimentPlan,
    trial: &PlannedTrial,
    env: &TrialEnv,
) -> inj::after::AfterPlan {
    let expect = &trial.expect;
    let vars = env.vars(trial);
    let cwd = exp.cwd.clone();
    let files = expect.files.as_ref().map_or_else(Vec::new, |files| {
        let probe = |p: &String, must_exist: bool| {
            let expanded = template::expand(p, &vars);
            inj::after::FileProbe {
                resolved: plan::resolve(&cwd, &expanded),
                path: expanded,
                must_exist,
            }
        };
        let present = files.present.iter().map(|p| probe(p, true));
        present
            .chain(files.absent.iter().map(|p| probe(p, false)))
            .collect()
    });
    let check = expect.check.as_ref().map(|check| inj::after::CheckPlan {
        argv: plan::argv(&check.command, &cwd, &vars),
        cwd: cwd.clone(),
        env: vec![("ATROPOS_TRIAL".to_owned(), format!("{}-check", trial.id))],
        limit: check.within.unwrap_or(DEFAULT_CHECK_LIMIT),
    });
    // An attached target's recovery is its supervisor's, watched by the controller's side
    // (`attach::recover_service`), not a restart.
    let restart = expect.recover.as_ref().filter(|_| exp.attach.is_none());
    let recovery = restart.and_then(|recover| {
        let index = exp.info.phases.iter().position(|p| *p == recover.reaches)?;
        let target = plan::command(&exp.loaded, &cwd, &vars);
        let plan = inj::TrialPlan {
            format: inj::PLAN_FORMAT,
            id: format!("{}-r", trial.id),
            target: inj::Target::Run(target),
            phases: plan::phase_plans(&exp.loaded.experiment.spec, &vars, &cwd),
            steps: Vec::new(),
            watches: Vec::new(),
            finish: inj::Finish::UntilPhase(index),
            hold: Duration::ZERO,
            grace: Duration::from_millis(100),
            timeout: recover.within + Duration::from_millis(50),
            sample_resources: false,
            tail_lines: 10,
            kill_orphans: true,
        };
        Some(inj::after::RecoveryPlan {
            phase: recover.reaches.clone(),
            plan,
        })
    });
    inj::after::AfterPlan {
        files,
        check,
        recovery,
    }
}

/// What the judge takes from what [`inj::after::run`] found.
pub(crate) fn after_facts(seen: inj::after::AfterSeen) -> After {
    After {
        files: seen.files,
        check: seen.check,
        recovery: seen.recovery.map(|r| Recovery {
            phase: r.phase,
            reached_ns: r.reached_ns,
            observation: r.observation,
            attached: None,
        }),
    }
}
