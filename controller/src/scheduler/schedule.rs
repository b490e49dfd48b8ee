//! An experiment's schedule in typed form: its cron line in its time zone, the periods in
//! which a tick may or may not start, and what a tick does while an earlier run goes on.
//!
//! Times are instants (`DateTime<Utc>`); the cron line, windows and blackouts are read on the
//! wall clock of the experiment's time zone, so "14:00 on Fridays" stays 14:00 in Paris
//! across summer time. croner resolves the clock changes: a wall-clock time that does not
//! exist (spring forward) fires once at the change, one that exists twice (fall back) fires
//! once, at its first instance.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::spec::{Concurrency, Period, Spec};

/// One checked schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The cron line, as written.
    pub line: String,
    cron: Cron,
    /// The time zone it is read in.
    pub tz: Tz,
    /// What a tick does while an earlier run goes on.
    pub concurrency: Concurrency,
    /// How late a tick may still start.
    pub starting_deadline: Option<Duration>,
    /// Whether nothing fires.
    pub suspend: bool,
    windows: Vec<Span>,
    blackouts: Vec<Span>,
}

/// A period in checked form.
#[derive(Debug, Clone)]
enum Span {
    /// Begins at each match of the cron line, lasts this long.
    Recurring(Box<Cron>, Duration),
    /// From one instant to another.
    Once(DateTime<Utc>, DateTime<Utc>),
}

/// Why a tick did not start a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// It came later than `starting_deadline` allows.
    Late {
        /// How late.
        late: Duration,
        /// The deadline.
        deadline: Duration,
    },
    /// No window was open.
    OutsideWindows,
    /// A blackout period was on (its index in `blackouts`).
    Blackout(usize),
    /// `concurrency: forbid` and a run of an earlier tick still going.
    StillRunning(String),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Late { late, deadline } => write!(
                f,
                "missed: {} late, past starting_deadline {}",
                humantime::format_duration(round_ms(*late)),
                humantime::format_duration(*deadline)
            ),
            Skip::OutsideWindows => f.write_str("outside every window"),
            Skip::Blackout(i) => write!(f, "in blackout {i}"),
            Skip::StillRunning(run) => {
                write!(f, "concurrency forbid: run {run} is still going")
            }
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A cron line as crontab writes it (five fields), or with seconds in front (six).
pub fn parse_cron(line: &str) -> Result<Cron, String> {
    line.parse::<Cron>().map_err(|e| e.to_string())
}

/// An IANA time zone name (`Europe/Paris`, `UTC`).
pub fn parse_tz(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("`{name}` is not an IANA time zone name"))
}

/// A local wall-clock time (`2026-12-18 00:00` or with seconds) in `tz`; a time a clock
/// change skips or repeats is refused (write one that exists once).
fn parse_local(text: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    let naive = [
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text.trim(), f).ok())
    .ok_or_else(|| format!("`{text}` is not a local time; expected e.g. \"2026-12-18 00:00\""))?;
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        _ => Err(format!(
            "`{text}` does not exist once in {tz} (a clock change); expected another time"
        )),
    }
}

/// A period in checked form; the error says which field is wrong.
fn span(period: &Period, tz: Tz) -> Result<Span, (&'static str, String)> {
    match period {
        Period {
            cron: Some(line),
            lasts: Some(lasts),
            from: None,
            to: None,
        } => {
            let cron = parse_cron(line).map_err(|e| ("cron", format!("`{line}`: {e}")))?;
            if lasts.is_zero() {
                return Err(("for", "0s; expected a positive duration".into()));
            }
            Ok(Span::Recurring(Box::new(cron), *lasts))
        }
        Period {
            cron: None,
            lasts: None,
            from: Some(from),
            to: Some(to),
        } => {
            let from_t = parse_local(from, tz).map_err(|e| ("from", e))?;
            let to_t = parse_local(to, tz).map_err(|e| ("to", e))?;
            if to_t <= from_t {
                return Err(("to", format!("`{to}` is not after `{from}`")));
            }
            Ok(Span::Once(from_t, to_t))
        }
        _ => Err((
            "cron",
            "expected either `cron` and `for` (a recurring period) or `from` and `to` (once)"
                .into(),
        )),
    }
}

