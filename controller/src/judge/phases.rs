//! Phases: those a trial must enter, a deadline missed, the baseline's order, and the fault
//! steps that were never sent.

use atropos_injector::{MissedPhase, Observation, PhaseEntry};

use crate::record::ExpectationResult;

use super::text::{human_ns, what_happened};
use super::verdict::result;

/// Judges the phases of `obs`. The baseline must enter every `declared` phase, in order; a
/// fault trial only those in `reaches`, which its steps wait on.
pub(super) fn phases(
    baseline: bool,
    declared: &[String],
    reaches: Option<&[String]>,
    obs: &Observation,
) -> Vec<ExpectationResult> {
    let required = if baseline {
        declared
    } else {
        reaches.unwrap_or_default()
    };
    let mut results: Vec<ExpectationResult> =
        required.iter().map(|name| entered(name, obs)).collect();
    results.extend(obs.missed.as_ref().map(missed));
    if baseline {
        results.extend(order(&obs.phases));
    }
    results.extend(obs.skipped.iter().map(|s| {
        result(
            format!("fault step {}", s.step + 1),
            false,
            "the step to be delivered",
            format!("{}; {}", s.reason, what_happened(obs)),
        )
    }));
    results
}

/// Whether phase `name` was entered, and if not, what the target did instead.
fn entered(name: &str, obs: &Observation) -> ExpectationResult {
    let at = obs
        .phases
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.entered_ns);
    match at {
        Some(at) => result(
            format!("reaches {name}"),
            true,
            format!("phase `{name}` entered"),
            format!("entered at {}", human_ns(at)),
        ),
        None => result(
            format!("reaches {name}"),
            false,
            format!("phase `{name}` to be entered"),
            format!("it never was: {}", what_happened(obs)),
        ),
    }
}

/// A phase deadline (`within`) that passed: the trial failed there and then.
fn missed(missed: &MissedPhase) -> ExpectationResult {
    result(
        format!("reaches {} within", missed.phase),
        false,
        format!(
            "phase `{}` entered within {}",
            missed.phase,
            human_ns(missed.within_ns)
        ),
        format!(
            "it was not: the target was still in phase `{}` at {}; killed with SIGKILL",
            missed.in_phase,
            human_ns(missed.within_ns)
        ),
    )
}

