//! `atropos run PATH...`: the CI entry point.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use atropos_injector::{Action, Aim, CancellationToken, ExitedState};
use rand::RngExt;
use tokio::sync::mpsc::channel;

use super::{EXIT_FAILED, EXIT_HARNESS, EXIT_INVALID, EXIT_OK};
use crate::plan::{self, PlanOptions, RunPlan};
use crate::record::{CiInfo, RunEnd, RunEvent, RunInfo, RunStatus, Trigger, unix_now};
use crate::report::model::{self, plural};
use crate::report::{self, Progress, RunTally};
use crate::runner::{self, RunOptions};
use crate::scheduler::probe;
use crate::spec::When;

/// Arguments of `atropos run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Experiment files or folders (searched recursively for .yaml/.yml).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Seed for every experiment's random plan (overrides `seed:` in the files).
    #[arg(long)]
    seed: Option<u64>,
    /// Trials running at once (default: the number of cores).
    #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Trials per fault (overrides `trials:` in the files).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    trials: Option<u32>,
    /// Only experiments whose name, or `experiment/fault`, matches this regex.
    #[arg(long)]
    filter: Option<String>,
    /// Write every trial record as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write a JUnit XML report (one test case per fault) to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Show the plan (what would be spawned and hit, with which offsets) and run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Keep each trial's `${trial.dir}` (under the system temp folder) after the run.
    #[arg(long)]
    keep_dirs: bool,
    /// The results store (SQLite) to record the run in.
    #[arg(long, value_name = "PATH", default_value = "atropos.db")]
    db: PathBuf,
    /// Record nothing in a results store.
    #[arg(long)]
    no_db: bool,
    /// A process id no `attach:` target may select, whatever matches (repeatable).
    #[arg(long, value_name = "PID")]
    protect: Vec<i32>,
    /// An injector node, `NAME=URL` (repeatable), beside those an `atropos.yaml` next to
    /// the experiments declares; its token is read from `ATROPOS_INJECTOR_TOKEN`.
    #[arg(long, value_name = "NAME=URL")]
    injector: Vec<String>,
    /// The run's id when `atropos serve` queued it already (a scheduled or triggered run):
    /// the run takes that record over.
    #[arg(long, value_name = "ID", hide = true)]
    run_uid: Option<String>,
    /// What started the run, when `atropos serve` started it: `schedule` or `api`.
    #[arg(long, value_name = "TRIGGER", hide = true, value_parser = parse_trigger)]
    trigger: Option<Trigger>,
}

/// A trigger `atropos serve` may name.
fn parse_trigger(text: &str) -> Result<Trigger, String> {
    match text {
        "schedule" => Ok(Trigger::Schedule),
        "api" => Ok(Trigger::Api),
        other => Err(format!("`{other}`; expected schedule or api")),
    }
}

