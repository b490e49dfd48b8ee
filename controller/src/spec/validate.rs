//! The meaning checks that run after parsing: every problem in every file, located.

use std::collections::{HashMap, HashSet};

use regex::Regex;

use atropos_injector::{self as inj, Action};

use super::Offset;
use super::experiment::{Aim, At, ExitedAt, Expect, Fault, Marker, Step};
use super::load::Loaded;
use super::locate::locate;
use super::lowered::{LoweredFault, LoweredStep, Valid, When};
use super::names::check_name;
use super::problem::{Problem, suggest};
use super::timing::check_timing;
use crate::template;

/// The longest regex compiled: compiling is the costly part of validation, and no marker or
/// expectation needs more.
const MAX_REGEX: usize = 4096;

/// Phase names with a meaning of their own.
pub const IMPLICIT_PHASES: [&str; 2] = ["start", "exited"];

/// The experiment being checked and the problems found in it so far.
pub(super) struct Ctx<'a> {
    loaded: &'a Loaded,
    problems: Vec<Problem>,
    /// Problems past [`MAX_REPORTED`], counted but not located.
    omitted: usize,
}

/// The most problems located and shown per experiment: locating one searches the document,
/// and a file of 1,000 broken faults took 2.4 s to say so.
const MAX_REPORTED: usize = 10;

impl Ctx<'_> {
    /// Records a problem at `key:` (preferably followed by `value`) after the `anchor` item.
    pub(super) fn report(
        &mut self,
        field: String,
        anchor: Option<&str>,
        key: &str,
        value: Option<&str>,
        message: String,
    ) {
        if self.problems.len() >= MAX_REPORTED {
            self.omitted += 1;
            return;
        }
        let spot = locate(&self.loaded.source, anchor, key, value);
        self.problems.push(Problem {
            file: self.loaded.file.clone(),
            line: spot.line + self.loaded.first_line - 1,
            column: spot.column,
            field,
            message,
        });
    }

    fn regex(&mut self, field: String, anchor: Option<&str>, key: &str, re: &str) {
        self.regex_ok(field, anchor, key, re);
    }

    /// [`Ctx::regex`], saying whether the regex is good.
    fn regex_ok(&mut self, field: String, anchor: Option<&str>, key: &str, re: &str) -> bool {
        if re.len() > MAX_REGEX {
            let message = format!(
                "a regex of {} bytes; expected at most {MAX_REGEX} (a line to match, not a file)",
                re.len()
            );
            self.report(field, anchor, key, None, message);
            return false;
        }
        let before = self.problems.len() + self.omitted;
        self.template(field.clone(), anchor, key, re);
        let probe = re
            .replace("${trial.port}", "1")
            .replace("${trial.dir}", "/tmp")
            .replace("${trial.id}", "x");
        if let Err(err) = Regex::new(&probe) {
            let detail = err
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_owned();
            self.report(
                field,
                anchor,
                key,
                Some(re),
                format!("`{re}` is not a valid regex: {detail}"),
            );
        }
        self.problems.len() + self.omitted == before
    }

    fn template(&mut self, field: String, anchor: Option<&str>, key: &str, text: &str) {
        if let Err(message) = template::check(text) {
            self.report(field, anchor, key, Some(text), message);
        }
    }
}

/// The variable of an attached target's pid in a log marker's regex.
const PID_VARIABLE: &str = atropos_injector::markers::TARGET_PID;

/// Checks the meaning of every loaded experiment; names must be unique across all of them.
pub fn validate(all: &[Loaded]) -> Vec<Problem> {
    check_all(all).1
}

/// Turns loaded experiments into valid ones, or says every problem found in them.
pub fn check(all: Vec<Loaded>) -> Result<Vec<Valid>, Vec<Problem>> {
    let (faults, problems) = check_all(&all);
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(all
        .into_iter()
        .zip(faults)
        .map(|(loaded, faults)| Valid { loaded, faults })
        .collect())
}

