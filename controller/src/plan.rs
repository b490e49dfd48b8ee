//! Planning a run: which trials, in which order, with which random offsets.
//!
//! All randomness comes from one ChaCha8 generator per experiment, seeded from the run's
//! seed (or the experiment's `seed:`), drawn in a fixed order (fault by fault, trial by
//! trial, step by step). The same seed therefore gives the same plan, whatever `--jobs` is.
//! A random offset is drawn as a fraction of its window; the window of `offset: random` is
//! the phase's length in this run's baseline trial.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atropos_injector as inj;
use rand::{RngExt, SeedableRng};
use regex::Regex;
use sha2::Digest;

use crate::record::ExperimentInfo;
use crate::report::model::FaultKind;
use crate::spec::{self, Expect, Loaded, LoweredFault, Offset, Valid, When};
use crate::template::{self, Vars};

/// Default limit for one trial.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default grace after a terminating step.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// Default hold of the last phase in the baseline.
pub const DEFAULT_HOLD: Duration = Duration::from_millis(200);
/// Lines of output kept per stream.
pub const TAIL_LINES: usize = 50;
/// The fault name of the trial without faults.
pub const BASELINE: &str = "baseline";

/// What the user asked of a run, beyond the files.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Overrides every experiment's seed.
    pub seed: Option<u64>,
    /// Overrides every experiment's `trials`.
    pub trials: Option<u32>,
    /// Only experiments, or `experiment/fault`s, matching this regex.
    pub filter: Option<Regex>,
}

/// The trials of one experiment.
#[derive(Debug, Clone)]
pub struct ExperimentPlan {
    /// Where it came from.
    pub loaded: Loaded,
    /// Its facts for reports and the store.
    pub info: ExperimentInfo,
    /// The trial without faults, run first.
    pub baseline: PlannedTrial,
    /// Its faults, lowered, with what each trial of them shares.
    pub faults: Arc<[FaultPlan]>,
    /// Trials per fault.
    pub per_fault: u32,
    /// The prefix of its trial ids (`RUN-E`).
    prefix: Arc<str>,
    /// The target's working directory, resolved once.
    pub cwd: PathBuf,
    /// Whether any string of the experiment uses `${trial.port}` (else none is reserved).
    pub needs_port: bool,
    /// Whether any string uses `${trial.dir}` (else none is created).
    pub needs_dir: bool,
    /// For an `attach:` target: how its processes are selected, set once the run has
    /// resolved them (`atropos run` does before any trial). Its trials run without a
    /// baseline, one after another.
    pub attach: Option<Arc<AttachPlan>>,
    /// The injector nodes its trials go to (indices into the run's fleet), resolved once
    /// the run has connected to them; empty: in-process.
    pub nodes: Vec<usize>,
}

/// How the trials of an `attach:` experiment find and bound what they hit.
#[derive(Debug, Clone)]
pub struct AttachPlan {
    /// The selector, guard and count.
    pub lowered: spec::attach::Lowered,
    /// The most signals the run may send to attached processes.
    pub max_signals: usize,
    /// The pause between two of its trials.
    pub cooldown: Duration,
}

/// The signals one trial of `fault` sends to each process it hits: one per step, two for a
/// pause (its SIGSTOP and its SIGCONT).
pub fn signals_per_target(fault: &LoweredFault) -> usize {
    fault
        .steps
        .iter()
        .map(|s| match s.action {
            inj::Action::Pause(_) => 2,
            inj::Action::Signal(_) => 1,
        })
        .sum()
}

/// Default pause between two trials against a running service.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(1);

impl ExperimentPlan {
    /// Its fault trials, in plan order, made one at a time as they are taken: a run of a
    /// million trials holds this generator, never a million planned trials. Every call
    /// starts from the experiment's seed and yields the same trials.
    pub fn trials(&self) -> Trials {
        Trials {
            rng: rand::rngs::ChaCha8Rng::seed_from_u64(self.info.seed),
            faults: self.faults.clone(),
            prefix: self.prefix.clone(),
            per_fault: self.per_fault,
            fault: 0,
            index: 0,
        }
    }

