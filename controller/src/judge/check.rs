//! The check command: the user's own probe after the trial, which must exit 0.

use crate::record::{CheckRun, ExpectationResult};

use super::text::clip;
use super::verdict::result;

/// Judges the check command's run, quoting its last output line.
pub(super) fn check(run: &CheckRun) -> ExpectationResult {
    let shown = run.command.join(" ");
    let last = run
        .output
        .last()
        .map(|l| format!(": `{}`", clip(l, 160)))
        .unwrap_or_default();
    let actual = match run.code {
        Some(code) => format!("it exited {code}{last}"),
        None => format!("it did not finish in time or was killed{last}"),
    };
    result(
        "check",
        run.code == Some(0),
        format!("`{}` to exit 0", clip(&shown, 120)),
        actual,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::fixture::{assert_results, want};

    struct Case {
        name: &'static str,
        code: Option<i32>,
        output: &'static [&'static str],
        want: ExpectationResult,
    }

    const EXPECTED: &str = "`./verify --all` to exit 0";

    #[test]
    fn check_passes_on_exit_0_and_quotes_its_last_line() {
        let cases = vec![
            Case {
                name: "exit 0",
                code: Some(0),
                output: &["checking", "ok"],
                want: want("check", true, EXPECTED, "it exited 0: `ok`"),
            },
            Case {
                name: "exit 0 without output",
                code: Some(0),
                output: &[],
                want: want("check", true, EXPECTED, "it exited 0"),
            },
            Case {
                name: "exit 3 with its last output line",
                code: Some(3),
                output: &["checking", "lost 2 rows"],
                want: want("check", false, EXPECTED, "it exited 3: `lost 2 rows`"),
            },
            Case {
                name: "killed",
                code: None,
                output: &[],
                want: want(
                    "check",
                    false,
                    EXPECTED,
                    "it did not finish in time or was killed",
                ),
            },
        ];
        assert_eq!(cases.len(), 4);
        for c in &cases {
            let run = CheckRun {
                command: vec!["./verify".to_owned(), "--all".to_owned()],
                code: c.code,
                duration_ns: 1_000_000,
                output: c.output.iter().map(|l| (*l).to_owned()).collect(),
            };
            assert_results(c.name, &[check(&run)], std::slice::from_ref(&c.want));
        }
    }
}