/// Every experiment's lowered faults (complete only where there are no problems), and the
/// problems.
fn check_all(all: &[Loaded]) -> (Vec<Vec<LoweredFault>>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut lowered = Vec::with_capacity(all.len());
    let mut names: HashMap<&str, &Loaded> = HashMap::new();
    for loaded in all {
        let mut ctx = Ctx {
            loaded,
            problems: Vec::new(),
            omitted: 0,
        };
        lowered.push(check_experiment(&mut ctx));
        let name = loaded.experiment.metadata.name.as_str();
        if let Some(first) = names.get(name) {
            let message = format!(
                "experiment `{name}` is defined twice (first in {}:{}); expected unique names",
                first.file.display(),
                first.first_line
            );
            ctx.report("metadata.name".into(), None, "name", Some(name), message);
        } else {
            names.insert(name, loaded);
        }
        if ctx.omitted > 0 {
            ctx.problems.push(Problem {
                file: loaded.file.clone(),
                line: loaded.first_line,
                column: 1,
                field: String::new(),
                message: format!(
                    "and {} more problems in experiment `{name}`, not shown; fix the ones \
                     above first",
                    ctx.omitted
                ),
            });
        }
        problems.extend(ctx.problems);
    }
    (lowered, problems)
}

/// Checks one experiment; returns the faults that lowered without a problem.
fn check_experiment(ctx: &mut Ctx<'_>) -> Vec<LoweredFault> {
    let exp = &ctx.loaded.experiment;
    if exp.api_version != "atropos/v1" {
        let v = exp.api_version.clone();
        ctx.report(
            "apiVersion".into(),
            None,
            "apiVersion",
            Some(&v),
            format!("`{v}` is not supported; expected atropos/v1"),
        );
    }
    if exp.kind != "Experiment" {
        let v = exp.kind.clone();
        ctx.report(
            "kind".into(),
            None,
            "kind",
            Some(&v),
            format!("`{v}` is not a kind atropos runs; expected Experiment"),
        );
    }
    if let Err(message) = check_name(&exp.metadata.name) {
        ctx.report("metadata.name".into(), None, "name", None, message);
    }
    let spec = &exp.spec;
    if spec.target.node.is_some() && spec.target.nodes.is_some() {
        ctx.report(
            "spec.target.nodes".into(),
            None,
            "nodes",
            None,
            "both `node` and `nodes`; expected one: a node by name, or nodes by labels".into(),
        );
    }
    match (&spec.target.run, &spec.target.attach) {
        (Some(run), None) => check_run(ctx, run),
        (None, Some(attach)) => check_attach(ctx, attach, "spec.target.attach", true),
        (Some(_), Some(_)) => ctx.report(
            "spec.target".into(),
            None,
            "attach",
            None,
            "both `run` and `attach`; expected one: a command to spawn, or running processes"
                .into(),
        ),
        (None, None) => ctx.report(
            "spec.target".into(),
            None,
            "target",
            None,
            "expected `run` (a command atropos spawns) or `attach` (running processes it selects)"
                .into(),
        ),
    }
    if spec.target.attach.is_some() {
        check_attached_spec(ctx, spec);
    }
    if !(1..=1_000_000).contains(&spec.trials) {
        ctx.report(
            "spec.trials".into(),
            None,
            "trials",
            None,
            format!("{} trials; expected 1 to 1000000", spec.trials),
        );
    }
    if let Err(problems) = crate::scheduler::probe::probes_of(spec, std::path::Path::new(".")) {
        for (field, message) in problems {
            let key = field.rsplit('.').next().unwrap_or(&field).to_owned();
            ctx.report(format!("spec.{field}"), None, &key, None, message);
        }
    }
    if let Err(problems) = crate::scheduler::Schedule::of(spec) {
        for (field, message) in problems {
            let key = field.rsplit('.').next().unwrap_or(&field).to_owned();
            let key = key.split('[').next().unwrap_or(&key).to_owned();
            let message = match field.as_str() {
                "schedule" => format!("{message}; expected a cron line, e.g. \"0 14 * * FRI\""),
                "timezone" => format!("{message}; expected e.g. \"Europe/Paris\" or \"UTC\""),
                _ => message,
            };
            ctx.report(format!("spec.{field}"), None, &key, None, message);
        }
    }

    let mut phase_names: Vec<&str> = Vec::new();
    for (i, phase) in spec.phases.iter().enumerate() {
        let field = format!("spec.phases[{i}]");
        let n = phase.name.as_str();
        if let Err(message) = check_name(n) {
            let key = if n.is_empty() { "phases" } else { "name" };
            ctx.report(format!("{field}.name"), None, key, Some(n), message);
        } else if IMPLICIT_PHASES.contains(&n) {
            ctx.report(
                format!("{field}.name"),
                None,
                "name",
                Some(n),
                format!("`{n}` is implicit; expected another name"),
            );
        } else if phase_names.contains(&n) {
            ctx.report(
                format!("{field}.name"),
                None,
                "name",
                Some(n),
                format!("phase `{n}` is defined twice; expected unique names"),
            );
        }
        phase_names.push(n);
        let anchor = Some(n);
        match &phase.marker {
            Marker::Stdout(re) => ctx.regex(format!("{field}.marker.stdout"), anchor, "stdout", re),
            Marker::Stderr(re) => ctx.regex(format!("{field}.marker.stderr"), anchor, "stderr", re),
            Marker::Log(log) => {
                // `${target.pid}`: the attached process's pid, put in by the injector when
                // the trial begins (a daemon that writes its pid into each line).
                let regex = match &spec.target.attach {
                    Some(_) => log.regex.replace(PID_VARIABLE, "1"),
                    None => log.regex.clone(),
                };
                ctx.regex(format!("{field}.marker.log.regex"), anchor, "regex", &regex);
                ctx.template(
                    format!("{field}.marker.log.path"),
                    anchor,
                    "path",
                    &log.path,
                );
            }
            Marker::Journald(journald) => {
                ctx.regex(
                    format!("{field}.marker.journald.regex"),
                    anchor,
                    "regex",
                    &journald.regex,
                );
                // A unit name as systemd spells them: no path, no spaces, a type suffix.
                let unit = &journald.unit;
                let known = [
                    ".service", ".socket", ".scope", ".slice", ".mount", ".timer", ".target",
                ];
                let well_formed = !unit.is_empty()
                    && unit.len() <= 256
                    && unit
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c))
                    && known.iter().any(|k| unit.ends_with(k));
                if !well_formed {
                    ctx.report(
                        format!("{field}.marker.journald.unit"),
                        anchor,
                        "unit",
                        Some(unit),
                        format!(
                            "`{unit}` is not a systemd unit name; expected one such as \
                             `redis-server.service`"
                        ),
                    );
                }
                if let Some(dir) = &journald.directory {
                    ctx.template(
                        format!("{field}.marker.journald.directory"),
                        anchor,
                        "directory",
                        dir,
                    );
                }
            }
            Marker::Listen(port) => {
                let ok = port.0 == "${trial.port}" || port.0.parse::<u16>().is_ok_and(|p| p > 0);
                if !ok {
                    ctx.report(
                        format!("{field}.marker.listen"),
                        anchor,
                        "listen",
                        Some(&port.0),
                        format!(
                            "`{}` is not a port; expected 1-65535 or \"${{trial.port}}\"",
                            port.0
                        ),
                    );
                }
            }
            Marker::Http(url) => {
                ctx.template(format!("{field}.marker.http"), anchor, "http", url);
                if !url.starts_with("http://") {
                    ctx.report(
                        format!("{field}.marker.http"),
                        anchor,
                        "http",
                        Some(url),
                        format!(
                            "`{url}` is not supported; expected a plain http:// URL on this machine"
                        ),
                    );
                }
            }
            Marker::File(path) => {
                ctx.template(format!("{field}.marker.file"), anchor, "file", path)
            }
            Marker::Delay(_) => {}
        }
    }

    let mut fault_names: HashSet<&str> = HashSet::new();
    let mut lowered = Vec::with_capacity(spec.faults.len());
    for (i, fault) in spec.faults.iter().enumerate() {
        let field = format!("spec.faults[{i}]");
        if let Err(message) = check_name(&fault.name) {
            let key = if fault.name.is_empty() {
                "faults"
            } else {
                "name"
            };
            ctx.report(
                format!("{field}.name"),
                None,
                key,
                Some(&fault.name),
                message,
            );
        } else if fault.name == "baseline" {
            ctx.report(
                format!("{field}.name"),
                None,
                "name",
                Some(crate::plan::BASELINE),
                "`baseline` is the name of the trial without faults; expected another name".into(),
            );
        } else if !fault_names.insert(fault.name.as_str()) {
            ctx.report(
                format!("{field}.name"),
                Some(&fault.name),
                "name",
                None,
                format!(
                    "fault `{}` is defined twice; expected unique names",
                    fault.name
                ),
            );
        }
        lowered.extend(check_fault(ctx, &field, fault, &phase_names));
    }
    if spec.faults.is_empty() {
        ctx.report(
            "spec.faults".into(),
            None,
            "faults",
            None,
            "expected at least one fault".into(),
        );
    }
    check_timing(ctx, spec, &lowered);
    check_expect(ctx, "spec.expect", None, &spec.expect, &phase_names);
    for (name, over) in &spec.overrides {
        let field = format!("spec.overrides.{name}");
        if !fault_names.contains(name.as_str()) {
            let hint = suggest(name, fault_names.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            ctx.report(
                field.clone(),
                None,
                name,
                None,
                format!(
                    "no fault is named `{name}`{hint}; expected one of: {}",
                    list(fault_names.iter().copied())
                ),
            );
        }
        check_expect(ctx, &field, Some(name), over, &phase_names);
    }
    lowered
}