pub(super) fn main(args: RunArgs) -> u8 {
    let loaded = match crate::spec::load_all(&args.paths) {
        Ok(loaded) => loaded,
        Err(invalid) => {
            eprintln!("{invalid}");
            eprintln!("{}", invalid.summary());
            return EXIT_INVALID;
        }
    };
    let filter = match args.filter.as_deref().map(regex::Regex::new).transpose() {
        Ok(f) => f,
        Err(err) => {
            eprintln!("error: --filter: not a valid regex: {err}");
            return EXIT_INVALID;
        }
    };
    for (flag, path) in [("--json", &args.json), ("--junit", &args.junit)] {
        if let Some(path) = path
            && let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
            && !parent.is_dir()
        {
            eprintln!(
                "error: {flag} {}: the folder {} does not exist",
                path.display(),
                parent.display()
            );
            return EXIT_INVALID;
        }
    }
    let seed = args.seed.unwrap_or_else(|| rand::rng().random());
    let run_id = args
        .run_uid
        .clone()
        .unwrap_or_else(|| format!("r{:08x}", rand::rng().random::<u32>()));
    let options = PlanOptions {
        seed: args.seed,
        trials: args.trials,
        filter,
    };
    let plan = plan::plan(loaded, &run_id, seed, &options);
    if plan.experiments.is_empty() {
        eprintln!(
            "error: --filter {} matched no experiment or fault",
            args.filter.unwrap_or_default()
        );
        return EXIT_INVALID;
    }
    // Before any trial, and for the dry run too: a command that cannot start is bad input.
    if let Err(unstartable) = crate::spec::check_targets(&plan) {
        eprintln!("{unstartable}");
        return EXIT_INVALID;
    }
    if args.dry_run {
        return match dry_run(&plan, &args.protect) {
            Ok(text) => {
                print!("{text}");
                EXIT_OK
            }
            Err(err) => {
                eprintln!("{err}");
                EXIT_INVALID
            }
        };
    }
    // What an `attach:` selects is resolved once before any trial: a selector that matches
    // nothing or too much is bad input, and nothing is signalled.
    let mut plan = plan;
    for exp in &mut plan.experiments {
        let Some(spec) = exp.loaded.experiment.spec.target.attach.clone() else {
            continue;
        };
        if on_node(exp) {
            continue; // its nodes select, from their own /proc, once they are known
        }
        match attach_plan(exp, &spec, &args.protect) {
            Ok(attach) => exp.attach = Some(Arc::new(attach)),
            Err(err) => {
                eprintln!("{err}");
                return EXIT_INVALID;
            }
        }
    }
    let jobs = args.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(2, |n| n.get()),
        usize::from,
    );
    let runtime = match super::runtime(None) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    // Experiments on injector nodes: every node they may use answers before any trial.
    let fleet = match runtime.block_on(crate::dispatch::resolve(
        &mut plan,
        &args.paths,
        &args.injector,
    )) {
        Ok(fleet) => fleet,
        Err(err) => {
            eprintln!("{err}");
            return EXIT_INVALID;
        }
    };
    for exp in &mut plan.experiments {
        let Some(spec) = exp.loaded.experiment.spec.target.attach.clone() else {
            continue;
        };
        if !on_node(exp) {
            continue;
        }
        // The command line's --protect names pids of this machine: not the nodes'.
        let lowered = match crate::spec::attach::lower(&spec, &exp.loaded.dir, &[]) {
            Ok(lowered) => lowered,
            Err(err) => {
                let file = exp.loaded.file.display();
                eprintln!(
                    "error: {file}: experiment {}: spec.target.attach: {err}",
                    exp.info.name
                );
                return EXIT_INVALID;
            }
        };
        // Each node may hit up to max_targets processes with every step of every trial.
        let most = lowered.max_targets * fault_steps(exp) * exp.nodes.len();
        exp.attach = Some(Arc::new(plan::AttachPlan {
            lowered,
            max_signals: spec.max_signals.map_or(most, |m| m as usize),
            cooldown: spec.cooldown.unwrap_or(plan::DEFAULT_COOLDOWN),
        }));
    }
    let db = (!args.no_db).then_some(args.db);
    runtime.block_on(run(
        plan,
        args.json,
        args.junit,
        db,
        args.trigger,
        RunOptions {
            jobs,
            keep_dirs: args.keep_dirs,
            fleet,
        },
    ))
}

