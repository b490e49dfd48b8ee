//! The controller loop of `atropos serve`: it sleeps until the next tick of any schedule,
//! decides it ([`super::decide`]), records the decision and queues the run in one
//! transaction ([`crate::store::Store::decide_tick`]), and starts the run as a child
//! `atropos run FILE --filter ^NAME$ --run-uid ID --trigger schedule` on the same store, so
//! that a run that fails or crashes never takes the controller with it.
//!
//! It also takes [`Order`]s from the API (`atropos trigger`, `atropos abort`): a run now
//! (trigger `api`, and who asked), or the abort of a run it started.
//!
//! Runs it started are its children: it reaps them, knows which still go on (for
//! `concurrency`), and on `replace`, an abort, or when it stops interrupts them with SIGINT
//! (the run resumes what it paused and kills what it started) and waits for them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use atropos_injector::CancellationToken;
use chrono::{DateTime, Utc};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use super::decide::{Decision, decide};
use super::schedule::Schedule;
use crate::record::{Trigger, unix_now};
use crate::store::Store;
use crate::store::schedule::TickOutcome;

/// The longest the loop sleeps: it also reaps the runs it started.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// How long an interrupted run has to end before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// One experiment the controller holds.
#[derive(Debug, Clone)]
pub struct Scheduled {
    /// Its name.
    pub name: String,
    /// The file it is in.
    pub file: PathBuf,
    /// Its schedule, if it has one (without, it runs when triggered).
    pub schedule: Option<Schedule>,
}

/// What the API asks of the controller.
#[derive(Debug)]
pub enum Order {
    /// Start a run of `experiment` now; the reply is its id.
    Trigger {
        /// The experiment's name.
        experiment: String,
        /// Who asked.
        by: String,
        /// The run's id, or why not.
        reply: oneshot::Sender<Result<String, Refused>>,
    },
    /// Abort a run this controller started.
    Abort {
        /// The run's id.
        run: String,
        /// Who asked.
        by: String,
        /// Done, or why not.
        reply: oneshot::Sender<Result<(), Refused>>,
    },
}

/// Why an order was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No experiment by that name.
    #[error("no experiment `{0}` in this controller")]
    NoExperiment(String),
    /// No run by that id goes on here.
    #[error("no run `{0}` is going on in this controller")]
    NoRun(String),
    /// The run could not be started or recorded.
    #[error("{0}")]
    Failed(String),
}

/// A run this controller started.
struct Started {
    uid: String,
    child: Child,
}

/// What the loop needs to start runs.
pub struct Launcher {
    /// The `atropos` binary.
    pub exe: PathBuf,
    /// The store the runs record into.
    pub db: PathBuf,
}

impl Launcher {
    fn start(
        &self,
        exp: &Scheduled,
        uid: &str,
        seed: u64,
        trigger: Trigger,
    ) -> std::io::Result<Child> {
        let mut command = Command::new(&self.exe);
        // A controller that dies (even SIGKILLed) takes its runs with it: each gets SIGHUP
        // and stops as on Ctrl-C (paused processes resumed, targets stopped, the run
        // recorded as interrupted).
        atropos_injector::hang_up_at_spawner_death(command.as_std_mut());
        command
            .arg("run")
            .arg(&exp.file)
            .arg("--filter")
            .arg(format!("^{}$", regex::escape(&exp.name)))
            .arg("--db")
            .arg(&self.db)
            .args(["--run-uid", uid, "--trigger", trigger.as_str()])
            .arg("--seed")
            .arg(seed.to_string())
            .stdin(std::process::Stdio::null());
        // What the run prints (its summary, its errors) is kept beside the store.
        match self.log_file(uid) {
            Some(log) => {
                let err = log.try_clone()?;
                command.stdout(log).stderr(err);
            }
            None => {
                command
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
            }
        }
        // Its own process group: a Ctrl-C in the controller's terminal reaches the
        // controller, which stops its runs itself.
        command.process_group(0).kill_on_drop(true).spawn()
    }

    /// `atropos-runs/ID.log` beside the store, created; `None` if it cannot be.
    fn log_file(&self, uid: &str) -> Option<std::fs::File> {
        let dir = self
            .db
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .join("atropos-runs");
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::File::create(dir.join(format!("{uid}.log"))).ok()
    }
}

