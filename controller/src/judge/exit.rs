//! How the target ended: an accepted exit code or signal within the grace period, or why
//! atropos had to end it (hung, timeout, a phase deadline).

use std::time::Duration;

use atropos_injector::{Observation, StopReason};

use crate::record::ExpectationResult;
use crate::spec::ExitExpect;

use super::text::{human, human_ns};
use super::verdict::result;

/// Judges how `obs` ended against `spec`, `grace` being the time the target had after the
/// last signal sent to it.
pub(super) fn exit(spec: &ExitExpect, obs: &Observation, grace: Duration) -> ExpectationResult {
    let after_what = last_signal(obs);
    let mut accepted: Vec<String> = spec
        .codes
        .iter()
        .map(|c| format!("exit code {c}"))
        .collect();
    accepted.extend(spec.signals.iter().map(|s| format!("killed by {s}")));
    let nothing_sent = obs.deliveries.is_empty() && obs.stop_signal.is_none();
    let expected = match (accepted.is_empty(), nothing_sent) {
        (true, true) => "to exit".to_owned(),
        (true, false) => format!("to exit within {} of {after_what}", human(grace)),
        (false, true) => accepted.join(" or "),
        (false, false) => format!(
            "{} within {} of {after_what}",
            accepted.join(" or "),
            human(grace)
        ),
    };
    let failed = |actual: String| result("exit", false, expected.clone(), actual);
    match obs.stop {
        StopReason::Hung => failed(format!(
            "hung: still running {} after {after_what}; killed with SIGKILL",
            human(grace)
        )),
        StopReason::Timeout => failed(timed_out(obs)),
        StopReason::Observed => failed(format!(
            "still running {} after {after_what}; left running (atropos never kills a process \
             it did not start)",
            human(grace)
        )),
        StopReason::PhaseDeadline => failed(
            "not reached: a phase missed its deadline and atropos killed the target".to_owned(),
        ),
        _ => match &obs.exit {
            None => failed("no exit status was observed".to_owned()),
            Some(exit) => {
                let ok_code = exit.code.is_some_and(|c| spec.codes.contains(&c));
                let ok_sig = exit.signal.is_some_and(|s| spec.signals.contains(&s));
                let ok = accepted.is_empty() || ok_code || ok_sig;
                result(
                    "exit",
                    ok,
                    expected,
                    format!("{exit} at {}", human_ns(exit.at_ns)),
                )
            }
        },
    }
}

/// What the grace period counts from: atropos's own stop signal, else the last fault
/// signal, else the start.
fn last_signal(obs: &Observation) -> String {
    match (obs.deliveries.last(), &obs.stop_signal) {
        (_, Some(stop)) => format!("atropos's {}", stop.signal),
        (Some(d), None) => format!("{}", d.signal),
        (None, None) => "the start".to_owned(),
    }
}

/// The timeout, told by the phase the target was in when it fired (not `exited`, which the
/// kill made) and the first phase it never entered.
fn timed_out(obs: &Observation) -> String {
    let at = obs.exit.as_ref().map_or(obs.ended_ns, |e| e.at_ns);
    let phase = obs.phase_at(at.saturating_sub(1));
    let waiting = obs
        .phases
        .iter()
        .find(|p| p.entered_ns.is_none())
        .map(|p| format!(", never entered phase `{}`", p.name))
        .unwrap_or_default();
    format!("the trial timed out in phase `{phase}`{waiting}; killed with SIGKILL")
}

#[cfg(test)]
mod tests {
    use atropos_injector::Signal;

    use super::*;
    use crate::judge::fixture::{assert_results, obs, want};

    const GRACE: Duration = Duration::from_secs(5);

    struct Case {
        name: &'static str,
        codes: Vec<i32>,
        signals: Vec<Signal>,
        obs: Observation,
        want: ExpectationResult,
    }