async fn run(
    plan: RunPlan,
    json: Option<PathBuf>,
    junit: Option<PathBuf>,
    db: Option<PathBuf>,
    trigger: Option<Trigger>,
    options: RunOptions,
) -> u8 {
    // Open the store before anything runs: a store that cannot be opened is a configuration
    // error, and nothing should run unrecorded by surprise.
    let mut recorder = match &db {
        Some(path) => match crate::store::Recorder::open(path).await {
            Ok(r) => Some(r),
            Err(err) => {
                eprintln!("error: --db {}: {err:#}", path.display());
                eprintln!(
                    "help: choose another file with --db PATH, or record nothing with --no-db"
                );
                return EXIT_INVALID;
            }
        },
        None => None,
    };
    if let Err(err) = atropos_injector::init() {
        eprintln!("error: failed to become the reaper of orphaned targets: {err}");
        return EXIT_HARNESS;
    }
    let ci = CiInfo::from_env();
    let info = Arc::new(RunInfo {
        id: plan.run_id.clone(),
        trigger: trigger.unwrap_or(if ci.provider.is_some() {
            Trigger::Ci
        } else {
            Trigger::Manual
        }),
        seed: plan.seed,
        started_at: unix_now(),
        version: crate::VERSION.to_owned(),
        ci,
        experiments: plan.experiments.iter().map(|e| e.info.clone()).collect(),
        containment: Some(atropos_injector::containment()),
        fault_kinds: plan
            .experiments
            .iter()
            .map(|e| {
                let kinds = model::kinds_used(e.faults.iter().map(|f| &f.lowered));
                (e.info.name.clone(), kinds)
            })
            .collect(),
    });
    let total = plan.trial_count();
    let cancel = CancellationToken::new();
    // A run a controller started stops when it hangs up (only then: under `nohup` a
    // terminal's hangup must not stop a run).
    let interrupted = watch_signals(cancel.clone(), plan.run_id.clone(), trigger.is_some());

    // The JSON report is written as trials end; a file that cannot be created is reported
    // now and the run goes on (its exit code says so at the end).
    let mut json_failed = false;
    let mut json_report = match &json {
        Some(path) => match report::JsonReport::create(path, &info) {
            Ok(r) => Some(r),
            Err(err) => {
                eprintln!("error: failed to write {}: {err}", path.display());
                json_failed = true;
                None
            }
        },
        None => None,
    };
    let (events, mut rx) = channel::<RunEvent>(runner::EVENTS_CAPACITY);
    let jobs = options.jobs;
    let json_path = json.clone();
    let listener = tokio::spawn(async move {
        let mut progress = Progress::new(total);
        let mut tally = None;
        while let Some(event) = rx.recv().await {
            match &event {
                RunEvent::Started(run) => {
                    tally = Some(RunTally::new(run));
                    progress.line(&format!(
                        "atropos {}: run {} · {} · {} · seed {} · jobs {} · contained by {}",
                        run.version,
                        run.id,
                        plural(run.experiments.len() as u64, "experiment", "experiments"),
                        plural(total as u64, "trial", "trials"),
                        run.seed,
                        jobs,
                        run.containment
                            .as_ref()
                            .map_or_else(|| "nothing".to_owned(), ToString::to_string)
                    ));
                }
                RunEvent::Trial(record) => {
                    progress.trial(record);
                    if let Some(t) = tally.as_mut() {
                        t.add(record);
                    }
                    if let Some(j) = json_report.as_mut()
                        && let Err(err) = j.trial(record)
                    {
                        let path = json_path.as_deref().unwrap_or(Path::new("-"));
                        progress.line(&format!("error: failed to write {}: {err}", path.display()));
                        json_report = None;
                        json_failed = true;
                    }
                }
                RunEvent::Finished(_) => progress.finish(),
            }
            if let Some(r) = recorder.as_mut()
                && let Err(err) = r.record(&event).await
            {
                progress.line(&format!(
                    "warning: results store: {err:#}; the rest of this run is not recorded"
                ));
                recorder = None;
            }
        }
        // Everything is committed by now (the run's end waited for it): closing the file
        // (a checkpoint and two fsyncs) goes on while the summary and reports are written.
        Listened {
            closing: recorder.map(|r| tokio::spawn(r.close())),
            tally,
            json: json_report,
            json_failed,
        }
    });
    let _ = events.send(RunEvent::Started(info.clone())).await;
    // Stop conditions: the service must be healthy before the first trial, stay so during
    // the run, and be so after the last.
    let probes: Vec<probe::Probe> = plan
        .experiments
        .iter()
        .flat_map(|e| {
            probe::probes_of(&e.loaded.experiment.spec, &e.loaded.dir).unwrap_or_default()
        })
        .collect();
    let answers = probe::Answers::default();
    let mut reason = None;
    let mut status = RunStatus::Finished;
    let counts = if let Some(breach) = probe::check_all(&probes, "before", &answers).await {
        status = RunStatus::Skipped;
        reason = Some(format!("not in its steady state: {}", breach.reason));
        model::Counts::default()
    } else {
        let breach = Arc::new(std::sync::Mutex::new(None));
        let stop_watch = CancellationToken::new();
        let watch = (!probes.is_empty()).then(|| {
            tokio::spawn(probe::watch(
                probes.clone(),
                answers.clone(),
                cancel.clone(),
                stop_watch.clone(),
                breach.clone(),
            ))
        });
        let counts = runner::execute(plan, &options, events.clone(), cancel.clone()).await;
        stop_watch.cancel();
        if let Some(watch) = watch {
            let _ = watch.await;
        }
        let breached = breach.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(breach) = breached {
            status = RunStatus::Aborted;
            reason = Some(breach.reason);
        } else if cancel.is_cancelled() {
            status = RunStatus::Interrupted;
        } else if let Some(breach) = probe::check_all(&probes, "after", &answers).await {
            status = RunStatus::Aborted;
            reason = Some(breach.reason);
        }
        counts
    };
    // The guardian's last sweep, its cgroups removed, and it reaped: nothing of this run
    // outlives it.
    atropos_injector::shutdown();
    let end = Arc::new(RunEnd {
        ended_at: unix_now(),
        status,
        passed: usize::try_from(counts.pass).unwrap_or(usize::MAX),
        failed: usize::try_from(counts.fail).unwrap_or(usize::MAX),
        errors: usize::try_from(counts.error).unwrap_or(usize::MAX),
        reason,
        probes: answers.all(),
    });
    let _ = events.send(RunEvent::Finished(end.clone())).await;
    drop(events);
    let Ok(mut listened) = listener.await else {
        return EXIT_HARNESS;
    };
    let tally = listened
        .tally
        .take()
        .unwrap_or_else(|| RunTally::new(&info));
    let closing = listened.closing.take();
    // The summary and reports are written on a blocking thread while this one drives the
    // closing of the store file (a checkpoint and two fsyncs).
    let reports = tokio::task::spawn_blocking(move || {
        write_reports(
            &info,
            &end,
            &tally,
            listened,
            json.as_deref(),
            junit.as_deref(),
        )
    });
    let closed = async {
        match closing {
            Some(closing) => closing.await.ok(),
            None => None,
        }
    };
    let (code, closed) = tokio::join!(reports, closed);
    if let Some(Err(err)) = closed {
        eprintln!("warning: results store: {err:#}");
    }
    drop(interrupted);
    code.unwrap_or(EXIT_HARNESS)
}

