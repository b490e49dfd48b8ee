//! Output watches: a pattern stdout or stderr must show (`contains`) or must not
//! (`not_contains`).

use atropos_injector::Stream;
use atropos_injector::record::WatchHit;

use crate::plan::WatchSpec;
use crate::record::ExpectationResult;

use super::text::{clip, human_ns};
use super::verdict::result;

/// Judges each watch against its hit (the injector reports them in the same order), `lines`
/// being how many (stdout, stderr) lines were read in all.
pub(super) fn output(
    watches: &[WatchSpec],
    hits: &[WatchHit],
    lines: (u64, u64),
) -> Vec<ExpectationResult> {
    watches
        .iter()
        .zip(hits)
        .map(|(w, hit)| {
            let (stream, read) = match w.stream {
                Stream::Stdout => ("stdout", lines.0),
                Stream::Stderr => ("stderr", lines.1),
            };
            if w.required {
                let actual = match &hit.first {
                    Some(l) => {
                        format!("matched at {}: `{}`", human_ns(l.at_ns), clip(&l.text, 120))
                    }
                    None => format!("no {stream} line matched ({read} lines read)"),
                };
                result(
                    &w.name,
                    hit.first.is_some(),
                    format!("a {stream} line matching `{}`", w.pattern),
                    actual,
                )
            } else {
                let actual = match &hit.first {
                    Some(l) => format!(
                        "{} matched, first at {}: `{}`",
                        hit.count,
                        human_ns(l.at_ns),
                        clip(&l.text, 120)
                    ),
                    None => "none matched".to_owned(),
                };
                result(
                    &w.name,
                    hit.first.is_none(),
                    format!("no {stream} line matching `{}`", w.pattern),
                    actual,
                )
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use atropos_injector::record::Line;

    use super::*;
    use crate::judge::fixture::{assert_results, want};

    struct Case {
        name: &'static str,
        watch: WatchSpec,
        first: Option<(u64, String)>,
        count: u64,
        want: ExpectationResult,
    }

    fn watch(name: &str, stream: Stream, pattern: &str, required: bool) -> WatchSpec {
        WatchSpec {
            name: name.to_owned(),
            stream,
            pattern: pattern.to_owned(),
            required,
        }
    }

    #[test]
    fn output_watches_report_the_first_match_or_how_much_was_read() {
        let long = "x".repeat(130);
        let clipped = format!("matched at 1ms: `{}…`", "x".repeat(120));
        let cases = vec![
            Case {
                name: "contains matched",
                watch: watch("stdout.contains[0]", Stream::Stdout, "^ready$", true),
                first: Some((2_000_000, "ready".to_owned())),
                count: 1,
                want: want(
                    "stdout.contains[0]",
                    true,
                    "a stdout line matching `^ready$`",
                    "matched at 2ms: `ready`",
                ),
            },
            Case {
                name: "contains unmatched counts the stdout lines read",
                watch: watch("stdout.contains[1]", Stream::Stdout, "^cleanup done$", true),
                first: None,
                count: 0,
                want: want(
                    "stdout.contains[1]",
                    false,
                    "a stdout line matching `^cleanup done$`",
                    "no stdout line matched (12 lines read)",
                ),
            },
            Case {
                name: "contains unmatched counts the stderr lines read",
                watch: watch("stderr.contains[0]", Stream::Stderr, "bye", true),
                first: None,
                count: 0,
                want: want(
                    "stderr.contains[0]",
                    false,
                    "a stderr line matching `bye`",
                    "no stderr line matched (3 lines read)",
                ),
            },
            Case {
                name: "a long matched line is clipped",
                watch: watch("stdout.contains[0]", Stream::Stdout, "x+", true),
                first: Some((1_000_000, long)),
                count: 1,
                want: want(
                    "stdout.contains[0]",
                    true,
                    "a stdout line matching `x+`",
                    &clipped,
                ),
            },
            Case {
                name: "not_contains with no match passes",
                watch: watch("stderr.not_contains[0]", Stream::Stderr, "panic", false),
                first: None,
                count: 0,
                want: want(
                    "stderr.not_contains[0]",
                    true,
                    "no stderr line matching `panic`",
                    "none matched",
                ),
            },
            Case {
                name: "not_contains matched says how often and the first line",
                watch: watch("stderr.not_contains[1]", Stream::Stderr, "panic", false),
                first: Some((4_000_000, "panic: x".to_owned())),
                count: 2,
                want: want(
                    "stderr.not_contains[1]",
                    false,
                    "no stderr line matching `panic`",
                    "2 matched, first at 4ms: `panic: x`",
                ),
            },
        ];
        assert_eq!(cases.len(), 6);
        for c in &cases {
            let hit = WatchHit {
                stream: c.watch.stream,
                pattern: c.watch.pattern.clone(),
                first: c.first.clone().map(|(at_ns, text)| Line { at_ns, text }),
                count: c.count,
            };
            let got = output(std::slice::from_ref(&c.watch), &[hit], (12, 3));
            assert_results(c.name, &got, std::slice::from_ref(&c.want));
        }
    }
}
