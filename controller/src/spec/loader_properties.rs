//! Properties of the loader over inputs nobody wrote by hand: it never panics, never hangs,
//! and every problem it reports about a text has a line and column to point at.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::Path;

use proptest::prelude::*;

use super::{Invalid, Problem, load_file, validate};

const GOOD: &str = include_str!("../../../experiments/examples/well-behaved.yaml");

/// Snippets that mean something to YAML or to our checks.
const SNIPPETS: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    ",",
    ": ",
    "- ",
    "? ",
    "&a ",
    "*a",
    "!!str ",
    "!x ",
    "\"",
    "'",
    "|\n",
    ">-\n",
    "#",
    "\n",
    "\n  ",
    "\t",
    "\u{3000}",
    "\u{a0}",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "%TAG ! x:\n",
    "${trial.port}",
    "${",
    "\\",
    "\r\n",
    "é",
    "\u{feff}",
    "\0",
    "0x1F",
    "~",
];

/// Loads `bytes` as a file and checks what every problem must carry.
fn load_and_check(dir: &Path, bytes: &[u8]) {
    let path = dir.join("x.yaml");
    std::fs::write(&path, bytes).unwrap();
    let problems: Vec<Problem> = match load_file(&path) {
        Ok(loaded) => validate(&loaded),
        Err(Invalid(problems)) => {
            assert!(!problems.is_empty(), "an error always says what");
            problems
        }
    };
    for p in &problems {
        assert!(p.line >= 1 && p.column >= 1, "no place for: {p}");
        assert!(!p.message.is_empty(), "no message: {p:?}");
        assert!(
            p.to_string().len() < 4000,
            "a message of {} bytes",
            p.to_string().len()
        );
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, usize),
    Delete(usize, usize),
    Byte(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0..SNIPPETS.len()).prop_map(|(at, s)| Edit::Insert(at, s)),
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Byte(at, b)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for e in edits {
        let len = bytes.len().max(1);
        match *e {
            Edit::Insert(at, s) => {
                let at = at % len;
                bytes.splice(at..at, SNIPPETS[s].bytes());
            }
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            Edit::Byte(at, b) => {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = b;
                }
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_every_problem_has_a_place(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let dir = tempfile::tempdir().unwrap();
        load_and_check(dir.path(), &bytes);
    }

    #[test]
    fn edited_experiments_never_panic_and_every_problem_has_a_place(
        edits in proptest::collection::vec(edit(), 1..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        load_and_check(dir.path(), &apply(GOOD, &edits));
    }

    #[test]
    fn yaml_made_of_snippets_never_panics(
        parts in proptest::collection::vec(0..SNIPPETS.len(), 0..200),
    ) {
        let text: String = parts.iter().map(|&i| SNIPPETS[i]).collect();
        let dir = tempfile::tempdir().unwrap();
        load_and_check(dir.path(), text.as_bytes());
    }
}