/// What the listener of a run's events hands back when the run has ended.
struct Listened {
    closing: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    tally: Option<RunTally>,
    json: Option<report::JsonReport>,
    json_failed: bool,
}

/// Prints the summary and finishes the JSON and JUnit reports; returns the exit code.
fn write_reports(
    info: &RunInfo,
    end: &RunEnd,
    tally: &RunTally,
    listened: Listened,
    json: Option<&Path>,
    junit: Option<&Path>,
) -> u8 {
    let status = end.status;
    let mut out = String::new();
    for exp in &tally.experiments {
        out.push_str(&report::summary(exp));
    }
    // A breached stop condition is a finding about the service, like a failed expectation;
    // a run skipped because the service was not healthy ran nothing.
    let mut code = if end.failed > 0 || status == RunStatus::Aborted {
        EXIT_FAILED
    } else if end.errors > 0 || matches!(status, RunStatus::Interrupted | RunStatus::Skipped) {
        EXIT_HARNESS
    } else {
        EXIT_OK
    };
    if let Some(reason) = &end.reason {
        out.push_str(&format!("{}: {reason}\n", status.as_str()));
    }
    let own_seeds = info.experiments.iter().any(|e| e.seed != info.seed);
    let replay = if own_seeds {
        "seeds as shown per experiment; rerun the same command to replay".to_owned()
    } else {
        format!("seed {} (replay with --seed {})", info.seed, info.seed)
    };
    let counts = tally.counts();
    out.push_str(&format!(
        "{}: {} in {}{} · {replay}\n",
        match code {
            EXIT_OK => "ok",
            EXIT_FAILED => "FAILED",
            _ => "ERROR",
        },
        report::verdicts(&counts),
        plural(counts.total(), "trial", "trials"),
        match status {
            RunStatus::Finished => "",
            RunStatus::Interrupted => " (interrupted)",
            RunStatus::Aborted => " (aborted)",
            RunStatus::Skipped => " (skipped)",
        },
    ));
    print!("{out}");
    if listened.json_failed {
        code = EXIT_HARNESS;
    }
    if let (Some(path), Some(report)) = (json, listened.json)
        && let Err(err) = report.finish(end, tally)
    {
        eprintln!("error: failed to write {}: {err}", path.display());
        code = EXIT_HARNESS;
    }
    if let Some(path) = junit
        && let Err(err) = report::write_junit(path, tally)
    {
        eprintln!("error: failed to write {}: {err}", path.display());
        code = EXIT_HARNESS;
    }
    code
}