fn list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = names.into_iter().collect();
    v.sort();
    if v.is_empty() {
        "(none defined)".into()
    } else {
        v.join(", ")
    }
}

/// Checks a fault and, when it has no problem, returns it lowered.
fn check_fault(
    ctx: &mut Ctx<'_>,
    field: &str,
    fault: &Fault,
    phases: &[&str],
) -> Option<LoweredFault> {
    let anchor = Some(fault.name.as_str());
    let inline =
        fault.signal.is_some() || fault.pause.is_some() || fault.at.is_some() || fault.to.is_some();
    let steps: Vec<Option<LoweredStep>> = match &fault.steps {
        Some(steps) => {
            if inline {
                ctx.report(field.into(), anchor, "steps", None, "has both `steps` and an inline step (signal/pause/to/at); expected one or the other".into());
            }
            if steps.is_empty() {
                ctx.report(
                    format!("{field}.steps"),
                    anchor,
                    "steps",
                    None,
                    "expected at least one step".into(),
                );
            }
            steps
                .iter()
                .enumerate()
                .map(|(j, step)| {
                    check_step(
                        ctx,
                        &format!("{field}.steps[{j}]"),
                        anchor,
                        step,
                        j == 0,
                        phases,
                    )
                })
                .collect()
        }
        None => {
            let step = Step {
                signal: fault.signal,
                pause: fault.pause,
                to: fault.to.clone(),
                at: fault.at.clone(),
                after: None,
            };
            vec![check_step(ctx, field, anchor, &step, true, phases)]
        }
    };
    if inline && fault.steps.is_some() {
        return None;
    }
    let steps: Option<Vec<LoweredStep>> = steps.into_iter().collect();
    Some(LoweredFault {
        name: fault.name.clone(),
        steps: steps.filter(|s| !s.is_empty())?,
    })
}

