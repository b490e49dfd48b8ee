//! What a schedule does now: the one decision, on an injected clock.
//!
//! The tick due is the latest at or before now that was not decided yet; every earlier one
//! missed meanwhile (the controller was down) is passed over: never a backlog. It fires
//! unless it is later than `starting_deadline` allows, outside every window, in a blackout,
//! or (`concurrency: forbid`) an earlier run still goes on; each refusal is kept with why.

use chrono::{DateTime, Utc};

use super::schedule::{Schedule, Skip};
use crate::spec::Concurrency;

/// What to do about a schedule now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No tick is due (or the schedule is suspended).
    Wait,
    /// Start a run for this tick; with `concurrency: replace`, after the running one is
    /// aborted (`replace` names it).
    Fire {
        /// The tick.
        tick: DateTime<Utc>,
        /// The run to abort first.
        replace: Option<String>,
    },
    /// The tick starts nothing.
    Skip {
        /// The tick.
        tick: DateTime<Utc>,
        /// Why.
        why: Skip,
    },
}

/// The decision for `schedule` at `now`, its last decided tick `last`, and `running` the run
/// of an earlier tick still going, if any.
pub fn decide(
    schedule: &Schedule,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
    running: Option<&str>,
) -> Decision {
    if schedule.suspend {
        return Decision::Wait;
    }
    let Some(tick) = schedule.latest_at_or_before(now) else {
        return Decision::Wait;
    };
    if tick <= last {
        return Decision::Wait;
    }
    let late = (now - tick).to_std().unwrap_or_default();
    if let Some(deadline) = schedule.starting_deadline
        && late > deadline
    {
        return Decision::Skip {
            tick,
            why: Skip::Late { late, deadline },
        };
    }
    if let Some(why) = schedule.closed_at(tick) {
        return Decision::Skip { tick, why };
    }
    match (running, schedule.concurrency) {
        (Some(run), Concurrency::Forbid) => Decision::Skip {
            tick,
            why: Skip::StillRunning(run.to_owned()),
        },
        (Some(run), Concurrency::Replace) => Decision::Fire {
            tick,
            replace: Some(run.to_owned()),
        },
        _ => Decision::Fire {
            tick,
            replace: None,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::time::Duration;

    use super::*;
    use crate::scheduler::schedule::tests::spec_with;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn schedule(tail: &str) -> Schedule {
        Schedule::of(&spec_with(tail)).unwrap().unwrap()
    }

    #[test]
    fn a_due_tick_fires_once_and_then_waits_for_the_next() {
        let s = schedule("schedule: \"0 14 * * FRI\"\n");
        let last = at("2026-12-04T14:00:00Z");
        assert_eq!(
            decide(&s, last, at("2026-12-11T13:59:59Z"), None),
            Decision::Wait
        );
        let tick = at("2026-12-11T14:00:00Z");
        let now = at("2026-12-11T14:00:00.020Z");
        assert_eq!(
            decide(&s, last, now, None),
            Decision::Fire {
                tick,
                replace: None
            }
        );
        // Once decided, the same tick waits.
        assert_eq!(decide(&s, tick, now, None), Decision::Wait);
    }

    #[test]
    fn after_downtime_the_latest_missed_tick_runs_once_inside_its_deadline_and_never_a_backlog() {
        let s = schedule("schedule: \"*/10 * * * *\"\nstarting_deadline: 5m\n");
        // Down from 10:05 to 10:33: ticks 10:10, 10:20, 10:30 missed; only 10:30 may run.
        let last = at("2026-12-08T10:00:00Z");
        assert_eq!(
            decide(&s, last, at("2026-12-08T10:33:00Z"), None),
            Decision::Fire {
                tick: at("2026-12-08T10:30:00Z"),
                replace: None
            }
        );
        // Down until 10:37: 10:30 is 7 minutes late, past the 5-minute deadline.
        assert_eq!(
            decide(&s, last, at("2026-12-08T10:37:00Z"), None),
            Decision::Skip {
                tick: at("2026-12-08T10:30:00Z"),
                why: Skip::Late {
                    late: Duration::from_secs(420),
                    deadline: Duration::from_secs(300)
                }
            }
        );
    }

    #[test]
    fn forbid_skips_while_a_run_goes_on_replace_aborts_it_allow_runs_both() {
        let last = at("2026-12-08T10:00:00Z");
        let now = at("2026-12-08T10:10:01Z");
        let tick = at("2026-12-08T10:10:00Z");
        let forbid = schedule("schedule: \"*/10 * * * *\"\n");
        assert_eq!(
            decide(&forbid, last, now, Some("r1")),
            Decision::Skip {
                tick,
                why: Skip::StillRunning("r1".into())
            }
        );
        let replace = schedule("schedule: \"*/10 * * * *\"\nconcurrency: replace\n");
        assert_eq!(
            decide(&replace, last, now, Some("r1")),
            Decision::Fire {
                tick,
                replace: Some("r1".into())
            }
        );
        let allow = schedule("schedule: \"*/10 * * * *\"\nconcurrency: allow\n");
        assert_eq!(
            decide(&allow, last, now, Some("r1")),
            Decision::Fire {
                tick,
                replace: None
            }
        );
    }

    #[test]
    fn a_tick_in_a_blackout_or_outside_the_windows_is_skipped_with_why_and_suspend_fires_nothing() {
        let s = schedule(
            "schedule: \"0 * * * *\"\ntimezone: Europe/Paris\n\
             windows: [ { cron: \"0 14 * * FRI\", for: 2h } ]\n\
             blackouts: [ { from: \"2026-12-18 00:00\", to: \"2027-01-04 00:00\" } ]\n",
        );
        let skip = |now: &str| match decide(&s, at("2026-12-01T00:00:00Z"), at(now), None) {
            Decision::Skip { why, .. } => Some(why.to_string()),
            _ => None,
        };
        // 14:00 Paris on Friday 2026-12-11 is 13:00 UTC.
        assert_eq!(skip("2026-12-11T13:00:05Z"), None);
        assert_eq!(
            skip("2026-12-11T12:00:05Z").as_deref(),
            Some("outside every window")
        );
        assert_eq!(
            skip("2026-12-18T13:00:05Z").as_deref(),
            Some("in blackout 0")
        );
        let suspended = schedule("schedule: \"0 * * * *\"\nsuspend: true\n");
        assert_eq!(
            decide(
                &suspended,
                at("2026-12-01T00:00:00Z"),
                at("2026-12-11T13:00:05Z"),
                None
            ),
            Decision::Wait
        );
    }
}