/// On the first SIGINT or SIGTERM: stop starting trials and kill the running targets (the
/// run then writes what it has). On a second one: kill everything of this run and exit.
fn watch_signals(
    cancel: CancellationToken,
    run_id: String,
    controlled: bool,
) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        let mut hup = if controlled {
            signal(SignalKind::hangup()).ok()
        } else {
            None
        };
        let hangup = async |hup: &mut Option<tokio::signal::unix::Signal>| match hup {
            Some(hup) => hup.recv().await,
            None => std::future::pending().await,
        };
        let mut round = 0;
        while round < 2 {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                // The controller that started this run is gone (`atropos serve` sets
                // SIGHUP as its runs' parent-death signal; the kernel may send it once
                // per thread of the dead controller): stop as on the first Ctrl-C, never
                // "at once".
                _ = hangup(&mut hup) => {
                    if !cancel.is_cancelled() {
                        eprintln!(
                            "atropos: the controller that started this run is gone; \
                             killing running targets and writing what was done"
                        );
                        cancel.cancel();
                    }
                    continue;
                }
            }
            if round == 0 {
                eprintln!(
                    "atropos: interrupted; killing running targets and writing what was done (again to quit at once)"
                );
                cancel.cancel();
            } else {
                atropos_injector::orphans::kill_run(&run_id);
                std::process::exit(i32::from(EXIT_HARNESS));
            }
            round += 1;
        }
    })
}

/// Whether `exp` runs on injector nodes.
fn on_node(exp: &plan::ExperimentPlan) -> bool {
    let target = &exp.loaded.experiment.spec.target;
    target.node.is_some() || target.nodes.is_some()
}

/// How the trials of `exp` select and bound what they hit, once its selector was seen to
/// select now (else the error, listing what matched).
fn attach_plan(
    exp: &plan::ExperimentPlan,
    spec: &crate::spec::AttachSpec,
    protect: &[i32],
) -> Result<plan::AttachPlan, String> {
    let (_, chosen, lowered) = attached(exp, spec, protect)?;
    Ok(plan::AttachPlan {
        lowered,
        max_signals: spec
            .max_signals
            .map_or_else(|| chosen * fault_steps(exp), |m| m as usize),
        cooldown: spec.cooldown.unwrap_or(plan::DEFAULT_COOLDOWN),
    })
}

/// The signals every trial the run makes of `exp` sends to each process it hits (a pause
/// counts its SIGSTOP and its SIGCONT).
fn fault_steps(exp: &plan::ExperimentPlan) -> usize {
    exp.faults
        .iter()
        .filter(|f| f.selected)
        .map(|f| plan::signals_per_target(&f.lowered) * exp.per_fault as usize)
        .sum()
}

/// The processes an `attach:` selects now in words, with how many were chosen; or why it
/// cannot select.
fn attached(
    exp: &plan::ExperimentPlan,
    attach: &crate::spec::AttachSpec,
    protect: &[i32],
) -> Result<(String, usize, crate::spec::attach::Lowered), String> {
    use rand::SeedableRng;
    use std::fmt::Write;
    let file = exp.loaded.file.display();
    let name = &exp.info.name;
    let error = |e: &dyn std::fmt::Display| {
        format!("error: {file}: experiment {name}: spec.target.attach: {e}")
    };
    let lowered =
        crate::spec::attach::lower(attach, &exp.loaded.dir, protect).map_err(|e| error(&e))?;
    let selection = lowered
        .selector
        .resolve(&lowered.guard)
        .map_err(|e| error(&e))?;
    let refused = selection.refused.clone();
    // Drawn as the first trial will draw.
    let mut rng = match exp.trials().next() {
        Some(first) => crate::runner::attach::selection_rng(exp.info.seed, &first),
        None => rand::rngs::ChaCha8Rng::seed_from_u64(exp.info.seed),
    };
    let matching = selection.allowed.len();
    let chosen = selection
        .choose(lowered.count, lowered.max_targets, |n| {
            rng.random_range(0..n)
        })
        .map_err(|e| {
            let help = match e {
                atropos_injector::attach::SelectError::TooMany { .. } => {
                    "narrow the selector, or raise `max_targets` if every one of them may be hit"
                }
                _ => {
                    "every criterion must hold; a refused process is listed with why (another \
                     user's processes need `allow_users:`)"
                }
            };
            format!("{}\nhelp: {help}", error(&e))
        })?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  target: attach: {} of {} matching (max_targets {})",
        chosen.len(),
        matching,
        lowered.max_targets
    );
    for p in &chosen {
        let _ = writeln!(
            out,
            "    pid {} · start time {} (clock ticks after boot) · uid {} · cgroup {} · {}",
            p.pid,
            p.starttime,
            p.uid,
            p.cgroup,
            crate::spec::clip(&p.command_line(), 120)
        );
    }
    for (p, why) in &refused {
        let _ = writeln!(
            out,
            "    refused pid {} ({why}): {}",
            p.pid,
            crate::spec::clip(&p.command_line(), 120)
        );
    }
    Ok((out, chosen.len(), lowered))
}