/// Checks a step and, when it has no problem, returns it lowered.
fn check_step(
    ctx: &mut Ctx<'_>,
    field: &str,
    anchor: Option<&str>,
    step: &Step,
    first: bool,
    phases: &[&str],
) -> Option<LoweredStep> {
    let action = match (step.signal, step.pause) {
        (Some(_), Some(_)) => {
            ctx.report(
                field.into(),
                anchor,
                "pause",
                None,
                "has both `signal` and `pause`; expected one".into(),
            );
            None
        }
        (None, None) => {
            ctx.report(
                field.into(),
                anchor,
                "name",
                None,
                "expected `signal: SIGNAME` or `pause: DURATION`".into(),
            );
            None
        }
        (Some(sig), None) => Some(Action::Signal(sig)),
        (None, Some(d)) => Some(Action::Pause(d)),
    };
    let aim = match &step.to {
        None | Some(Aim::Main) => Some(inj::Aim::Main),
        Some(Aim::Group) => Some(inj::Aim::Group),
        Some(Aim::Descendant(re)) => ctx
            .regex_ok(format!("{field}.to.descendant"), anchor, "descendant", re)
            .then(|| inj::Aim::Descendant(re.clone())),
    };
    let when = match (&step.at, step.after) {
        (Some(at), Some(_)) => {
            ctx.report(
                field.into(),
                anchor,
                "after",
                None,
                "has both `at` and `after`; expected one".into(),
            );
            check_at(ctx, field, anchor, at, phases);
            None
        }
        (None, Some(_)) if first => {
            ctx.report(format!("{field}.after"), anchor, "after", None, "the first step has nothing to come after; expected `at: {{ phase: NAME }}` or `at: {{ exited: zombie|reaped }}`".into());
            None
        }
        (None, None) => {
            ctx.report(field.into(), anchor, "name", None, "expected `at: { phase: NAME }`, `at: { exited: zombie|reaped }` or `after: DURATION`".into());
            None
        }
        (None, Some(after)) => Some(When::After(after)),
        (Some(at), None) => check_at(ctx, field, anchor, at, phases),
    };
    Some(LoweredStep {
        action: action?,
        aim: aim?,
        when: when?,
    })
}