/// Tells a run this controller started to stop: SIGHUP, which a controlled run takes as
/// one Ctrl-C however often it comes (a SIGINT or SIGTERM that also reached it from a
/// terminal or from systemd must not make a second one, which quits at once without
/// resuming paused processes).
fn hang_up(run: &Started) {
    if let Some(pid) = run.child.id() {
        // Our own child, not reaped yet: the pid is still its.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP);
    }
}

/// Waits for a run told to stop; kills it after [`STOP_GRACE`].
async fn wait_stopped(run: &mut Started) {
    if tokio::time::timeout(STOP_GRACE, run.child.wait())
        .await
        .is_err()
    {
        let _ = run.child.kill().await;
    }
}

/// Stops a run this controller started and waits for it.
async fn interrupt(run: &mut Started) {
    hang_up(run);
    wait_stopped(run).await;
}

/// Stops every run, all told at once, then waits for them all.
async fn interrupt_all(running: &mut HashMap<String, Vec<Started>>) {
    for run in running.values().flatten() {
        hang_up(run);
    }
    for run in running.values_mut().flatten() {
        wait_stopped(run).await;
    }
    running.clear();
}

/// A fresh run id (48 random bits: no clash in a store's lifetime).
fn new_uid() -> String {
    format!("r{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// Runs the schedules of `experiments` until `stop`: fires their ticks into `store`.
pub async fn run(
    store: Store,
    experiments: Vec<Scheduled>,
    launcher: Launcher,
    mut orders: mpsc::Receiver<Order>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let now = Utc::now();
    let mut last: HashMap<String, DateTime<Utc>> = HashMap::new();
    for (exp, schedule) in experiments
        .iter()
        .filter_map(|e| Some((e, e.schedule.as_ref()?)))
    {
        let mark = store.schedule_mark(&exp.name, seconds(now)).await?;
        last.insert(exp.name.clone(), from_seconds(mark));
        tracing::info!(
            experiment = %exp.name,
            schedule = %schedule.line,
            timezone = %schedule.tz,
            next = ?schedule.next_after(now),
            "scheduled"
        );
    }
    // Each schedule's next tick after the last one decided: only a schedule whose tick has
    // come is looked at (a thousand schedules cost nothing between their ticks). After
    // downtime it is in the past, and the latest missed tick is decided at once.
    let mut due: HashMap<String, Option<DateTime<Utc>>> = experiments
        .iter()
        .filter_map(|e| {
            let s = e.schedule.as_ref()?;
            let since = last.get(&e.name).copied().unwrap_or(now);
            Some((
                e.name.clone(),
                (!s.suspend).then(|| s.next_after(since)).flatten(),
            ))
        })
        .collect();
    let mut running: HashMap<String, Vec<Started>> = HashMap::new();
    while !stop.is_cancelled() {
        // Reap what ended.
        for runs in running.values_mut() {
            runs.retain_mut(|r| !matches!(r.child.try_wait(), Ok(Some(_))));
        }
        let now = Utc::now();
        for (exp, schedule) in experiments
            .iter()
            .filter_map(|e| Some((e, e.schedule.as_ref()?)))
        {
            if due
                .get(&exp.name)
                .copied()
                .flatten()
                .is_none_or(|at| at > now)
            {
                continue;
            }
            // Whatever is decided now, the next look is at the tick after this moment.
            due.insert(exp.name.clone(), schedule.next_after(now));
            let since = last.get(&exp.name).copied().unwrap_or(now);
            let going = running
                .get(&exp.name)
                .and_then(|r| r.last())
                .map(|r| r.uid.clone());
            let decision = decide(schedule, since, now, going.as_deref());
            let (tick, outcome, replace) = match decision {
                Decision::Wait => continue,
                Decision::Skip { tick, why } => (tick, TickOutcome::Skip(why.to_string()), None),
                Decision::Fire { tick, replace } => {
                    let uid = new_uid();
                    let seed = rand::random::<u64>();
                    (tick, TickOutcome::Fire { run_uid: uid, seed }, replace)
                }
            };
            match store
                .decide_tick(&exp.name, seconds(tick), seconds(now), &outcome)
                .await
            {
                Ok(true) => {
                    last.insert(exp.name.clone(), tick);
                }
                Ok(false) => {
                    // Another controller on this file decided it.
                    last.insert(exp.name.clone(), tick);
                    tracing::info!(experiment = %exp.name, %tick, "tick decided elsewhere");
                    continue;
                }
                Err(err) => {
                    // The store failed (busy past its timeout, disk full): this tick is
                    // tried again in a moment; the scheduler and its runs go on.
                    tracing::error!(
                        experiment = %exp.name, %tick, error = format!("{err:#}"),
                        "cannot record the tick's decision; trying again"
                    );
                    due.insert(exp.name.clone(), Some(now + chrono::Duration::seconds(1)));
                    continue;
                }
            }
            match outcome {
                TickOutcome::Skip(why) => {
                    tracing::info!(experiment = %exp.name, %tick, %why, "tick skipped");
                }
                TickOutcome::Fire { run_uid, seed } => {
                    if replace.is_some()
                        && let Some(runs) = running.get_mut(&exp.name)
                    {
                        for run in runs.iter_mut() {
                            tracing::info!(experiment = %exp.name, run = %run.uid, "replaced");
                            interrupt(run).await;
                        }
                        runs.clear();
                    }
                    let late = (Utc::now() - tick).num_milliseconds();
                    match launcher.start(exp, &run_uid, seed, Trigger::Schedule) {
                        Ok(child) => {
                            tracing::info!(
                                experiment = %exp.name, %tick, run = %run_uid, late_ms = late,
                                "tick fired"
                            );
                            running.entry(exp.name.clone()).or_default().push(Started {
                                uid: run_uid,
                                child,
                            });
                        }
                        Err(err) => {
                            tracing::error!(experiment = %exp.name, %err, "cannot start the run");
                            // Not left queued: the record says why nothing ran.
                            let why = format!("the run could not start: {err}");
                            let _ = store.mark_aborted(&run_uid, &why, unix_now()).await;
                        }
                    }
                }
            }
        }
        // Until the next tick of any schedule, at most MAX_SLEEP.
        let now = Utc::now();
        let next = due.values().flatten().min().copied();
        let sleep = next
            .and_then(|n| (n - now).to_std().ok())
            .map_or(MAX_SLEEP, |d| d.min(MAX_SLEEP));
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(sleep) => {}
            Some(order) = orders.recv() => {
                obey(order, &store, &experiments, &launcher, &mut running).await;
            }
        }
    }
    interrupt_all(&mut running).await;
    Ok(())
}

/// Carries out one order from the API.
async fn obey(
    order: Order,
    store: &Store,
    experiments: &[Scheduled],
    launcher: &Launcher,
    running: &mut HashMap<String, Vec<Started>>,
) {
    match order {
        Order::Trigger {
            experiment,
            by,
            reply,
        } => {
            let Some(exp) = experiments.iter().find(|e| e.name == experiment) else {
                let _ = reply.send(Err(Refused::NoExperiment(experiment)));
                return;
            };
            let uid = new_uid();
            let seed = rand::random::<u64>();
            let started = async {
                store
                    .queue_run(&uid, seed, &by, unix_now())
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                launcher
                    .start(exp, &uid, seed, Trigger::Api)
                    .map_err(|e| format!("cannot start the run: {e}"))
            };
            match started.await {
                Ok(child) => {
                    tracing::info!(experiment = %exp.name, run = %uid, %by, "triggered");
                    running.entry(exp.name.clone()).or_default().push(Started {
                        uid: uid.clone(),
                        child,
                    });
                    let _ = reply.send(Ok(uid));
                }
                Err(why) => {
                    tracing::error!(experiment = %exp.name, %why, "trigger failed");
                    // A run queued but not started is not left queued.
                    let _ = store.mark_aborted(&uid, &why, unix_now()).await;
                    let _ = reply.send(Err(Refused::Failed(why)));
                }
            }
        }
        Order::Abort { run, by, reply } => {
            let found = running.values_mut().find_map(|runs| {
                let i = runs.iter().position(|r| r.uid == run)?;
                Some(runs.remove(i))
            });
            let Some(mut started) = found else {
                let _ = reply.send(Err(Refused::NoRun(run)));
                return;
            };
            interrupt(&mut started).await;
            let why = format!("aborted by {by} through the API");
            let result = store
                .mark_aborted(&run, &why, unix_now())
                .await
                .map_err(|e| Refused::Failed(format!("{e:#}")));
            tracing::info!(run = %run, %by, "aborted");
            let _ = reply.send(result);
        }
    }
}

/// Seconds since the Unix epoch, as the store keeps times.
pub fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

/// The inverse of [`seconds`], to the microsecond.
pub fn from_seconds(s: f64) -> DateTime<Utc> {
    #[expect(clippy::cast_possible_truncation, reason = "microseconds fit an i64")]
    let micros = (s * 1e6).round() as i64;
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}
