//! Recovery: a restart of the target must reach a phase within a time.

use crate::record::{ExpectationResult, Recovery};
use crate::spec::Recover;

use super::text::{human, human_ns, nanos, what_happened};
use super::verdict::result;

/// Judges the restart `rec` against `spec`.
pub(super) fn recover(spec: &Recover, rec: &Recovery) -> ExpectationResult {
    if let Some(r) = &rec.attached {
        return replaced(spec, rec, r);
    }
    let expected = format!(
        "a restart to reach `{}` within {}",
        spec.reaches,
        human(spec.within)
    );
    match rec.reached_ns {
        Some(at) if at <= nanos(spec.within) => result(
            "recover",
            true,
            expected,
            format!("reached it after {}", human_ns(at)),
        ),
        Some(at) => result(
            "recover",
            false,
            expected,
            format!("it took {}", human_ns(at)),
        ),
        None => result(
            "recover",
            false,
            expected,
            format!("it did not: {}", what_happened(&rec.observation)),
        ),
    }
}

/// An attached target's recovery: a replacement process, then the phase.
fn replaced(spec: &Recover, rec: &Recovery, r: &crate::record::Replacement) -> ExpectationResult {
    if r.survived {
        let expected = format!(
            "the service to be in `{}` within {} of the trial's end",
            spec.reaches,
            human(spec.within)
        );
        return match rec.reached_ns {
            Some(at) => result(
                "recover",
                at <= nanos(spec.within),
                expected,
                format!(
                    "it did not exit, and was in `{}` after {}",
                    spec.reaches,
                    human_ns(at)
                ),
            ),
            None => result(
                "recover",
                false,
                expected,
                format!(
                    "it did not exit, and was not in `{}`: {}",
                    spec.reaches,
                    what_happened(&rec.observation)
                ),
            ),
        };
    }
    let expected = format!(
        "a replacement process to reach `{}` within {} of the exit",
        spec.reaches,
        human(spec.within)
    );
    let (Some(replaced), Some(pid)) = (r.replaced_ns, r.pid) else {
        return result(
            "recover",
            false,
            expected,
            format!(
                "no process matching the selector replaced it within {}",
                human(spec.within)
            ),
        );
    };
    let Some(at) = rec.reached_ns else {
        return result(
            "recover",
            false,
            expected,
            format!(
                "pid {pid} replaced it after {}, but did not reach `{}`: {}",
                human_ns(replaced),
                spec.reaches,
                what_happened(&rec.observation)
            ),
        );
    };
    result(
        "recover",
        at <= nanos(spec.within),
        expected,
        format!(
            "pid {pid} replaced it after {} and reached `{}` {} after the exit",
            human_ns(replaced),
            spec.reaches,
            human_ns(at)
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use atropos_injector::Observation;

    use super::*;
    use crate::judge::fixture::{assert_results, obs, want};

    struct Case {
        name: &'static str,
        reached_ns: Option<u64>,
        restart: Observation,
        want: ExpectationResult,
    }

    const EXPECTED: &str = "a restart to reach `ready` within 2s";

    #[test]
    fn recovery_passes_within_its_time_and_says_what_the_restart_did_otherwise() {
        let cases = vec![
            Case {
                name: "reached within",
                reached_ns: Some(1_500_000_000),
                restart: obs().phase("ready", Some(1_500_000_000)).build(),
                want: want("recover", true, EXPECTED, "reached it after 1.5s"),
            },
            Case {
                name: "reached exactly at the deadline",
                reached_ns: Some(2_000_000_000),
                restart: obs().phase("ready", Some(2_000_000_000)).build(),
                want: want("recover", true, EXPECTED, "reached it after 2s"),
            },
            Case {
                name: "reached too late",
                reached_ns: Some(3_000_000_000),
                restart: obs().phase("ready", Some(3_000_000_000)).build(),
                want: want("recover", false, EXPECTED, "it took 3s"),
            },
            Case {
                name: "never reached says what the restart did",
                reached_ns: None,
                restart: obs()
                    .phase("ready", None)
                    .exited(1, 20_000_000)
                    .stderr(&["listening on :8080", "error: bind: address in use"])
                    .build(),
                want: want(
                    "recover",
                    false,
                    EXPECTED,
                    "it did not: exit code 1 at 20ms, stderr: `error: bind: address in use`",
                ),
            },
        ];
        assert_eq!(cases.len(), 4);
        let spec = Recover {
            reaches: "ready".to_owned(),
            within: Duration::from_secs(2),
        };
        for c in &cases {
            let rec = Recovery {
                phase: "ready".to_owned(),
                reached_ns: c.reached_ns,
                observation: c.restart.clone(),
                attached: None,
            };
            assert_results(
                c.name,
                &[recover(&spec, &rec)],
                std::slice::from_ref(&c.want),
            );
        }
    }

    #[test]
    fn a_running_service_recovers_by_a_new_process_or_by_the_one_hit_staying_up() {
        use crate::record::Replacement;
        let spec = Recover {
            reaches: "ready".to_owned(),
            within: Duration::from_secs(2),
        };
        const NEW: &str = "a replacement process to reach `ready` within 2s of the exit";
        const KEPT: &str = "the service to be in `ready` within 2s of the trial's end";
        let times = |replaced_ns, pid, survived| Replacement {
            detected_ns: Some(40_000_000),
            replaced_ns,
            pid,
            survived,
        };
        let cases = [
            (
                "a new process in time",
                Some(1_250_000_000),
                times(Some(1_000_000_000), Some(77), false),
                want(
                    "recover",
                    true,
                    NEW,
                    "pid 77 replaced it after 1s and reached `ready` 1.25s after the exit",
                ),
            ),
            (
                "a new process too late",
                Some(2_500_000_000),
                times(Some(1_000_000_000), Some(77), false),
                want(
                    "recover",
                    false,
                    NEW,
                    "pid 77 replaced it after 1s and reached `ready` 2.5s after the exit",
                ),
            ),
            (
                "no new process",
                None,
                times(None, None, false),
                want(
                    "recover",
                    false,
                    NEW,
                    "no process matching the selector replaced it within 2s",
                ),
            ),
            (
                "the one hit stayed up",
                Some(5_000_000),
                times(None, None, true),
                want(
                    "recover",
                    true,
                    KEPT,
                    "it did not exit, and was in `ready` after 5ms",
                ),
            ),
        ];
        for (name, reached_ns, replacement, wanted) in cases {
            let rec = Recovery {
                phase: "ready".to_owned(),
                reached_ns,
                observation: obs().phase("ready", reached_ns).build(),
                attached: Some(replacement),
            };
            assert_results(name, &[recover(&spec, &rec)], std::slice::from_ref(&wanted));
        }
    }
}
