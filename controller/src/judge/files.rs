//! Files that must exist, or must be gone, once the target is.

use crate::record::ExpectationResult;

use super::verdict::result;

pub use atropos_injector::after::FileState;

/// One result per file, named by its place in `files.present` or `files.absent`.
pub(super) fn files(states: &[FileState]) -> Vec<ExpectationResult> {
    let (mut present, mut absent) = (0, 0);
    states
        .iter()
        .map(|f| {
            let (name, expected, actual) = if f.must_exist {
                present += 1;
                (
                    format!("files.present[{}]", present - 1),
                    format!("{} to exist", f.path),
                    if f.exists { "it does" } else { "it does not" },
                )
            } else {
                absent += 1;
                (
                    format!("files.absent[{}]", absent - 1),
                    format!("{} to be absent", f.path),
                    if f.exists {
                        "it still exists"
                    } else {
                        "it is absent"
                    },
                )
            };
            result(name, f.exists == f.must_exist, expected, actual)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::fixture::{assert_results, want};

    struct Case {
        name: &'static str,
        states: Vec<FileState>,
        want: Vec<ExpectationResult>,
    }

    fn file(path: &str, must_exist: bool, exists: bool) -> FileState {
        FileState {
            path: path.to_owned(),
            must_exist,
            exists,
        }
    }

    #[test]
    fn files_are_judged_present_or_absent_and_named_by_their_index() {
        let cases = vec![
            Case {
                name: "present and there",
                states: vec![file("data/db", true, true)],
                want: vec![want(
                    "files.present[0]",
                    true,
                    "data/db to exist",
                    "it does",
                )],
            },
            Case {
                name: "present but missing",
                states: vec![file("data/db", true, false)],
                want: vec![want(
                    "files.present[0]",
                    false,
                    "data/db to exist",
                    "it does not",
                )],
            },
            Case {
                name: "absent and gone",
                states: vec![file("app.pid", false, false)],
                want: vec![want(
                    "files.absent[0]",
                    true,
                    "app.pid to be absent",
                    "it is absent",
                )],
            },
            Case {
                name: "absent but still there",
                states: vec![file("app.pid", false, true)],
                want: vec![want(
                    "files.absent[0]",
                    false,
                    "app.pid to be absent",
                    "it still exists",
                )],
            },
            Case {
                name: "each list counts its own indices",
                states: vec![
                    file("a", true, true),
                    file("b", false, false),
                    file("c", true, true),
                ],
                want: vec![
                    want("files.present[0]", true, "a to exist", "it does"),
                    want("files.absent[0]", true, "b to be absent", "it is absent"),
                    want("files.present[1]", true, "c to exist", "it does"),
                ],
            },
        ];
        assert_eq!(cases.len(), 5);
        for c in &cases {
            assert_results(c.name, &files(&c.states), &c.want);
        }
    }
}