    /// How many fault trials [`ExperimentPlan::trials`] yields.
    pub fn fault_trials(&self) -> usize {
        let baselines = usize::from(self.loaded.experiment.spec.target.attach.is_none());
        self.info.planned_trials.saturating_sub(baselines)
    }
}

/// One fault of an experiment's plan.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// The fault, lowered by validation.
    pub lowered: LoweredFault,
    /// The kind of each step, for coverage.
    pub kinds: Vec<FaultKind>,
    /// The expectations in force, shared by every trial of the fault.
    pub expect: Arc<Expect>,
    /// Whether the run's filter selected it: its random draws are made either way, so a
    /// filter does not shift the other faults' offsets.
    pub selected: bool,
}

/// The fault trials of one experiment, made on demand: see [`ExperimentPlan::trials`].
///
/// All randomness is drawn here, in a fixed order: fault by fault, trial by trial, step by
/// step, for selected and unselected faults alike.
#[derive(Debug)]
pub struct Trials {
    rng: rand::rngs::ChaCha8Rng,
    faults: Arc<[FaultPlan]>,
    prefix: Arc<str>,
    per_fault: u32,
    fault: usize,
    index: u32,
}

impl Iterator for Trials {
    type Item = PlannedTrial;

    fn next(&mut self) -> Option<PlannedTrial> {
        loop {
            let fault = self.faults.get(self.fault)?;
            let random = fault.lowered.steps.iter().any(|s| s.when.is_random());
            // A fault that is not run and draws nothing is passed over at once.
            if self.index >= self.per_fault || (!fault.selected && !random) {
                self.fault += 1;
                self.index = 0;
                continue;
            }
            let index = self.index;
            self.index += 1;
            let fractions = fault
                .lowered
                .steps
                .iter()
                .map(|s| s.when.is_random().then(|| self.rng.random::<f64>()))
                .collect();
            if fault.selected {
                return Some(PlannedTrial {
                    id: format!("{}-{}-{index}", self.prefix, self.fault),
                    fault: Some(self.fault),
                    fault_name: fault.lowered.name.clone(),
                    index,
                    fractions,
                    expect: fault.expect.clone(),
                });
            }
        }
    }
}

/// One trial before it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTrial {
    /// Unique id.
    pub id: String,
    /// Index into `spec.faults`; `None` for the baseline.
    pub fault: Option<usize>,
    /// The fault's name, or `baseline`.
    pub fault_name: String,
    /// Index among the trials of this fault.
    pub index: u32,
    /// For each step, the fraction drawn for a random offset.
    pub fractions: Vec<Option<f64>>,
    /// The expectations in force, shared by every trial of the fault.
    pub expect: Arc<Expect>,
}

/// A whole run's plan.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Unique run id: the prefix of every trial id.
    pub run_id: String,
    /// The run's seed.
    pub seed: u64,
    /// The experiments, in file order.
    pub experiments: Vec<ExperimentPlan>,
}

impl RunPlan {
    /// Every trial, baselines included.
    pub fn trial_count(&self) -> usize {
        self.experiments.iter().map(|e| e.info.planned_trials).sum()
    }
}

