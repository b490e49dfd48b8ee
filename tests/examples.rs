//! `atropos run experiments/examples` as CI runs it: verdicts, reasons, exit code, JSON and
//! JUnit, and no process left behind.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use common::{processes_with, reasons, run_json, tempdir, trials_n};

#[test]
fn examples_give_the_verdicts_and_reasons_each_fixture_deserves() {
    let dir = tempdir();
    let junit = dir.path().join("junit.xml");
    let (output, report) = run_json(
        &["experiments/examples", "--junit", junit.to_str().unwrap()],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "an expectation fails in the faulty examples\n{stdout}\n{stderr}"
    );

    // The well-behaved service passes everything, including the faults after its exit.
    let all = report["trials"].as_array().unwrap();
    let well: Vec<_> = all
        .iter()
        .filter(|t| t["experiment"] == "well-behaved")
        .collect();
    assert_eq!(
        well.len(),
        1 + 6 * 5,
        "the baseline and 6 faults × 5 trials"
    );
    for t in &well {
        assert_eq!(t["verdict"], "pass", "{}: {}", t["fault"], reasons(t));
    }
    for t in trials_n(&report, "well-behaved", "term-after-exit", 5) {
        assert_eq!(
            t["delivery"], "already_finished",
            "a reaped target gives already_finished, not an error"
        );
        assert_eq!(t["injected_phase"], "exited");
    }
    for t in trials_n(&report, "well-behaved", "term-zombie", 5) {
        assert_eq!(t["delivery"], "zombie");
    }
    for t in trials_n(&report, "well-behaved", "kill-mid-init", 5) {
        assert_eq!(t["observation"]["exit"]["signal"], "SIGKILL");
        assert!(
            t["recovery"]["reached_ns"].as_u64().is_some(),
            "the restart reached ready"
        );
    }
    for t in trials_n(&report, "well-behaved", "sigterm-ready", 5) {
        let d = &t["observation"]["deliveries"][0];
        assert_eq!(d["outcome"], "delivered");
        assert_eq!(d["phase"], "ready");
        assert_eq!(d["offset_ns"], 10_000_000);
        let latency = d["latency_ns"].as_u64().unwrap();
        assert_eq!(
            d["delivered_ns"].as_u64().unwrap(),
            d["trigger_ns"].as_u64().unwrap() + 10_000_000 + latency
        );
        let phases = t["observation"]["phases"].as_array().unwrap();
        assert!(
            phases.iter().all(|p| p["entered_ns"].is_u64()),
            "every phase has its entry time"
        );
    }
    for t in trials_n(&report, "well-behaved", "pause-then-term", 5) {
        let d = &t["observation"]["deliveries"];
        assert_eq!(d[0]["signal"], "SIGSTOP");
        assert!(
            d[0]["resumed_ns"].as_u64().unwrap()
                >= d[0]["delivered_ns"].as_u64().unwrap() + 50_000_000
        );
        assert_eq!(d[1]["signal"], "SIGTERM");
    }

    // Skipping the cleanup: both the missing line and the stale pidfile are named.
    for t in trials_n(&report, "skips-cleanup", "sigterm-ready", 3) {
        assert_eq!(t["verdict"], "fail");
        let r = reasons(t);
        assert!(r.contains("stdout.contains[0]: expected a stdout line matching `^cleanup done$`, but no stdout line matched"), "{r}");
        assert!(
            r.contains("files.absent[0]")
                && r.contains("app.pid to be absent, but it still exists"),
            "{r}"
        );
    }

    // A swallowed SIGINT is reported as hung after the grace; SIGTERM still works.
    for t in trials_n(&report, "hangs-on-sigint", "sigint-ready", 2) {
        assert_eq!(t["verdict"], "fail");
        assert_eq!(t["observation"]["stop"], "hung");
        assert_eq!(t["observation"]["exit"]["signal"], "SIGKILL");
        assert!(
            reasons(t).contains("hung: still running 500ms after SIGINT; killed with SIGKILL"),
            "{}",
            reasons(t)
        );
    }
    for t in trials_n(&report, "hangs-on-sigint", "sigterm-ready", 2) {
        assert_eq!(t["verdict"], "pass", "{}", reasons(t));
    }

    // The leaked worker is reported, marked as outside the group, killed, and really gone.
    for t in trials_n(&report, "leaks-child", "sigterm-ready", 2) {
        assert_eq!(t["verdict"], "fail");
        let orphans = t["observation"]["orphans"].as_array().unwrap();
        assert_eq!(orphans.len(), 1, "{orphans:?}");
        assert_eq!(orphans[0]["left_group"], true);
        assert_eq!(orphans[0]["killed"], true);
        assert!(
            orphans[0]["cmdline"]
                .as_str()
                .unwrap()
                .contains("leaks-child worker")
        );
        assert!(
            reasons(t).contains("orphans: expected no process left behind"),
            "{}",
            reasons(t)
        );
    }
    for t in trials_n(&report, "leaks-child", "kill-worker-then-term", 2) {
        assert_eq!(
            t["verdict"],
            "pass",
            "killing the worker first leaves nothing: {}",
            reasons(t)
        );
        assert_eq!(t["observation"]["deliveries"][0]["outcome"], "delivered");
    }

    // A kill mid-rewrite corrupts the state: the restart refuses to start.
    // The offsets are drawn over the baseline's rewrite (about 30 ms); a trial that rewrites
    // faster than its baseline may be hit just after, in `ready`, and says so.
    let corrupt = trials_n(&report, "corrupts-state", "kill-mid-rewrite", 5);
    let phases: Vec<&str> = corrupt
        .iter()
        .map(|t| t["injected_phase"].as_str().unwrap_or("none"))
        .collect();
    assert!(
        phases.iter().filter(|p| **p == "init.rewrite").count() >= 3
            && phases.iter().all(|p| ["init.rewrite", "ready"].contains(p)),
        "{phases:?}"
    );
    let failed: Vec<_> = corrupt.iter().filter(|t| t["verdict"] == "fail").collect();
    assert!(!failed.is_empty(), "the corruption is found");
    for t in failed {
        assert!(
            reasons(t)
                .contains("recover: expected a restart to reach `ready` within 2s, but it did not")
                && reasons(t).contains("state corrupt"),
            "{}",
            reasons(t)
        );
    }

    // The summary names the coverage by phase × kind of fault and its gaps, with the
    // fault line that would close each; JUnit has a case per fault.
    assert!(
        stdout.contains("well-behaved") && stdout.contains("injection latency p50"),
        "{stdout}"
    );
    assert!(stdout.contains("over 30 deliveries"), "{stdout}");
    assert!(
        stdout.contains("gap init.config: no SIGKILL lands here; e.g. {signal: SIGKILL, at: {phase: init.config, offset: random}}"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(" 1 errors") && !stdout.contains(" 1 deliveries"),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"<testcase name="sigint-ready" classname="hangs-on-sigint""#),
        "{xml}"
    );
    assert!(xml.contains("<failure message="));

    // Nothing the run started is still alive.
    let run_id = report["run"]["id"].as_str().unwrap();
    // The run is in the results store, every trial committed.
    let history = common::atropos()
        .args(["history", "--db"])
        .arg(dir.path().join("atropos.db"))
        .output()
        .unwrap();
    let history = String::from_utf8_lossy(&history.stdout);
    let line = history
        .lines()
        .find(|l| l.contains(run_id))
        .unwrap_or_else(|| panic!("{run_id} not in:\n{history}"));
    assert!(line.contains("FAIL") && line.contains("finished"), "{line}");
    assert_eq!(
        processes_with(run_id),
        vec![],
        "processes of run {run_id} survived"
    );
}
