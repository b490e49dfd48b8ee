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
use crate::plan::{self, ExperimentPlan, PhaseLengths, PlannedTrial, RunPlan};
use crate::record::{Recovery, RunEvent, TrialRecord};
use crate::report::model::{self, Counts};
use crate::spec::When;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Trials alive at once.
    pub jobs: usize,
    /// Keep each trial's `${trial.dir}` after the run.
    pub keep_dirs: bool,
    /// The injector nodes experiments may name (`target.node`, `target.nodes`).
    pub fleet: Option<Arc<crate::dispatch::Fleet>>,
}

pub use crate::dispatch::DEFAULT_CHECK_LIMIT;

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
    /// Where trials run: in-process, or on injector nodes.
    places: crate::dispatch::Places,
    /// Per experiment: signals sent to attached processes so far (its blast radius).
    sent: Vec<AtomicUsize>,
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

    /// Files a finished piece of work with every record it made (an attached trial on
    /// several nodes makes one per node); a baseline that ran releases its trials.
    fn finish_all(&self, work: &Work, records: Vec<Arc<TrialRecord>>) {
        let record = records.first().cloned();
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
        for record in records {
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
        places: crate::dispatch::Places::new(
            cancel.clone(),
            run_dir.clone(),
            options.fleet.clone(),
            plan.run_id.clone(),
        ),
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
                if exp.nodes.is_empty() {
                    let record = attach::run_trial(exp, attach, trial, work.experiment, shared);
                    record.into_iter().collect()
                } else {
                    attach::run_on_nodes(exp, attach, trial, work.experiment, shared)
                }
            }
            None => run_trial(exp, trial, &lengths, shared)
                .into_iter()
                .collect(),
        }));
        // A bug that panics in one trial is that trial's `error`, and the board still
        // hears of its end: a lost end left an attached experiment's "one at a time"
        // taken, and its other trials were silently never run.
        let records = ran.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            let mut obs = inj::Observation::unstarted(&trial.id, &exp.info.phases);
            obs.error = Some(format!("atropos failed while running the trial: {what}"));
            vec![judged(exp, trial, Ended::failed(obs), started)]
        });
        shared.finish_all(&work, records);
    }
}

/// Runs one trial where its experiment says ([`dispatch`]) and judges it; `None` if it
/// never started.
fn run_trial(
    exp: &ExperimentPlan,
    trial: &PlannedTrial,
    lengths: &PhaseLengths,
    shared: &Shared,
) -> Option<Arc<TrialRecord>> {
    let started = now_ns();
    let ran = shared.places.run(exp, trial, lengths)?;
    let ended = Ended {
        obs: ran.observation,
        after: after_facts(ran.after),
        grace: ran.grace,
        first_offset: ran.first_offset,
        node: ran.node,
    };
    Some(judged(exp, trial, ended, started))
}

/// What a judge needs of a trial that ended.
pub(crate) struct Ended {
    pub(crate) obs: inj::Observation,
    pub(crate) after: After,
    pub(crate) grace: Duration,
    pub(crate) first_offset: Option<u64>,
    pub(crate) node: Option<String>,
}

impl Ended {
    /// A trial that never ran as planned: `obs` says why.
    pub(crate) fn failed(obs: inj::Observation) -> Ended {
        Ended {
            obs,
            after: After::default(),
            grace: Duration::ZERO,
            first_offset: None,
            node: None,
        }
    }
}

/// Judges a trial that ran and makes its record.
fn judged(
    exp: &ExperimentPlan,
    trial: &PlannedTrial,
    ended: Ended,
    started: u64,
) -> Arc<TrialRecord> {
    let Ended {
        obs,
        after,
        grace,
        first_offset,
        node,
    } = ended;
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
        node,
    })
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
            attached: r.attached,
        }),
    }
}
