//! `atropos history` and `atropos coverage`: the store's facts in a terminal.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::Path;
use std::process::{Command, Output};

const ATROPOS: &str = env!("CARGO_BIN_EXE_atropos");
const STEADY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/store/steady.yaml"
);

fn atropos(dir: &Path, args: &[&str]) -> Output {
    Command::new(ATROPOS)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn history_and_coverage_print_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Two runs recorded in the default ./atropos.db.
    for seed in ["1", "2"] {
        let out = atropos(d, &["run", STEADY, "--trials", "3", "--seed", seed]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(d.join("atropos.db").exists());

    let out = atropos(d, &["history"]);
    assert!(out.status.success(), "{}", text(&out));
    let history = text(&out);
    let lines: Vec<&str> = history.lines().collect();
    assert!(lines[0].starts_with("STARTED (UTC)"), "{history}");
    assert_eq!(lines.len(), 3, "a header and two runs: {history}");
    assert!(
        lines[1].contains("PASS") && lines[1].contains("finished"),
        "{history}"
    );
    assert!(lines[1].contains("store-steady"), "{history}");

    let out = atropos(d, &["history", "store-steady", "-n", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let one = text(&out);
    assert!(one.starts_with("store-steady: 1 version ·"), "{one}");
    assert!(one.contains("over its last 2 runs ·"), "{one}");
    assert!(one.contains("coverage 2/2 cells (100%)"), "{one}");
    assert_eq!(one.lines().count(), 3, "{one}");

    let out = atropos(d, &["coverage"]);
    assert!(out.status.success(), "{}", text(&out));
    let coverage = text(&out);
    assert!(
        coverage.contains("store-steady: 2 of 2 cells covered (100%)"),
        "{coverage}"
    );
    let row = |phase: &str| {
        coverage
            .lines()
            .find(|l| l.starts_with(phase))
            .unwrap_or_else(|| panic!("no row {phase}: {coverage}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    // One column, SIGTERM: both faults are of that kind; 2 runs × 3 trials each land in
    // their phase.
    assert_eq!(row("PHASE"), ["PHASE", "\\", "KIND", "SIGTERM"]);
    assert_eq!(row("starting"), ["starting", "ok", "6"]);
    assert_eq!(row("ready"), ["ready", "ok", "6"]);
    assert_eq!(row("(start)"), ["(start)", "-"]);
    assert!(
        !coverage.contains("gap "),
        "nothing left to cover: {coverage}"
    );
}

#[test]
fn history_without_a_store_or_of_an_unknown_experiment_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for args in [&["history"][..], &["coverage"][..]] {
        let out = atropos(d, args);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains("no results store at atropos.db"),
            "{}",
            text(&out)
        );
        assert!(text(&out).contains("help:"), "{}", text(&out));
        assert!(!d.join("atropos.db").exists(), "reading creates nothing");
    }
    let out = atropos(d, &["run", STEADY, "--trials", "1", "--db", "x.db"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = atropos(d, &["history", "nope", "--db", "x.db"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("store-steady"),
        "names what there is: {}",
        text(&out)
    );
    let out = atropos(d, &["coverage", "nope", "--db", "x.db"]);
    assert_eq!(out.status.code(), Some(2));
    let out = atropos(d, &["run", STEADY, "--trials", "1", "--no-db"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!d.join("atropos.db").exists(), "--no-db records nothing");
}