    #[test]
    fn exit_is_judged_by_code_signal_and_why_atropos_ended_the_target() {
        let cases = vec![
            Case {
                name: "an accepted code passes",
                codes: vec![0],
                signals: vec![],
                obs: obs().exited(0, 1_500_000).build(),
                want: want("exit", true, "exit code 0", "exit code 0 at 1.5ms"),
            },
            Case {
                name: "a refused code fails, counting the grace from the fault's signal",
                codes: vec![0],
                signals: vec![],
                obs: obs().delivered(Signal::TERM).exited(2, 2_000_000).build(),
                want: want(
                    "exit",
                    false,
                    "exit code 0 within 5s of SIGTERM",
                    "exit code 2 at 2ms",
                ),
            },
            Case {
                name: "an accepted signal passes",
                codes: vec![0],
                signals: vec![Signal::KILL],
                obs: obs()
                    .delivered(Signal::KILL)
                    .killed(Signal::KILL, 3_000_000)
                    .build(),
                want: want(
                    "exit",
                    true,
                    "exit code 0 or killed by SIGKILL within 5s of SIGKILL",
                    "killed by SIGKILL at 3ms",
                ),
            },
            Case {
                name: "a signal not accepted fails",
                codes: vec![0],
                signals: vec![],
                obs: obs().killed(Signal::INT, 1_000).build(),
                want: want("exit", false, "exit code 0", "killed by SIGINT at 1µs"),
            },
            Case {
                name: "with no codes given any exit passes",
                codes: vec![],
                signals: vec![],
                obs: obs().exited(7, 1_000).build(),
                want: want("exit", true, "to exit", "exit code 7 at 1µs"),
            },
            Case {
                name: "atropos's stop signal counts over the fault's",
                codes: vec![],
                signals: vec![],
                obs: obs()
                    .delivered(Signal::INT)
                    .stop_signal(Signal::TERM)
                    .stop(StopReason::Stopped)
                    .killed(Signal::TERM, 4_000_000)
                    .build(),
                want: want(
                    "exit",
                    true,
                    "to exit within 5s of atropos's SIGTERM",
                    "killed by SIGTERM at 4ms",
                ),
            },
            Case {
                name: "hung after SIGTERM",
                codes: vec![0],
                signals: vec![],
                obs: obs()
                    .delivered(Signal::TERM)
                    .stop(StopReason::Hung)
                    .killed(Signal::KILL, 6_000_000_000)
                    .build(),
                want: want(
                    "exit",
                    false,
                    "exit code 0 within 5s of SIGTERM",
                    "hung: still running 5s after SIGTERM; killed with SIGKILL",
                ),
            },
            Case {
                name: "a timeout names the phase it was in and the phase never entered",
                codes: vec![],
                signals: vec![],
                obs: obs()
                    .phase("init", Some(1_000_000))
                    .phase("ready", None)
                    .stop(StopReason::Timeout)
                    .killed(Signal::KILL, 10_000_000_000)
                    .build(),
                want: want(
                    "exit",
                    false,
                    "to exit",
                    "the trial timed out in phase `init`, never entered phase `ready`; killed with SIGKILL",
                ),
            },
            Case {
                name: "a timeout without an exit is placed at the trial's end",
                codes: vec![0],
                signals: vec![],
                obs: obs()
                    .phase("init", Some(1_000_000))
                    .phase("ready", Some(3_000_000_000))
                    .stop(StopReason::Timeout)
                    .ended(3_000_000_000)
                    .build(),
                want: want(
                    "exit",
                    false,
                    "exit code 0",
                    "the trial timed out in phase `init`; killed with SIGKILL",
                ),
            },
            Case {
                name: "a missed phase deadline",
                codes: vec![0],
                signals: vec![],
                obs: obs()
                    .stop(StopReason::PhaseDeadline)
                    .killed(Signal::KILL, 2_000_000_000)
                    .build(),
                want: want(
                    "exit",
                    false,
                    "exit code 0",
                    "not reached: a phase missed its deadline and atropos killed the target",
                ),
            },
            Case {
                name: "no exit status observed",
                codes: vec![],
                signals: vec![],
                obs: obs().build(),
                want: want("exit", false, "to exit", "no exit status was observed"),
            },
        ];
        assert_eq!(cases.len(), 11);
        for c in &cases {
            let spec = ExitExpect {
                codes: c.codes.clone(),
                signals: c.signals.clone(),
                within: None,
            };
            let got = exit(&spec, &c.obs, GRACE);
            assert_results(c.name, &[got], std::slice::from_ref(&c.want));
        }
    }
}
