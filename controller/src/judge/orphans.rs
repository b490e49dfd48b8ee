//! Orphans: descendants still alive after the main process ended.

use atropos_injector::Orphan;

use crate::record::ExpectationResult;
use crate::spec::OrphanPolicy;

use super::text::clip;
use super::verdict::result;

/// Judges the processes `left` behind under `policy`: `allowed` only reports them.
pub(super) fn orphans(policy: OrphanPolicy, left: &[Orphan]) -> ExpectationResult {
    let actual = if left.is_empty() {
        "none was left".to_owned()
    } else {
        let list: Vec<String> = left.iter().map(describe).collect();
        format!("{} left behind: {}", left.len(), list.join("; "))
    };
    result(
        "orphans",
        policy != OrphanPolicy::None || left.is_empty(),
        "no process left behind after the main process ended",
        actual,
    )
}

/// `pid 42 `worker` (outside its process group), killed by atropos`.
fn describe(o: &Orphan) -> String {
    let shown = if o.cmdline.is_empty() {
        &o.comm
    } else {
        &o.cmdline
    };
    format!(
        "pid {} `{}`{}{}",
        o.pid,
        clip(shown, 80),
        if o.left_group {
            " (outside its process group)"
        } else {
            ""
        },
        match (o.killed, o.kept) {
            (true, _) => ", killed by atropos",
            (false, true) => ", left running (not atropos's to kill without `orphans: kill`)",
            (false, false) => ", could not be killed",
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::fixture::{assert_results, want};

    struct Case {
        name: &'static str,
        policy: OrphanPolicy,
        left: Vec<Orphan>,
        want: ExpectationResult,
    }

    fn orphan(pid: i32, comm: &str, cmdline: &str, left_group: bool, killed: bool) -> Orphan {
        Orphan {
            pid,
            comm: comm.to_owned(),
            cmdline: cmdline.to_owned(),
            left_group,
            killed,
            kept: false,
        }
    }

    const EXPECTED: &str = "no process left behind after the main process ended";

    #[test]
    fn orphans_fail_the_trial_unless_allowed_and_say_who_and_what_became_of_them() {
        let cases = vec![
            Case {
                name: "none left",
                policy: OrphanPolicy::None,
                left: vec![],
                want: want("orphans", true, EXPECTED, "none was left"),
            },
            Case {
                name: "allowed orphans are reported but pass",
                policy: OrphanPolicy::Allowed,
                left: vec![orphan(42, "worker", "worker --queue a", false, true)],
                want: want(
                    "orphans",
                    true,
                    EXPECTED,
                    "1 left behind: pid 42 `worker --queue a`, killed by atropos",
                ),
            },
            Case {
                name: "one outside its group, killed, shown by name without a command line",
                policy: OrphanPolicy::None,
                left: vec![orphan(43, "helper", "", true, true)],
                want: want(
                    "orphans",
                    false,
                    EXPECTED,
                    "1 left behind: pid 43 `helper` (outside its process group), killed by atropos",
                ),
            },
            Case {
                name: "one that could not be killed, among two",
                policy: OrphanPolicy::None,
                left: vec![
                    orphan(44, "stuck", "stuck --forever", false, false),
                    orphan(45, "sleep", "sleep 60", true, true),
                ],
                want: want(
                    "orphans",
                    false,
                    EXPECTED,
                    "2 left behind: pid 44 `stuck --forever`, could not be killed; \
                     pid 45 `sleep 60` (outside its process group), killed by atropos",
                ),
            },
        ];
        assert_eq!(cases.len(), 4);
        for c in &cases {
            let got = orphans(c.policy, &c.left);
            assert_results(c.name, &[got], std::slice::from_ref(&c.want));
        }
    }
}
