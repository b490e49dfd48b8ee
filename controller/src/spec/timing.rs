//! Time checks: a phase deadline and a fault's offsets must fit in the trial's `timeout`.
//!
//! A trial ends at its timeout whatever else is pending, so a step due later than that can
//! never fire and a phase deadline beyond it can never be missed: both are mistakes in the
//! file, reported before anything runs rather than as a misleading "timed out" afterwards.

use std::time::Duration;

use super::experiment::Spec;
use super::lowered::{LoweredFault, When};
use super::offset::Offset;
use super::validate::Ctx;
use crate::plan::DEFAULT_TIMEOUT;

/// Checks every phase's `within` and the offsets of every fault that lowered against the
/// trial's timeout.
pub(super) fn check_timing(ctx: &mut Ctx<'_>, spec: &Spec, faults: &[LoweredFault]) {
    let timeout = spec.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        ctx.report(
            "spec.timeout".into(),
            None,
            "timeout",
            None,
            "a timeout of 0 ends every trial before it starts; expected a duration like 30s".into(),
        );
        return;
    }
    let limit = timeout_words(spec.timeout, timeout);
    for (i, phase) in spec.phases.iter().enumerate() {
        let Some(within) = phase.within else { continue };
        let field = format!("spec.phases[{i}].within");
        if within.is_zero() {
            ctx.report(
                field,
                Some(&phase.name),
                "within",
                None,
                "a deadline of 0 can never be met; expected a duration like 2s".into(),
            );
        } else if within > timeout {
            ctx.report(
                field,
                Some(&phase.name),
                "within",
                None,
                format!(
                    "phase `{}` may take up to {} to be entered, but {limit}; expected at most {}",
                    phase.name,
                    show(within),
                    show(timeout)
                ),
            );
        }
    }
    for fault in faults {
        let Some(i) = spec.faults.iter().position(|f| f.name == fault.name) else {
            continue;
        };
        let listed = spec.faults[i].steps.is_some();
        check_fault(
            ctx,
            &format!("spec.faults[{i}]"),
            listed,
            spec,
            fault,
            timeout,
            &limit,
        );
    }
}

/// Each step's earliest due time after the phase it is aimed at; `after` adds up.
fn check_fault(
    ctx: &mut Ctx<'_>,
    field: &str,
    listed: bool,
    spec: &Spec,
    fault: &LoweredFault,
    timeout: Duration,
    limit: &str,
) {
    let mut due: Option<(Duration, &str)> = None;
    for (j, step) in fault.steps.iter().enumerate() {
        let step_field = if listed {
            format!("{field}.steps[{j}]")
        } else {
            field.to_owned()
        };
        match step.when {
            When::Exited(_) => due = None,
            When::Phase { index, offset } => {
                let earliest = match offset {
                    Offset::Fixed(d) => d,
                    // The window's upper end is exclusive; its draws stay below it.
                    Offset::Between(_, to) => to.saturating_sub(Duration::from_nanos(1)),
                    Offset::Random => Duration::ZERO,
                };
                let phase = spec.phases.get(index).map_or("", |p| p.name.as_str());
                due = Some((earliest, phase));
                if earliest >= timeout {
                    let message = format!(
                        "offset `{offset}` puts this step {} after `{phase}` is entered, \
                         but {limit}; expected an offset below {}, or a longer `spec.timeout`",
                        show(offset_end(offset)),
                        show(timeout)
                    );
                    ctx.report(
                        format!("{step_field}.at.offset"),
                        Some(&fault.name),
                        "offset",
                        None,
                        message,
                    );
                    return;
                }
            }
            When::After(after) => {
                if let Some((earliest, phase)) = &mut due {
                    *earliest = earliest.saturating_add(after);
                    if *earliest >= timeout {
                        let message = format!(
                            "this step is due {} after `{phase}` is entered (its offset plus \
                             every `after` so far), but {limit}; expected the steps to fit in {}, \
                             or a longer `spec.timeout`",
                            show(*earliest),
                            show(timeout)
                        );
                        ctx.report(
                            format!("{step_field}.after"),
                            Some(&fault.name),
                            "after",
                            None,
                            message,
                        );
                        return;
                    }
                }
            }
        }
    }
}

fn offset_end(offset: Offset) -> Duration {
    match offset {
        Offset::Fixed(d) | Offset::Between(_, d) => d,
        Offset::Random => Duration::ZERO,
    }
}

fn timeout_words(given: Option<Duration>, timeout: Duration) -> String {
    match given {
        Some(_) => format!("a trial ends at its timeout of {}", show(timeout)),
        None => format!(
            "a trial ends at the default timeout of {} (no `spec.timeout` given)",
            show(timeout)
        ),
    }
}

fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::path::PathBuf;

    use crate::spec::{Loaded, Problem, validate};

    fn problems(spec_tail: &str) -> Vec<Problem> {
        let source = format!(
            "apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: t }}
spec:
  target: {{ run: {{ command: [\"true\"] }} }}
  phases:
    - {{ name: ready, marker: {{ stdout: ready }}, within: 2s }}
{spec_tail}"
        );
        let loaded = Loaded {
            file: PathBuf::from("t.yaml"),
            dir: PathBuf::from("."),
            experiment: serde_yaml::from_str(&source).unwrap(),
            source,
            first_line: 1,
        };
        validate(&[loaded])
    }

    #[test]
    fn phase_deadline_within_the_timeout_is_accepted() {
        let p = problems("  faults:\n    - { name: f, signal: TERM, at: { phase: ready } }\n");
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn phase_deadline_longer_than_the_timeout_names_both() {
        let p = problems(
            "  faults:\n    - { name: f, signal: TERM, at: { phase: ready } }\n  timeout: 1s\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].field, "spec.phases[0].within");
        assert_eq!((p[0].line, p[0].column), (7, 49), "{}", p[0]);
        assert!(
            p[0].message.contains("up to 2s") && p[0].message.contains("timeout of 1s"),
            "{}",
            p[0]
        );
    }

    #[test]
    fn phase_deadline_reaches_the_injector_plan() {
        let spec: crate::spec::Spec = serde_yaml::from_str(
            "target: { run: { command: [\"true\"] } }
phases:
  - { name: init, marker: { stdout: init } }
  - { name: ready, marker: { stdout: ready }, within: 2s }
faults: []
",
        )
        .unwrap();
        let dir = std::path::Path::new("/tmp");
        let vars = crate::template::Vars {
            port: 1,
            dir,
            id: "x",
        };
        let phases = crate::plan::phase_plans(&spec, &vars, dir);
        let within: Vec<_> = phases.iter().map(|p| p.within).collect();
        assert_eq!(within, [None, Some(std::time::Duration::from_secs(2))]);
    }

    #[test]
    fn past_ten_problems_the_rest_are_counted_not_located() {
        let faults: String = (0..1000)
            .map(|i| format!("    - {{ name: f{i}, signal: TERM, at: {{ phase: nope }} }}\n"))
            .collect();
        let start = std::time::Instant::now();
        let p = problems(&format!("  faults:\n{faults}"));
        assert_eq!(p.len(), 11, "{p:?}");
        assert!(
            p[10]
                .message
                .contains("and 990 more problems in experiment `t`"),
            "{}",
            p[10]
        );
        assert_eq!(p[10].line, 1);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_zero_timeout_is_rejected_once() {
        let p = problems(
            "  faults:\n    - { name: f, signal: TERM, at: { phase: ready, offset: 1s } }\n  timeout: 0s\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            (p[0].field.as_str(), p[0].line),
            ("spec.timeout", 10),
            "{}",
            p[0]
        );
    }

    #[test]
    fn a_fault_named_baseline_is_shown_where_it_is_named() {
        let p =
            problems("  faults:\n    - { name: baseline, signal: TERM, at: { phase: ready } }\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].line, p[0].column), (9, 15), "{}", p[0]);
        assert!(p[0].message.contains("trial without faults"), "{}", p[0]);
    }

    #[test]
    fn zero_phase_deadline_is_rejected() {
        let source_tail = "  faults:\n    - { name: f, signal: TERM, at: { phase: ready } }\n";
        let p = problems(source_tail);
        assert!(p.is_empty());
        let mut with_zero = problems(&format!(
            "    - {{ name: late, marker: {{ stdout: late }}, within: 0s }}\n{source_tail}"
        ));
        assert_eq!(with_zero.len(), 1, "{with_zero:?}");
        let p = with_zero.remove(0);
        assert_eq!(p.field, "spec.phases[1].within");
        assert!(p.message.contains("can never be met"), "{p}");
    }

    #[test]
    fn fixed_offset_beyond_the_default_timeout_names_both_durations() {
        let p = problems(
            "  faults:\n    - { name: late, signal: TERM, at: { phase: ready, offset: 40s } }\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].field, "spec.faults[0].at.offset");
        assert_eq!(p[0].line, 9, "{}", p[0]);
        assert!(
            p[0].message.contains("40s after `ready`")
                && p[0].message.contains("default timeout of 30s"),
            "{}",
            p[0]
        );
    }

    #[test]
    fn random_window_ending_past_the_timeout_is_rejected_and_one_inside_is_not() {
        let p = problems(
            "  faults:\n    - { name: w, signal: TERM, at: { phase: ready, offset: \"random(1s..3s)\" } }\n  timeout: 2s\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].message.contains("random(1s..3s)") && p[0].message.contains("timeout of 2s"),
            "{}",
            p[0]
        );
        let p = problems(
            "  faults:\n    - { name: w, signal: TERM, at: { phase: ready, offset: \"random(1s..2s)\" } }\n  timeout: 2s\n",
        );
        assert!(p.is_empty(), "the window's end is exclusive: {p:?}");
    }

    #[test]
    fn steps_whose_afters_add_up_past_the_timeout_are_rejected() {
        let p = problems(
            "  faults:
    - name: slow
      steps:
        - { signal: TERM, at: { phase: ready, offset: 1s } }
        - { signal: KILL, after: 1500ms }
  timeout: 2s
",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].field, "spec.faults[0].steps[1].after");
        assert_eq!(p[0].line, 12, "{}", p[0]);
        assert!(
            p[0].message.contains("due 2s 500ms after `ready`")
                && p[0].message.contains("timeout of 2s"),
            "{}",
            p[0]
        );
    }
}