/// What is wrong with a schedule: the field (below `spec.`) and why.
pub type Problem = (String, String);

impl Schedule {
    /// The schedule of `spec`, `None` if it has none; every problem with its field.
    pub fn of(spec: &Spec) -> Result<Option<Schedule>, Vec<Problem>> {
        let mut problems = Vec::new();
        let tz = match spec.timezone.as_deref().map(parse_tz).transpose() {
            Ok(tz) => tz.unwrap_or(Tz::UTC),
            Err(e) => {
                problems.push(("timezone".to_owned(), e));
                Tz::UTC
            }
        };
        let cron = match spec.schedule.as_deref().map(parse_cron).transpose() {
            Ok(cron) => cron,
            Err(e) => {
                problems.push(("schedule".to_owned(), e));
                None
            }
        };
        let mut spans = |periods: &[Period], key: &str| {
            let mut out = Vec::new();
            for (i, p) in periods.iter().enumerate() {
                match span(p, tz) {
                    Ok(s) => out.push(s),
                    Err((field, e)) => problems.push((format!("{key}[{i}].{field}"), e)),
                }
            }
            out
        };
        let windows = spans(&spec.windows, "windows");
        let blackouts = spans(&spec.blackouts, "blackouts");
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(cron.map(|cron| Schedule {
            line: spec.schedule.clone().unwrap_or_default(),
            cron,
            tz,
            concurrency: spec.concurrency,
            starting_deadline: spec.starting_deadline,
            suspend: spec.suspend,
            windows,
            blackouts,
        }))
    }

