//! The Go lifecycle suite: every program built by the real Go toolchain, run under atropos,
//! each verdict and each reason checked. Go is required (`.ci/run` installs it); without it
//! this test fails rather than skips.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::process::Command;
use std::time::Instant;

use common::{processes_with, reasons, root, run_json, tempdir, trials};
use serde_json::Value;

fn all_pass(report: &Value, experiment: &str) {
    let mine: Vec<&Value> = report["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["experiment"] == experiment)
        .collect();
    assert!(!mine.is_empty(), "{experiment} ran no trial");
    for t in mine {
        assert_eq!(
            t["verdict"],
            "pass",
            "{experiment}/{}: {}",
            t["fault"],
            reasons(t)
        );
    }
}

fn expectation<'a>(t: &'a Value, name: &str) -> &'a Value {
    t["expectations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {t}"))
}

#[test]
fn atropos_passes_every_correct_go_program_and_fails_every_faulty_one_for_its_reason() {
    let build = Command::new("bash")
        .arg(root().join("experiments/go-lifecycle/build.sh"))
        .output()
        .expect("bash runs build.sh; Go comes from Debian's golang-go, which .ci/run installs");
    assert!(
        build.status.success(),
        "go build failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );

    let dir = tempdir();
    let started = Instant::now();
    let (output, report) = run_json(&["experiments/go-lifecycle"], dir.path());
    let elapsed = started.elapsed();
    eprintln!(
        "the Go lifecycle suite ran {} trials in {:.1}s",
        report["trials"].as_array().unwrap().len(),
        elapsed.as_secs_f64()
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    for scenario in [
        "kill-mid-init",
        "panic-in-init",
        "sigterm-cleanup",
        "sigint-swallowed",
        "main-returns-early",
        "already-finished-child",
        "signal-after-exit",
        "leaked-child",
    ] {
        all_pass(&report, &format!("{scenario}-good"));
    }
    assert_eq!(
        report["end"]["errors"], 0,
        "no trial may be a harness error"
    );

    // 1. A kill mid-init corrupts the in-place state file; the restart refuses it.
    assert_eq!(
        trials(&report, "kill-mid-init-bad", "baseline")[0]["verdict"],
        "pass"
    );
    let kills = trials(&report, "kill-mid-init-bad", "kill-mid-init");
    let corrupt: Vec<_> = kills.iter().filter(|t| t["verdict"] == "fail").collect();
    assert!(
        !corrupt.is_empty(),
        "the corruption is found within the experiment's trials"
    );
    for t in corrupt {
        let r = reasons(t);
        assert!(
            r.contains("recover: expected a restart to reach `ready`")
                && r.contains("state corrupt"),
            "{r}"
        );
        assert_eq!(t["observation"]["exit"]["signal"], "SIGKILL");
    }

    // 2. A panic in init fails the baseline, before any fault is injected.
    let base = trials(&report, "panic-in-init-bad", "baseline")[0];
    assert_eq!(base["verdict"], "fail");
    let r = reasons(base);
    assert!(
        r.contains(
            "reaches main: expected phase `main` to be entered, but it never was: exit code 2"
        ),
        "{r}"
    );
    assert!(
        r.contains("exit: expected exit code 0, but exit code 2"),
        "{r}"
    );
    assert!(
        r.contains("stderr.not_contains[0]") && r.contains("panic: regexp"),
        "{r}"
    );
    for t in trials(&report, "panic-in-init-bad", "term-ready") {
        assert_eq!(
            t["observation"]["deliveries"].as_array().unwrap().len(),
            0,
            "no fault reaches a program that never started"
        );
        assert!(
            reasons(t)
                .contains("phase `ready` never reached: the target ended first (exit code 2)"),
            "{}",
            reasons(t)
        );
    }

    // 3. os.Exit from the signal path skips the deferred cleanup.
    for t in trials(&report, "sigterm-cleanup-bad", "term-ready") {
        assert_eq!(t["verdict"], "fail");
        assert_eq!(
            expectation(t, "exit")["passed"],
            true,
            "the exit code looks fine"
        );
        assert!(
            reasons(t)
                .contains("a stdout line matching `^cleanup done$`, but no stdout line matched"),
            "{}",
            reasons(t)
        );
    }

    // 4. runtime.Goexit in the signal goroutine: hung after the grace, nothing left running.
    for fault in ["int-ready", "int-ready-later"] {
        for t in trials(&report, "sigint-swallowed-bad", fault) {
            assert_eq!(t["observation"]["stop"], "hung");
            assert!(
                reasons(t).contains("hung: still running 1s after SIGINT; killed with SIGKILL"),
                "{}",
                reasons(t)
            );
        }
    }
    for t in trials(&report, "sigint-swallowed-bad", "term-ready") {
        assert_eq!(t["verdict"], "pass", "SIGTERM is handled: {}", reasons(t));
    }

    // 5. main returning early loses acknowledged records: the check command says which.
    for t in trials(&report, "main-returns-early-bad", "term-acking") {
        assert_eq!(t["verdict"], "fail");
        assert_eq!(t["check"]["code"], 1);
        assert!(
            reasons(t).contains("acknowledged records not persisted"),
            "{}",
            reasons(t)
        );
    }

    // 6. Killing a child that already finished: the faulty supervisor panics.
    for t in trials(&report, "already-finished-child-bad", "child-then-parent") {
        let d = t["observation"]["deliveries"].as_array().unwrap();
        assert_eq!(
            (d[0]["signal"].as_str(), d[0]["outcome"].as_str()),
            (Some("SIGKILL"), Some("delivered"))
        );
        assert_ne!(
            d[0]["pids"][0], t["observation"]["pid"],
            "the first step hit the child, not the supervisor"
        );
        assert_eq!(d[1]["signal"], "SIGTERM");
        assert!(
            reasons(t).contains("panic: os: process already finished"),
            "{}",
            reasons(t)
        );
        assert_eq!(t["observation"]["exit"]["code"], 2);
    }
    for t in trials(&report, "already-finished-child-good", "child-then-parent") {
        assert_eq!(t["observation"]["deliveries"][0]["outcome"], "delivered");
    }

    // 7. Signals after the exit: zombie and already_finished, never an error, never elsewhere.
    for variant in ["good", "bad"] {
        let exp = format!("signal-after-exit-{variant}");
        for (fault, outcome) in [
            ("term-zombie", "zombie"),
            ("term-reaped", "already_finished"),
            ("kill-reaped", "already_finished"),
        ] {
            for t in trials(&report, &exp, fault) {
                assert_eq!(t["delivery"], outcome, "{exp}/{fault}");
                assert_eq!(t["injected_phase"], "exited");
                assert_eq!(
                    t["observation"]["deliveries"][0]["pids"][0], t["observation"]["pid"],
                    "only the target's own pid"
                );
                assert_ne!(t["verdict"], "error");
            }
        }
    }
    for t in report["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["experiment"] == "signal-after-exit-bad")
    {
        assert_eq!(reasons(t), reasons(t).lines().next().unwrap_or_default());
        assert!(
            reasons(t).starts_with("exit: expected exit code 0")
                && reasons(t).contains("exit code 1"),
            "{}",
            reasons(t)
        );
    }

    // 8. The leaked indexer is reported after the main process exits, and killed.
    for t in trials(&report, "leaked-child-bad", "term-ready") {
        let orphans = t["observation"]["orphans"].as_array().unwrap();
        assert_eq!(orphans.len(), 1);
        assert!(
            orphans[0]["cmdline"]
                .as_str()
                .unwrap()
                .contains("leak-indexer")
        );
        assert_eq!(
            (
                orphans[0]["left_group"].as_bool(),
                orphans[0]["killed"].as_bool()
            ),
            (Some(true), Some(true))
        );
    }
    let run_id = report["run"]["id"].as_str().unwrap();
    assert_eq!(
        processes_with(run_id),
        vec![],
        "a process of the Go suite survived"
    );
}