/// A failure when the entered phases came in another order than declared, with both orders;
/// nothing when they came in order.
fn order(phases: &[PhaseEntry]) -> Option<ExpectationResult> {
    let mut observed: Vec<(u64, usize, &str)> = phases
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.entered_ns.map(|at| (at, i, p.name.as_str())))
        .collect();
    observed.sort_unstable();
    if observed.windows(2).all(|w| w[0].1 < w[1].1) {
        return None;
    }
    let declared: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
    let seen: Vec<&str> = observed.iter().map(|(_, _, n)| *n).collect();
    Some(result(
        "phase order",
        false,
        format!(
            "phases entered in their declared order: {}",
            declared.join(", ")
        ),
        format!(
            "entered as {}; offsets and coverage assume the declared order",
            seen.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::fixture::{assert_results, obs, want};

    struct Case {
        name: &'static str,
        baseline: bool,
        declared: &'static [&'static str],
        reaches: Option<&'static [&'static str]>,
        obs: Observation,
        want: Vec<ExpectationResult>,
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn phases_are_judged_entered_in_time_in_order_and_every_step_sent() {
        let cases = vec![
            Case {
                name: "a phase the fault waits on was entered",
                baseline: false,
                declared: &["init", "ready"],
                reaches: Some(&["ready"]),
                obs: obs()
                    .phase("init", None)
                    .phase("ready", Some(2_000_000))
                    .build(),
                want: vec![want(
                    "reaches ready",
                    true,
                    "phase `ready` entered",
                    "entered at 2ms",
                )],
            },
            Case {
                name: "a phase never entered says what the target did instead",
                baseline: false,
                declared: &["ready"],
                reaches: Some(&["ready"]),
                obs: obs()
                    .phase("ready", None)
                    .exited(2, 5_000_000)
                    .stderr(&["panic: boom", "goroutine 1 [running]:"])
                    .build(),
                want: vec![want(
                    "reaches ready",
                    false,
                    "phase `ready` to be entered",
                    "it never was: exit code 2 at 5ms, stderr: `panic: boom`",
                )],
            },
            Case {
                name: "a fault trial needs only the phases it names",
                baseline: false,
                declared: &["init", "ready"],
                reaches: None,
                obs: obs().phase("init", None).phase("ready", None).build(),
                want: vec![],
            },
            Case {
                name: "the baseline needs every declared phase, and in order it passes",
                baseline: true,
                declared: &["init", "ready"],
                reaches: None,
                obs: obs()
                    .phase("init", Some(1_000_000))
                    .phase("ready", Some(2_500_000))
                    .build(),
                want: vec![
                    want(
                        "reaches init",
                        true,
                        "phase `init` entered",
                        "entered at 1ms",
                    ),
                    want(
                        "reaches ready",
                        true,
                        "phase `ready` entered",
                        "entered at 2.5ms",
                    ),
                ],
            },
            Case {
                name: "a missed deadline names the phase the target was still in",
                baseline: false,
                declared: &["init", "ready"],
                reaches: None,
                obs: obs()
                    .phase("init", Some(1_000))
                    .phase("ready", None)
                    .missed("ready", 2_000_000_000, "init")
                    .build(),
                want: vec![want(
                    "reaches ready within",
                    false,
                    "phase `ready` entered within 2s",
                    "it was not: the target was still in phase `init` at 2s; killed with SIGKILL",
                )],
            },
            Case {
                name: "the baseline out of order says both orders",
                baseline: true,
                declared: &["init", "ready"],
                reaches: None,
                obs: obs()
                    .phase("init", Some(3_000_000))
                    .phase("ready", Some(1_000_000))
                    .build(),
                want: vec![
                    want(
                        "reaches init",
                        true,
                        "phase `init` entered",
                        "entered at 3ms",
                    ),
                    want(
                        "reaches ready",
                        true,
                        "phase `ready` entered",
                        "entered at 1ms",
                    ),
                    want(
                        "phase order",
                        false,
                        "phases entered in their declared order: init, ready",
                        "entered as ready, init; offsets and coverage assume the declared order",
                    ),
                ],
            },
            Case {
                name: "a fault trial's phase order is not judged",
                baseline: false,
                declared: &["init", "ready"],
                reaches: None,
                obs: obs()
                    .phase("init", Some(3_000_000))
                    .phase("ready", Some(1_000_000))
                    .build(),
                want: vec![],
            },
            Case {
                name: "every skipped step gets a line with why and what happened",
                baseline: false,
                declared: &["ready"],
                reaches: None,
                obs: obs()
                    .skipped(0, "phase `ready` was never entered")
                    .skipped(2, "the target had exited before `exited: zombie`")
                    .exited(0, 1_000_000_000)
                    .stdout(&["bye"])
                    .build(),
                want: vec![
                    want(
                        "fault step 1",
                        false,
                        "the step to be delivered",
                        "phase `ready` was never entered; exit code 0 at 1s, last stdout: `bye`",
                    ),
                    want(
                        "fault step 3",
                        false,
                        "the step to be delivered",
                        "the target had exited before `exited: zombie`; exit code 0 at 1s, last stdout: `bye`",
                    ),
                ],
            },
        ];
        assert_eq!(cases.len(), 8);
        for c in &cases {
            let reaches = c.reaches.map(strings);
            let got = phases(c.baseline, &strings(c.declared), reaches.as_deref(), &c.obs);
            assert_results(c.name, &got, &c.want);
        }
    }
}