    /// The first tick after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        Some(next.with_timezone(&Utc))
    }

    /// The latest tick at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        let prev = self.cron.find_previous_occurrence(&local, true).ok()?;
        Some(prev.with_timezone(&Utc))
    }

    /// Why a tick at `tick` may not start a run by the calendar (windows, blackouts), if so.
    pub fn closed_at(&self, tick: DateTime<Utc>) -> Option<Skip> {
        if let Some(i) = self.blackouts.iter().position(|s| self.covers(s, tick)) {
            return Some(Skip::Blackout(i));
        }
        if !self.windows.is_empty() && !self.windows.iter().any(|s| self.covers(s, tick)) {
            return Some(Skip::OutsideWindows);
        }
        None
    }

    fn covers(&self, span: &Span, t: DateTime<Utc>) -> bool {
        match span {
            Span::Once(from, to) => *from <= t && t < *to,
            Span::Recurring(cron, lasts) => {
                let local = t.with_timezone(&self.tz);
                cron.find_previous_occurrence(&local, true)
                    .ok()
                    .and_then(|start| {
                        let start = start.with_timezone(&Utc);
                        Some(t < start + chrono::Duration::from_std(*lasts).ok()?)
                    })
                    .unwrap_or(false)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    pub(crate) fn spec_with(yaml_tail: &str) -> Spec {
        let text = format!("target: {{ run: {{ command: [\"true\"] }} }}\nfaults: []\n{yaml_tail}");
        serde_yaml::from_str(&text).unwrap()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// Every tick from `from` (exclusive) to `to` (inclusive).
    fn ticks(s: &Schedule, from: &str, to: &str) -> Vec<String> {
        let (mut t, end) = (utc(from), utc(to));
        let mut out = Vec::new();
        while let Some(next) = s.next_after(t) {
            if next > end {
                break;
            }
            out.push(next.to_rfc3339());
            t = next;
        }
        out
    }

    #[test]
    fn a_daily_tick_in_paris_keeps_its_wall_clock_across_both_clock_changes() {
        // 02:30 does not exist on 2026-03-29 (02:00 → 03:00) and exists twice on
        // 2026-10-25 (03:00 → 02:00): one run each day, never none, never two.
        let s = Schedule::of(&spec_with(
            "schedule: \"30 2 * * *\"\ntimezone: Europe/Paris\n",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            ticks(&s, "2026-03-27T12:00:00Z", "2026-03-31T12:00:00Z"),
            [
                "2026-03-28T01:30:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-30T00:30:00+00:00",
                "2026-03-31T00:30:00+00:00",
            ]
        );
        assert_eq!(
            ticks(&s, "2026-10-23T12:00:00Z", "2026-10-27T12:00:00Z"),
            [
                "2026-10-24T00:30:00+00:00",
                "2026-10-25T00:30:00+00:00",
                "2026-10-26T01:30:00+00:00",
                "2026-10-27T01:30:00+00:00",
            ]
        );
    }

    #[test]
    fn an_hourly_tick_neither_skips_nor_doubles_over_a_clock_change() {
        let s = Schedule::of(&spec_with(
            "schedule: \"0 * * * *\"\ntimezone: America/New_York\n",
        ))
        .unwrap()
        .unwrap();
        // Fall back on 2026-11-01: 01:00 local twice; each instant once, an hour apart.
        let fall = ticks(&s, "2026-11-01T03:30:00Z", "2026-11-01T08:30:00Z");
        assert_eq!(fall.len(), 5, "{fall:?}");
        // Spring forward on 2026-03-08: 02:00 local does not exist.
        let spring = ticks(&s, "2026-03-08T04:30:00Z", "2026-03-08T09:30:00Z");
        assert_eq!(spring.len(), 5, "{spring:?}");
    }

    #[test]
    fn windows_and_blackouts_are_read_in_the_experiments_time_zone() {
        let s = Schedule::of(&spec_with(
            "schedule: \"*/30 * * * *\"\ntimezone: Europe/Paris\n\
             windows: [ { cron: \"0 14 * * FRI\", for: 2h } ]\n\
             blackouts: [ { from: \"2026-12-18 00:00\", to: \"2027-01-04 00:00\" } ]\n",
        ))
        .unwrap()
        .unwrap();
        // Friday 2026-12-11, Paris is UTC+1: the window is 13:00-15:00 UTC.
        assert_eq!(
            s.closed_at(utc("2026-12-11T12:30:00Z")),
            Some(Skip::OutsideWindows)
        );
        assert_eq!(s.closed_at(utc("2026-12-11T13:00:00Z")), None);
        assert_eq!(s.closed_at(utc("2026-12-11T14:30:00Z")), None);
        assert_eq!(
            s.closed_at(utc("2026-12-11T15:00:00Z")),
            Some(Skip::OutsideWindows)
        );
        // Friday 2026-12-18 is in the freeze.
        assert_eq!(
            s.closed_at(utc("2026-12-18T13:30:00Z")),
            Some(Skip::Blackout(0))
        );
        assert_eq!(
            s.closed_at(utc("2026-12-10T13:30:00Z")),
            Some(Skip::OutsideWindows)
        );
    }

    #[test]
    fn a_local_time_a_clock_change_skips_is_refused() {
        let problems = Schedule::of(&spec_with(
            "schedule: \"0 * * * *\"\ntimezone: Europe/Paris\n\
             blackouts: [ { from: \"2026-03-29 02:30\", to: \"2026-03-30 00:00\" } ]\n",
        ))
        .unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "blackouts[0].from");
        assert!(
            problems[0].1.contains("does not exist once"),
            "{problems:?}"
        );
    }

    #[test]
    fn every_problem_is_named_by_its_field() {
        let problems = Schedule::of(&spec_with(
            "schedule: \"61 * * * *\"\ntimezone: Mars/Olympus\n\
             windows: [ { cron: \"0 14 * * FRI\" }, { from: \"next friday\", to: \"2026-03-30 00:00\" } ]\n\
             blackouts: [ { from: \"2027-01-04 00:00\", to: \"2026-12-18 00:00\" } ]\n",
        ))
        .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "timezone",
                "schedule",
                "windows[0].cron",
                "windows[1].from",
                "blackouts[0].to"
            ],
            "{problems:?}"
        );
    }
}