/// Plans every trial of `valid` with the run's `seed`.
pub fn plan(valid: Vec<Valid>, run_id: &str, seed: u64, options: &PlanOptions) -> RunPlan {
    let mut experiments = Vec::new();
    for (e, Valid { loaded, faults }) in valid.into_iter().enumerate() {
        let exp = &loaded.experiment;
        let name = &exp.metadata.name;
        let whole = options.filter.as_ref().is_none_or(|re| re.is_match(name));
        let fault_selected = |fault: &str| {
            whole
                || options
                    .filter
                    .as_ref()
                    .is_some_and(|re| re.is_match(&format!("{name}/{fault}")))
        };
        if !faults.iter().any(|f| fault_selected(&f.name)) {
            continue;
        }
        let exp_seed = options.seed.or(exp.spec.seed).unwrap_or(seed);
        let per_fault = options.trials.unwrap_or(exp.spec.trials);
        let faults: Arc<[FaultPlan]> = faults
            .into_iter()
            .map(|lowered| {
                // One copy per fault, shared by its trials.
                let expect = Arc::new(match exp.spec.overrides.get(&lowered.name) {
                    Some(over) => exp.spec.expect.overridden_by(over),
                    None => exp.spec.expect.clone(),
                });
                FaultPlan {
                    kinds: crate::report::model::step_kinds(&lowered),
                    selected: fault_selected(&lowered.name),
                    lowered,
                    expect,
                }
            })
            .collect();
        let selected = faults.iter().filter(|f| f.selected).count();
        // A running service has no baseline: it is already up, and is never stopped.
        let baselines = usize::from(exp.spec.target.attach.is_none());
        let baseline = PlannedTrial {
            id: format!("{run_id}-{e}-b"),
            fault: None,
            fault_name: BASELINE.to_owned(),
            index: 0,
            fractions: Vec::new(),
            expect: Arc::new(exp.spec.expect.clone()),
        };
        let info = ExperimentInfo {
            name: name.clone(),
            file: loaded.file.clone(),
            source: loaded.source.clone(),
            content_hash: hex(&sha2::Sha256::digest(loaded.source.as_bytes())),
            labels: exp.metadata.labels.clone(),
            phases: exp.spec.phases.iter().map(|p| p.name.clone()).collect(),
            faults: faults.iter().map(|f| f.lowered.name.clone()).collect(),
            seed: exp_seed,
            planned_trials: selected * per_fault as usize + baselines,
        };
        let cwd = target_cwd(&loaded);
        let needs_port = loaded.source.contains("${trial.port}");
        let needs_dir = loaded.source.contains("${trial.dir}");
        experiments.push(ExperimentPlan {
            loaded,
            info,
            baseline,
            faults,
            per_fault,
            prefix: format!("{run_id}-{e}").into(),
            cwd,
            needs_port,
            needs_dir,
            attach: None,
            nodes: Vec::new(),
        });
    }
    RunPlan {
        run_id: run_id.to_owned(),
        seed,
        experiments,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How long each phase lasted in the baseline; `None` when it was never entered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhaseLengths(pub Vec<Option<u64>>);

impl PhaseLengths {
    /// Measures phase lengths from a baseline observation: until the next phase was
    /// entered, or the target exited, or atropos stopped it.
    pub fn from_baseline(obs: &inj::Observation) -> PhaseLengths {
        let ends: Vec<u64> = obs
            .phases
            .iter()
            .filter_map(|p| p.entered_ns)
            .chain(obs.exit.as_ref().map(|e| e.at_ns))
            .chain(obs.stop_signal.as_ref().map(|s| s.at_ns))
            .collect();
        PhaseLengths(
            obs.phases
                .iter()
                .map(|p| {
                    let start = p.entered_ns?;
                    ends.iter()
                        .copied()
                        .filter(|e| *e > start)
                        .min()
                        .map(|end| end - start)
                })
                .collect(),
        )
    }
}

/// Output patterns an expectation watches, in the order the injector reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    /// `stdout.contains[0]` and so on.
    pub name: String,
    /// The stream.
    pub stream: inj::Stream,
    /// The regex as written.
    pub pattern: String,
    /// Whether a match is required (`contains`) or forbidden (`not_contains`).
    pub required: bool,
}

/// The watched patterns of `expect`, in a fixed order.
pub fn watches(expect: &Expect) -> Vec<WatchSpec> {
    let mut out = Vec::new();
    for (stream, name, spec) in [
        (inj::Stream::Stdout, "stdout", &expect.stdout),
        (inj::Stream::Stderr, "stderr", &expect.stderr),
    ] {
        let Some(spec) = spec else { continue };
        for (i, p) in spec.contains.iter().enumerate() {
            out.push(WatchSpec {
                name: format!("{name}.contains[{i}]"),
                stream,
                pattern: p.clone(),
                required: true,
            });
        }
        for (i, p) in spec.not_contains.iter().enumerate() {
            out.push(WatchSpec {
                name: format!("{name}.not_contains[{i}]"),
                stream,
                pattern: p.clone(),
                required: false,
            });
        }
    }
    out
}

/// What a trial needs that only exists once it starts.
#[derive(Debug, Clone)]
pub struct TrialEnv {
    /// The port for `${trial.port}`.
    pub port: u16,
    /// The directory for `${trial.dir}`.
    pub dir: PathBuf,
}

impl TrialEnv {
    /// For a trial planned for an injector node: the port and folder are the node's, and
    /// stay holes in the plan that it fills.
    pub fn on_node() -> TrialEnv {
        TrialEnv {
            port: 0,
            dir: PathBuf::from(atropos_injector::wire::DIR_HOLE),
        }
    }

    /// The template values for `trial`.
    pub fn vars<'a>(&'a self, trial: &'a PlannedTrial) -> Vars<'a> {
        Vars {
            port: self.port,
            dir: &self.dir,
            id: &trial.id,
        }
    }
}

/// The working directory of an experiment's target.
pub fn target_cwd(loaded: &Loaded) -> PathBuf {
    let base = &loaded.dir;
    let written = loaded.experiment.spec.target.run.as_ref();
    let cwd = match written.and_then(|r| r.cwd.as_ref()) {
        Some(c) => base.join(c),
        None => base.clone(),
    };
    std::fs::canonicalize(&cwd).unwrap_or(cwd)
}

/// `path` as is when absolute, else taken from `cwd`.
pub fn resolve(cwd: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_owned()
    } else {
        cwd.join(p)
    }
}