/// Checks a step's `at` and, when it has no problem, returns it lowered.
fn check_at(
    ctx: &mut Ctx<'_>,
    field: &str,
    anchor: Option<&str>,
    at: &At,
    phases: &[&str],
) -> Option<When> {
    let index = at.phase.as_ref().and_then(|phase| {
        phase_index(
            ctx,
            format!("{field}.at.phase"),
            anchor,
            "phase",
            phase,
            phases,
        )
    });
    match (&at.phase, at.exited) {
        (Some(_), Some(_)) => {
            ctx.report(
                format!("{field}.at"),
                anchor,
                "exited",
                None,
                "has both `phase` and `exited`; expected one".into(),
            );
            None
        }
        (None, None) => {
            ctx.report(
                format!("{field}.at"),
                anchor,
                "at",
                None,
                "expected `phase: NAME` or `exited: zombie|reaped`".into(),
            );
            None
        }
        (None, Some(_)) if at.offset.is_some() => {
            ctx.report(
                format!("{field}.at.offset"),
                anchor,
                "offset",
                None,
                "`offset` applies to a phase; expected it with `phase:`".into(),
            );
            None
        }
        (None, Some(exited)) => Some(When::Exited(match exited {
            ExitedAt::Zombie => inj::ExitedState::Zombie,
            ExitedAt::Reaped => inj::ExitedState::Reaped,
        })),
        (Some(_), None) => Some(When::Phase {
            index: index?,
            offset: at
                .offset
                .unwrap_or(Offset::Fixed(std::time::Duration::ZERO)),
        }),
    }
}

/// Where `phase` is among `phases`; reports it at `key` when it is none of them.
fn phase_index(
    ctx: &mut Ctx<'_>,
    field: String,
    anchor: Option<&str>,
    key: &str,
    phase: &str,
    phases: &[&str],
) -> Option<usize> {
    let index = phases.iter().position(|p| *p == phase);
    if index.is_none() {
        let hint = suggest(phase, phases.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        let message = format!(
            "unknown phase `{phase}`{hint}; expected one of: {}",
            list(phases.iter().copied())
        );
        ctx.report(field, anchor, key, Some(phase), message);
    }
    index
}

fn check_expect(
    ctx: &mut Ctx<'_>,
    field: &str,
    anchor: Option<&str>,
    expect: &Expect,
    phases: &[&str],
) {
    for (stream, out) in [("stdout", &expect.stdout), ("stderr", &expect.stderr)] {
        let Some(out) = out else { continue };
        for (i, re) in out.contains.iter().enumerate() {
            ctx.regex(
                format!("{field}.{stream}.contains[{i}]"),
                anchor,
                "contains",
                re,
            );
        }
        for (i, re) in out.not_contains.iter().enumerate() {
            ctx.regex(
                format!("{field}.{stream}.not_contains[{i}]"),
                anchor,
                "not_contains",
                re,
            );
        }
    }
    let phase_ref = |ctx: &mut Ctx<'_>, f: String, key: &str, phase: &str| {
        phase_index(ctx, f, anchor, key, phase, phases);
    };
    if let Some(recover) = &expect.recover {
        phase_ref(
            ctx,
            format!("{field}.recover.reaches"),
            "reaches",
            &recover.reaches,
        );
    }
    for (i, phase) in expect.reaches.iter().flatten().enumerate() {
        phase_ref(ctx, format!("{field}.reaches[{i}]"), "reaches", phase);
    }
    if let Some(exit) = &expect.exit
        && exit.codes.iter().any(|c| !(0..=255).contains(c))
    {
        ctx.report(
            format!("{field}.exit.codes"),
            anchor,
            "codes",
            None,
            "exit codes are 0 to 255".into(),
        );
    }
    if let Some(files) = &expect.files {
        for (i, f) in files.present.iter().enumerate() {
            ctx.template(format!("{field}.files.present[{i}]"), anchor, "present", f);
        }
        for (i, f) in files.absent.iter().enumerate() {
            ctx.template(format!("{field}.files.absent[{i}]"), anchor, "absent", f);
        }
    }
    if let Some(check) = &expect.check {
        if check.command.is_empty() {
            ctx.report(
                format!("{field}.check.command"),
                anchor,
                "command",
                None,
                "expected a program and its arguments".into(),
            );
        }
        for (i, arg) in check.command.iter().enumerate() {
            ctx.template(
                format!("{field}.check.command[{i}]"),
                anchor,
                "command",
                arg,
            );
        }
    }
}