/// The plan in words: what would be spawned, hit, and when; for an `attach:` target, the
/// processes it selects now.
fn dry_run(plan: &RunPlan, protect: &[i32]) -> Result<String, String> {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "dry run {} · seed {} · {} trials (nothing is spawned)",
        plan.run_id,
        plan.seed,
        plan.trial_count()
    );
    for exp in &plan.experiments {
        let spec = &exp.loaded.experiment.spec;
        let _ = writeln!(
            out,
            "\n{} ({}) seed {}",
            exp.info.name,
            exp.loaded.file.display(),
            exp.info.seed
        );
        match (&spec.target.run, &spec.target.attach) {
            (Some(run), _) => {
                let _ = writeln!(
                    out,
                    "  target: {} (cwd {})",
                    run.command.join(" "),
                    plan::target_cwd(&exp.loaded).display()
                );
            }
            (None, Some(_)) if on_node(exp) => {
                let _ = writeln!(
                    out,
                    "  attach: selected by each injector node from its own /proc when the trial runs"
                );
            }
            (None, Some(attach)) => {
                let (text, chosen, _) = attached(exp, attach, protect)?;
                out.push_str(&text);
                let steps = fault_steps(exp);
                let most = chosen * steps;
                let limit = attach.max_signals.map_or(most, |m| m as usize);
                let _ = writeln!(
                    out,
                    "  blast radius: {chosen} target(s) × {steps} signal(s) each (a pause is two) = at most {most} signals; max_signals {limit}{}",
                    if limit < most {
                        format!(" (the run stops once it has sent {limit})")
                    } else {
                        String::new()
                    }
                );
            }
            // Validation refuses a target that is neither.
            (None, None) => {}
        }
        let _ = writeln!(
            out,
            "  phases: start → {} → exited",
            exp.info.phases.join(" → ")
        );
        let attached = spec.target.attach.is_some();
        if attached {
            let _ = writeln!(
                out,
                "  trials without a baseline (the service is already up), one after another, \
                 each selecting afresh, {} apart",
                crate::judge::human(
                    spec.target
                        .attach
                        .as_ref()
                        .and_then(|a| a.cooldown)
                        .unwrap_or(plan::DEFAULT_COOLDOWN)
                )
            );
        } else {
            let _ = writeln!(
                out,
                "  baseline: 1 trial without faults, stopped with SIGTERM after the last phase"
            );
        }
        for (f, fault) in exp.faults.iter().enumerate() {
            if !fault.selected {
                continue;
            }
            let steps: Vec<String> = fault
                .lowered
                .steps
                .iter()
                .map(|s| {
                    let what = match s.action {
                        Action::Pause(d) => format!("pause {}", humantime::format_duration(d)),
                        Action::Signal(sig) => sig.to_string(),
                    };
                    let to = match &s.aim {
                        Aim::Main if attached => "each chosen process".to_owned(),
                        Aim::Main => "main process".to_owned(),
                        Aim::Group => "process group".to_owned(),
                        Aim::Descendant(re) => format!("descendants matching /{re}/"),
                    };
                    let when = match s.when {
                        When::Exited(ExitedState::Zombie) => "after exit (zombie)".to_owned(),
                        When::Exited(ExitedState::Reaped) => "after exit (reaped)".to_owned(),
                        When::Phase { index, offset } => {
                            format!("at {} + {offset}", exp.info.phases[index])
                        }
                        When::After(d) => {
                            format!("{} after the previous step", humantime::format_duration(d))
                        }
                    };
                    format!("{what} → {to} {when}")
                })
                .collect();
            // The first few trials of this fault, made as the run would make them.
            let trials: Vec<_> = exp
                .trials()
                .skip_while(|t| t.fault != Some(f))
                .take_while(|t| t.fault == Some(f))
                .take(9)
                .collect();
            let _ = writeln!(
                out,
                "  {} × {}: {}",
                fault.lowered.name,
                exp.per_fault,
                steps.join("; then ")
            );
            let fractions: Vec<String> = trials
                .iter()
                .filter_map(|t| t.fractions.first().copied().flatten())
                .take(8)
                .map(|u| format!("{u:.3}"))
                .collect();
            if !fractions.is_empty() {
                let _ = writeln!(
                    out,
                    "    random offset fractions: {}{}",
                    fractions.join(" "),
                    if exp.per_fault > 8 { " …" } else { "" }
                );
            }
        }
    }
    Ok(out)
}