/// `command` with templates expanded and a relative program path (`../bin/api`) made
/// absolute from `cwd`; a bare name (`sh`) is left for the PATH lookup.
pub fn argv(command: &[String], cwd: &Path, vars: &Vars<'_>) -> Vec<String> {
    let mut argv: Vec<String> = command.iter().map(|a| template::expand(a, vars)).collect();
    if let Some(program) = argv.first_mut()
        && program.contains('/')
    {
        *program = resolve(cwd, program).to_string_lossy().into_owned();
    }
    argv
}

/// The command to spawn, templates expanded, a relative program made absolute from `cwd`.
pub fn command(loaded: &Loaded, cwd: &Path, vars: &Vars<'_>) -> inj::RunTarget {
    // An attached target spawns nothing: `atropos run` refuses it before any trial, and an
    // empty command could not start.
    let Some(run) = &loaded.experiment.spec.target.run else {
        return inj::RunTarget {
            argv: Vec::new(),
            env: Vec::new(),
            cwd: cwd.to_owned(),
        };
    };
    let argv = argv(&run.command, cwd, vars);
    let cwd = cwd.to_owned();
    let env = run
        .env
        .iter()
        .map(|(k, v)| (k.clone(), template::expand(v, vars)))
        .collect();
    inj::RunTarget { argv, env, cwd }
}