/// The checks of a spawned target's command and environment.
fn check_run(ctx: &mut Ctx<'_>, run: &crate::spec::RunSpec) {
    if run.command.is_empty() || run.command[0].is_empty() {
        ctx.report(
            "spec.target.run.command".into(),
            None,
            "command",
            None,
            "expected a program and its arguments".into(),
        );
    }
    for (i, arg) in run.command.iter().enumerate() {
        ctx.template(
            format!("spec.target.run.command[{i}]"),
            None,
            "command",
            arg,
        );
    }
    for (k, v) in &run.env {
        ctx.template(format!("spec.target.run.env.{k}"), None, k, v);
    }
}

/// The checks of an attach selector at `field`; `top`: not a `parent:` inside another.
fn check_attach(ctx: &mut Ctx<'_>, a: &crate::spec::AttachSpec, field: &str, top: bool) {
    let criteria = [
        a.pid.is_some(),
        a.pidfile.is_some(),
        a.exe.is_some(),
        a.name.is_some(),
        a.cmdline.is_some(),
        a.cgroup.is_some(),
        a.systemd_unit.is_some(),
        a.user.is_some(),
        a.parent.is_some(),
    ];
    if !criteria.contains(&true) {
        ctx.report(
            field.to_owned(),
            None,
            "attach",
            None,
            "no criterion; expected at least one of pid, pidfile, exe, name, cmdline, cgroup, \
             systemd_unit, user, parent (a selector that matches everything is never taken)"
                .into(),
        );
    }
    if let Some(pid) = a.pid
        && pid <= 1
    {
        ctx.report(
            format!("{field}.pid"),
            None,
            "pid",
            Some(&pid.to_string()),
            format!("pid {pid}; expected a process id above 1 (PID 1 is never a target)"),
        );
    }
    if let Some(re) = &a.cmdline {
        ctx.regex(format!("{field}.cmdline"), None, "cmdline", re);
    }
    for (key, value) in [
        ("pidfile", &a.pidfile),
        ("exe", &a.exe),
        ("name", &a.name),
        ("cgroup", &a.cgroup),
        ("systemd_unit", &a.systemd_unit),
    ] {
        if value.as_deref().is_some_and(str::is_empty) {
            ctx.report(
                format!("{field}.{key}"),
                None,
                key,
                None,
                format!("empty `{key}`; expected a value or no `{key}` at all"),
            );
        }
    }
    if let Some(user) = &a.user
        && let Err(message) = crate::spec::attach::uid_of(&user.0)
    {
        ctx.report(
            format!("{field}.user"),
            None,
            "user",
            Some(&user.0),
            message,
        );
    }
    for (i, user) in a.allow_users.iter().enumerate() {
        if let Err(message) = crate::spec::attach::uid_of(&user.0) {
            ctx.report(
                format!("{field}.allow_users[{i}]"),
                None,
                "allow_users",
                Some(&user.0),
                message,
            );
        }
    }
    if let Some(count) = &a.count
        && let Err(message) = crate::spec::attach::count_of(&count.0)
    {
        ctx.report(
            format!("{field}.count"),
            None,
            "count",
            Some(&count.0),
            message,
        );
    }
    if a.max_targets == Some(0) {
        ctx.report(
            format!("{field}.max_targets"),
            None,
            "max_targets",
            Some("0"),
            "0; expected at least 1".into(),
        );
    }
    if a.max_signals == Some(0) {
        ctx.report(
            format!("{field}.max_signals"),
            None,
            "max_signals",
            Some("0"),
            "0; expected at least 1 (a run that may send no signal injects nothing)".into(),
        );
    }
    if !top
        && (a.count.is_some()
            || a.max_targets.is_some()
            || a.max_signals.is_some()
            || !a.protect.is_empty()
            || !a.allow_users.is_empty())
    {
        ctx.report(
            field.to_owned(),
            None,
            "parent",
            None,
            "count, max_targets, max_signals, protect and allow_users belong to the outer \
             `attach`; a `parent` only selects"
                .into(),
        );
    }
    if let Some(parent) = &a.parent {
        check_attach(ctx, parent, &format!("{field}.parent"), false);
    }
}

