//! The words judging is written in: short durations, clipped lines, and what a target did.
//!
//! Every reason a user reads is assembled from these, so a duration or an output line reads
//! the same in every expectation.

use std::time::Duration;

use atropos_injector::Observation;

/// `1.234ms`, `12µs`, `2s` — short and exact enough for reasons.
pub use crate::report::model::human_ns;

/// [`human_ns`] of a [`Duration`], saturating at `u64::MAX` nanoseconds.
pub fn human(d: Duration) -> String {
    human_ns(nanos(d))
}

/// `d` in nanoseconds, saturating: deadlines past 584 years compare as "never".
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What the target did, in a few words: how it ended and its most telling output line.
pub fn what_happened(obs: &Observation) -> String {
    let mut s = match &obs.exit {
        Some(exit) => format!("{exit} at {}", human_ns(exit.at_ns)),
        None => "no exit observed".to_owned(),
    };
    if let Some((stream, line)) = telling_line(obs) {
        s.push_str(&format!(", {stream}: `{}`", clip(line, 120)));
    }
    s
}

/// The output line that best says what went wrong: the first stderr line that starts like
/// a panic or an error (a Go or Rust panic prints its message first and a trace after it),
/// else the last unindented stderr line, else the last stdout line.
pub(super) fn telling_line(obs: &Observation) -> Option<(&'static str, &str)> {
    let starts_bad = |t: &str| {
        let l = t.trim_start().to_ascii_lowercase();
        [
            "panic",
            "fatal",
            "error",
            "thread '",
            "exception",
            "traceback",
        ]
        .iter()
        .any(|p| l.starts_with(p))
    };
    let err = &obs.stderr_tail;
    err.iter()
        .find(|l| starts_bad(&l.text))
        .or_else(|| {
            err.iter()
                .rev()
                .find(|l| !l.text.starts_with([' ', '\t']) && !l.text.trim().is_empty())
        })
        .map(|l| ("stderr", l.text.as_str()))
        .or_else(|| {
            obs.stdout_tail
                .last()
                .map(|l| ("last stdout", l.text.as_str()))
        })
}

/// `text` cut to `max` characters, with `…` when it was cut.
pub(super) fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::fixture::obs;

    #[test]
    fn human_durations_are_short() {
        let cases: &[(u64, &str)] = &[
            (0, "0ns"),
            (999, "999ns"),
            (1_500, "1.5µs"),
            (9_898, "9.9µs"),
            (1_250_000, "1.25ms"),
            (12_000_000, "12ms"),
            (1_500_000_000, "1.5s"),
            (5_000_000_000, "5s"),
        ];
        assert_eq!(cases.len(), 8);
        for (ns, want) in cases {
            assert_eq!(human_ns(*ns), *want, "case {ns}ns");
        }
    }

    #[test]
    fn what_happened_tells_the_exit_and_the_most_telling_line() {
        let long = "e".repeat(130);
        let clipped = format!("no exit observed, stderr: `{}…`", "e".repeat(120));
        let cases = vec![
            ("nothing seen", obs().build(), "no exit observed"),
            (
                "a panic line counts over the lines after it",
                obs()
                    .exited(2, 5_000_000)
                    .stderr(&["starting", "panic: boom", "goroutine 1 [running]:"])
                    .stdout(&["hello"])
                    .build(),
                "exit code 2 at 5ms, stderr: `panic: boom`",
            ),
            (
                "else the last unindented, non-blank stderr line",
                obs()
                    .exited(1, 1_000)
                    .stderr(&["warn: slow", "  at frame 1", "   "])
                    .build(),
                "exit code 1 at 1µs, stderr: `warn: slow`",
            ),
            (
                "else the last stdout line",
                obs()
                    .exited(0, 1_000_000_000)
                    .stderr(&["\tat frame"])
                    .stdout(&["a", "b"])
                    .build(),
                "exit code 0 at 1s, last stdout: `b`",
            ),
            (
                "a long line is clipped",
                obs().stderr(&[long.as_str()]).build(),
                clipped.as_str(),
            ),
        ];
        assert_eq!(cases.len(), 5);
        for (name, o, want) in &cases {
            assert_eq!(what_happened(o), *want, "case `{name}`");
        }
    }
}