/// The injector's plan for `trial`; `lengths` are the baseline's phase lengths (empty for
/// the baseline itself).
///
/// `attached`: the processes an `attach:` target's trial hits, selected just before it.
pub fn injector_plan(
    exp: &ExperimentPlan,
    trial: &PlannedTrial,
    env: &TrialEnv,
    lengths: &PhaseLengths,
    attached: Option<inj::AttachTarget>,
) -> (inj::TrialPlan, Option<u64>) {
    let spec = &exp.loaded.experiment.spec;
    let vars = env.vars(trial);
    let cwd = exp.cwd.clone();
    let is_attached = attached.is_some();
    let finish = match (&attached, trial.fault) {
        (Some(_), _) => inj::Finish::Observe,
        (None, None) => inj::Finish::Stop,
        (None, Some(_)) => inj::Finish::AwaitExit,
    };
    let target = match attached {
        Some(attached) => inj::Target::Attach(attached),
        None => inj::Target::Run(command(&exp.loaded, &cwd, &vars)),
    };
    let phases = phase_plans(spec, &vars, &cwd);
    let hold = spec.hold.unwrap_or(DEFAULT_HOLD);
    let mut first_offset = None;
    let steps = match trial.fault {
        None => Vec::new(),
        Some(f) => exp.faults[f]
            .lowered
            .steps
            .iter()
            .enumerate()
            .map(|(j, step)| {
                let when = when(
                    step.when,
                    trial.fractions.get(j).copied().flatten(),
                    lengths,
                    hold,
                );
                if j == 0
                    && let inj::When::Phase { offset, .. } = &when
                {
                    first_offset = Some(u64::try_from(offset.as_nanos()).unwrap_or(u64::MAX));
                }
                inj::StepPlan {
                    action: step.action.clone(),
                    aim: step.aim.clone(),
                    when,
                }
            })
            .collect(),
    };
    let watches = watches(&trial.expect)
        .into_iter()
        .map(|w| inj::Watch {
            stream: w.stream,
            regex: template::expand(&w.pattern, &vars),
        })
        .collect();
    // How long a target has to exit after a terminating step; a running service that need
    // not exit is watched for `hold` after its last step.
    let exit_within = trial.expect.exit.as_ref().and_then(|e| e.within);
    let grace = match (is_attached, exit_within) {
        (_, Some(within)) => within,
        (true, None) => hold,
        (false, None) => DEFAULT_GRACE,
    };
    let plan = inj::TrialPlan {
        format: inj::PLAN_FORMAT,
        id: trial.id.clone(),
        target,
        phases,
        steps,
        watches,
        finish,
        hold,
        grace,
        timeout: spec.timeout.unwrap_or(DEFAULT_TIMEOUT),
        sample_resources: trial.expect.resources.is_some(),
        tail_lines: TAIL_LINES,
        kill_orphans: trial.expect.orphans == Some(spec::OrphanPolicy::Kill),
    };
    (plan, first_offset)
}

/// The phases with their markers' templates expanded and paths made absolute.
pub fn phase_plans(spec: &spec::Spec, vars: &Vars<'_>, cwd: &Path) -> Vec<inj::PhasePlan> {
    spec.phases
        .iter()
        .map(|p| {
            let marker = match &p.marker {
                spec::Marker::Stdout(re) => inj::Marker::Stdout(template::expand(re, vars)),
                spec::Marker::Stderr(re) => inj::Marker::Stderr(template::expand(re, vars)),
                spec::Marker::Log(log) => inj::Marker::Log {
                    path: resolve(cwd, &template::expand(&log.path, vars)),
                    regex: template::expand(&log.regex, vars),
                    from: None,
                },
                spec::Marker::Journald(j) => inj::Marker::Journald {
                    unit: template::expand(&j.unit, vars),
                    regex: template::expand(&j.regex, vars),
                    directory: j
                        .directory
                        .as_ref()
                        .map(|d| resolve(cwd, &template::expand(d, vars))),
                    since_us: None,
                },
                spec::Marker::Listen(port) => {
                    inj::Marker::Listen(template::expand(&port.0, vars).parse().unwrap_or(0))
                }
                spec::Marker::Http(url) => inj::Marker::Http(template::expand(url, vars)),
                spec::Marker::File(path) => {
                    inj::Marker::File(resolve(cwd, &template::expand(path, vars)))
                }
                spec::Marker::Delay(d) => inj::Marker::Delay(*d),
            };
            inj::PhasePlan {
                name: p.name.clone(),
                marker,
                within: p.within,
            }
        })
        .collect()
}