/// What an experiment on attached processes cannot ask for: they are not atropos's
/// children, so it has no pipes to their output and never learns their exit status.
fn check_attached_spec(ctx: &mut Ctx<'_>, spec: &crate::spec::Spec) {
    for (i, phase) in spec.phases.iter().enumerate() {
        let key = match &phase.marker {
            Marker::Stdout(_) => "stdout",
            Marker::Stderr(_) => "stderr",
            _ => continue,
        };
        ctx.report(
            format!("spec.phases[{i}].marker.{key}"),
            Some(&phase.name),
            key,
            None,
            format!(
                "an attached process's {key} is not atropos's to read; expected a log, \
                 journald, listen, http, file or delay marker"
            ),
        );
    }
    let expects = std::iter::once(("spec.expect".to_owned(), &spec.expect)).chain(
        spec.overrides
            .iter()
            .map(|(name, e)| (format!("spec.overrides.{name}"), e)),
    );
    for (field, expect) in expects {
        if let Some(exit) = &expect.exit
            && !(exit.codes.is_empty() && exit.signals.is_empty())
        {
            let key = if exit.codes.is_empty() {
                "signals"
            } else {
                "codes"
            };
            ctx.report(
                format!("{field}.exit.{key}"),
                None,
                key,
                None,
                "an attached process is not atropos's child, so its exit status is never \
                 known; expected `exit: { within: DURATION }` alone (it must exit in time), \
                 or `reaches` or a `check` command"
                    .into(),
            );
        }
        for (key, out) in [("stdout", &expect.stdout), ("stderr", &expect.stderr)] {
            if out.is_some() {
                ctx.report(
                    format!("{field}.{key}"),
                    None,
                    key,
                    None,
                    format!(
                        "an attached process's {key} is not atropos's to read; expected a \
                         `check` command that reads its log"
                    ),
                );
            }
        }
    }
    for (f, fault) in spec.faults.iter().enumerate() {
        let inline = (fault.to.as_ref(), fault.at.as_ref());
        let steps = fault
            .steps
            .iter()
            .flatten()
            .map(|s| (s.to.as_ref(), s.at.as_ref()));
        for (j, (to, at)) in std::iter::once(inline).chain(steps).enumerate() {
            let field = match j {
                0 => format!("spec.faults[{f}]"),
                _ => format!("spec.faults[{f}].steps[{}]", j - 1),
            };
            if to == Some(&crate::spec::Aim::Group) {
                ctx.report(
                    format!("{field}.to"),
                    Some(&fault.name),
                    "to",
                    None,
                    "the process group of a process atropos did not start may hold its \
                     supervisor or shell; expected `main` or `{ descendant: REGEX }`"
                        .into(),
                );
            }
            if let Some(at) = at {
                if at.offset == Some(crate::spec::Offset::Random) {
                    ctx.report(
                        format!("{field}.at.offset"),
                        Some(&fault.name),
                        "offset",
                        None,
                        "`random` spreads over a phase's length measured by a baseline trial, \
                         and a running service has none; expected a fixed offset or \
                         `random(FROM..TO)`"
                            .into(),
                    );
                }
                if at.exited == Some(crate::spec::ExitedAt::Zombie) {
                    ctx.report(
                        format!("{field}.at.exited"),
                        Some(&fault.name),
                        "exited",
                        None,
                        "an attached process is reaped by its own parent, not atropos, so \
                         atropos cannot hold it as a zombie; expected `exited: reaped`"
                            .into(),
                    );
                }
            }
        }
    }
}