/// The injector's moment for a lowered step: a random offset made concrete with its drawn
/// `fraction` of its window (for `random`, the phase's length in the baseline).
fn when(when: When, fraction: Option<f64>, lengths: &PhaseLengths, hold: Duration) -> inj::When {
    match when {
        When::Exited(state) => inj::When::Exited(state),
        When::After(d) => inj::When::After(d),
        When::Phase { index, offset } => {
            let u = fraction.unwrap_or(0.0);
            let offset = match offset {
                Offset::Fixed(d) => d,
                Offset::Random => {
                    let window = lengths
                        .0
                        .get(index)
                        .copied()
                        .flatten()
                        .unwrap_or_else(|| u64::try_from(hold.as_nanos()).unwrap_or(0));
                    Duration::from_nanos((window as f64 * u) as u64)
                }
                Offset::Between(a, b) => {
                    a + Duration::from_nanos(((b - a).as_nanos() as f64 * u) as u64)
                }
            };
            inj::When::Phase { index, offset }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    const EXPERIMENT: &str = r#"apiVersion: atropos/v1
kind: Experiment
metadata: { name: drawn }
spec:
  target:
    run: { command: ["true"] }
  phases:
    - { name: ready, marker: { stdout: "^ready$" } }
  faults:
    - { name: first, signal: SIGTERM, at: { phase: ready, offset: random } }
    - { name: fixed, signal: SIGINT, at: { phase: ready, offset: 5ms } }
    - name: second
      steps:
        - { pause: 10ms, at: { phase: ready, offset: "random(1ms..9ms)" } }
        - { signal: SIGKILL, after: 1ms }
  trials: 4
"#;

    fn planned(filter: Option<&str>) -> RunPlan {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.yaml");
        std::fs::write(&path, EXPERIMENT).unwrap();
        let valid = crate::spec::load_all(&[path]).unwrap();
        let options = PlanOptions {
            filter: filter.map(|f| Regex::new(f).unwrap()),
            ..PlanOptions::default()
        };
        plan(valid, "rtest", 7, &options)
    }

    #[test]
    fn trials_are_made_on_demand_the_same_every_time_and_as_many_as_planned() {
        let run = planned(None);
        let exp = &run.experiments[0];
        let once: Vec<PlannedTrial> = exp.trials().collect();
        let again: Vec<PlannedTrial> = exp.trials().collect();
        assert_eq!(once, again, "the same seed makes the same trials");
        assert_eq!(once.len(), 12);
        assert_eq!(once.len(), exp.fault_trials());
        assert_eq!(run.trial_count(), 13, "with the baseline");
        let ids: Vec<&str> = once.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(
            ids[..5],
            [
                "rtest-0-0-0",
                "rtest-0-0-1",
                "rtest-0-0-2",
                "rtest-0-0-3",
                "rtest-0-1-0"
            ]
        );
        // One draw per random step, none for a fixed one.
        assert!(
            once[..4]
                .iter()
                .all(|t| matches!(t.fractions[..], [Some(_)]))
        );
        assert!(once[4..8].iter().all(|t| t.fractions == [None]));
        assert!(
            once[8..]
                .iter()
                .all(|t| matches!(t.fractions[..], [Some(_), None]))
        );
        let drawn: std::collections::HashSet<u64> = once
            .iter()
            .flat_map(|t| t.fractions.iter().flatten())
            .map(|u| u.to_bits())
            .collect();
        assert_eq!(drawn.len(), 8, "every draw is its own");
    }

    #[test]
    fn a_filter_leaves_the_draws_of_the_faults_it_keeps_as_they_were() {
        let all: Vec<PlannedTrial> = planned(None).experiments[0].trials().collect();
        let run = planned(Some("^drawn/second$"));
        let exp = &run.experiments[0];
        let kept: Vec<PlannedTrial> = exp.trials().collect();
        assert_eq!(kept.len(), 4);
        assert_eq!(exp.fault_trials(), 4);
        assert_eq!(
            kept[..],
            all[8..],
            "the first fault's draws were made, not skipped"
        );
    }
}
