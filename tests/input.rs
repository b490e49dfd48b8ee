//! Bad input gets exit 2 with file:line:col, the field and what was expected, and runs
//! nothing; `validate`, `schema` and `--dry-run` show what would happen.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use common::{atropos, processes_with, run_json, tempdir, token};

fn experiment(token: &str, fault: &str) -> String {
    format!(
        r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: input-test }}
spec:
  target:
    run: {{ command: ["sh", "-c", "echo init; sleep 0.05; echo ready; sleep 0.05", "{token}"] }}
  phases:
    - {{ name: init, marker: {{ stdout: "^init$" }} }}
    - {{ name: ready, marker: {{ stdout: "^ready$" }} }}
  faults:
{fault}
  trials: 4
"#
    )
}

#[test]
fn misspelt_key_exits_2_with_file_line_column_and_a_suggestion_and_runs_nothing() {
    let dir = tempdir();
    let tok = token("misspelt");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        experiment(
            &tok,
            "    - { name: f, sigal: SIGTERM, at: { phase: ready } }",
        ),
    )
    .unwrap();
    let out = atropos().args(["run"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{}:11:18: spec.faults[0]: unknown field `sigal`",
        path.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("did you mean `signal`?"), "{stderr}");
    assert!(stderr.contains("nothing was run"), "{stderr}");
    assert!(processes_with(&tok).is_empty());
}

#[test]
fn every_semantic_problem_is_reported_with_its_location() {
    let dir = tempdir();
    let path = dir.path().join("bad.yaml");
    let faults = "    - { name: f, signal: SIGTERM, at: { phase: redy } }\n    - { name: g, signal: SIGNOPE, at: { phase: ready } }";
    std::fs::write(&path, experiment(&token("semantic"), faults)).unwrap();
    let out = atropos().arg("validate").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The YAML shape error comes first and stops parsing of that document.
    assert!(
        stderr.contains(":12:26: spec.faults[1].signal")
            && stderr.contains("SIGNOPE")
            && stderr.contains("expected a name like SIGTERM"),
        "{stderr}"
    );

    std::fs::write(&path, experiment(&token("semantic"), "    - { name: f, signal: SIGTERM, at: { phase: redy } }\n    - { name: g, signal: TERM, at: { phase: init, offset: random(5ms..1ms) } }")).unwrap();
    let out = atropos().arg("validate").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the end of the window must be after its start"),
        "{stderr}"
    );

    std::fs::write(&path, experiment(&token("semantic"), "    - { name: f, signal: SIGTERM, at: { phase: redy } }\n    - { name: f, steps: [ { signal: TERM, after: 5ms } ] }")).unwrap();
    let out = atropos().arg("validate").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let expected = format!(
        "{}:11:48: spec.faults[0].at.phase: unknown phase `redy` (did you mean `ready`?); expected one of: init, ready",
        path.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("fault `f` is defined twice"), "{stderr}");
    assert!(
        stderr.contains("the first step has nothing to come after"),
        "{stderr}"
    );
    assert!(stderr.contains("3 problems found"), "{stderr}");
}

#[test]
fn missing_path_and_bad_flags_exit_2() {
    let out = atropos().args(["run", "no/such/dir"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/dir: no such file or folder"));
    let out = atropos()
        .args(["run", "experiments/examples", "--filter", "("])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--filter: not a valid regex"));
    let out = atropos()
        .args(["run", "experiments/examples", "--jobs", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = atropos()
        .args([
            "run",
            "experiments/examples",
            "--filter",
            "^nothing-matches$",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn validate_accepts_the_examples_and_schema_describes_the_format() {
    let out = atropos()
        .args(["validate", "experiments"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = atropos().arg("schema").output().unwrap();
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["title"], "Experiment");
    let text = schema.to_string();
    assert!(
        text.contains("SIGSTOP, then SIGCONT after this long"),
        "field docs become descriptions"
    );
    assert!(
        text.contains("\"additionalProperties\":false"),
        "unknown keys are rejected"
    );
}

#[test]
fn dry_run_shows_the_plan_and_spawns_nothing() {
    let dir = tempdir();
    let tok = token("dry");
    let path = dir.path().join("x.yaml");
    std::fs::write(&path, experiment(&tok, "    - { name: kill-init, signal: SIGKILL, to: group, at: { phase: init, offset: random } }")).unwrap();
    let out = atropos()
        .args(["run", "--dry-run", "--seed", "5"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("kill-init × 4: SIGKILL → process group at init + random"),
        "{stdout}"
    );
    assert!(stdout.contains("random offset fractions:"), "{stdout}");
    assert!(processes_with(&tok).is_empty());
}

#[test]
fn the_same_seed_gives_the_same_offsets_twice() {
    let dir = tempdir();
    let tok = token("seed");
    let path = dir.path().join("x.yaml");
    let faults = "    - { name: window, signal: SIGKILL, at: { phase: init, offset: \"random(1ms..40ms)\" } }\n    - { name: phase, signal: SIGKILL, at: { phase: init, offset: random } }";
    std::fs::write(&path, experiment(&tok, faults)).unwrap();
    let offsets = |seed: &str| {
        let (out, report) = run_json(&["--seed", seed, path.to_str().unwrap()], dir.path());
        assert!(out.status.code().is_some());
        let mut window = Vec::new();
        let mut fractions = Vec::new();
        // The report lists trials as they end, which two lanes make vary: compare by index.
        let mut trials: Vec<&serde_json::Value> =
            report["trials"].as_array().unwrap().iter().collect();
        trials.sort_by_key(|t| t["index"].as_u64());
        for t in trials {
            assert_eq!(t["experiment"], "input-test");
            match t["fault"].as_str().unwrap() {
                "window" => window.push(t["offset_ns"].as_u64().unwrap()),
                "phase" => fractions.push(t["offset_fraction"].as_f64().unwrap()),
                _ => {}
            }
        }
        assert_eq!(
            report["run"]["experiments"][0]["seed"],
            seed.parse::<u64>().unwrap()
        );
        (window, fractions)
    };
    let (w1, f1) = offsets("42");
    let (w2, f2) = offsets("42");
    let (w3, _) = offsets("43");
    assert_eq!(w1.len(), 4);
    assert!(
        w1.iter().all(|o| (1_000_000..40_000_000).contains(o)),
        "{w1:?}"
    );
    assert_eq!(w1, w2, "window offsets replay exactly");
    assert_eq!(f1, f2, "phase fractions replay exactly");
    assert_ne!(w1, w3, "another seed gives other offsets");
    assert!(processes_with(&tok).is_empty());
}

#[test]
fn filter_and_trials_narrow_the_plan() {
    let out = atropos()
        .args([
            "run",
            "--dry-run",
            "--trials",
            "2",
            "--filter",
            "^well-behaved/sig(term|int)-ready$",
            "experiments/examples",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("· 5 trials (nothing is spawned)"),
        "a baseline and 2 × 2 trials: {stdout}"
    );
    assert!(
        stdout.contains("sigterm-ready × 2: SIGTERM → main process at ready + 10ms"),
        "{stdout}"
    );
    assert!(stdout.contains("sigint-ready × 2"), "{stdout}");
    assert!(
        !stdout.contains("kill-mid-init") && !stdout.contains("hangs-on-sigint"),
        "{stdout}"
    );
}

#[test]
fn a_terminal_gets_a_progress_bar_and_a_pipe_gets_plain_lines() {
    let exe = env!("CARGO_BIN_EXE_atropos");
    let args = "run --no-db --filter '^hangs-on-sigint/sigterm' experiments/examples";
    // `script` runs atropos on a pseudo-terminal, as a person at a shell would.
    let tty = std::process::Command::new("script")
        .args(["-qec", &format!("{exe} {args}"), "/dev/null"])
        .current_dir(common::root())
        .output()
        .expect("script(1) from util-linux is on every Debian machine");
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(
        shown.contains("/3 trials") && shown.contains('\u{1b}'),
        "no progress bar on a terminal:\n{shown}"
    );
    let piped = atropos()
        .args([
            "run",
            "--no-db",
            "--filter",
            "^hangs-on-sigint/sigterm",
            "experiments/examples",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        stderr.contains("… 3/3 trials done") && !stderr.contains('\u{1b}'),
        "plain lines without a terminal:\n{stderr}"
    );
}

#[test]
fn a_file_without_an_experiment_is_said_so_by_validate_and_run_alike() {
    let dir = tempdir();
    for (name, text) in [("empty.yaml", ""), ("comments.yaml", "# later\n---\n")] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        for args in [
            &["validate"][..],
            &["run", "--no-db"],
            &["run", "--dry-run"],
        ] {
            let out = atropos().args(args).arg(&path).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} {name}: {stderr}");
            let expected = format!("{}: no experiment in this file", path.display());
            assert!(stderr.contains(&expected), "{args:?} {name}: {stderr}");
            assert!(!stderr.contains("--filter"), "{args:?} {name}: {stderr}");
        }
    }
}

/// An experiment whose target is `command` (a YAML list body) run in `cwd`.
fn startable_experiment(command: &str, cwd: &str) -> String {
    format!(
        r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: cannot-start }}
spec:
  target:
    run:
      cwd: {cwd}
      command: [{command}]
  phases:
    - {{ name: ready, marker: {{ stdout: "^ready$" }} }}
  faults:
    - {{ name: term, signal: SIGTERM, at: {{ phase: ready }} }}
  trials: 3
"#
    )
}

#[test]
fn a_target_that_cannot_start_is_refused_before_any_trial_with_the_place_of_command() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let tok = token("cannot-start");
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    let script = dir.path().join("bin/app");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho ready; exec sleep 30 # {tok}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cases = [
        (
            "missing-executable",
            startable_experiment(&format!(r#""./bin/nope", "{tok}""#), "."),
            ":8:7: spec.target.run.command[0]: `./bin/nope`",
            "does not exist",
            "help: build it first",
        ),
        (
            "not-executable",
            startable_experiment(&format!(r#""./bin/app", "{tok}""#), "."),
            ":8:7: spec.target.run.command[0]: `./bin/app`",
            "is not executable",
            "help: make it executable (chmod +x)",
        ),
        (
            "not-on-path",
            startable_experiment(&format!(r#""atropos-no-such-program", "{tok}""#), "."),
            ":8:7: spec.target.run.command[0]: `atropos-no-such-program` is not found on the PATH",
            "",
            "help: install it or build it first",
        ),
        (
            "missing-cwd",
            startable_experiment(
                &format!(r#""sh", "-c", "echo ready; exec sleep 30", "{tok}""#),
                "no/such/dir",
            ),
            ":7:7: spec.target.run.cwd: the working directory `no/such/dir`",
            "does not exist",
            "help: check `cwd`",
        ),
    ];
    for (name, text, place, why, help) in cases {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        for args in [&["run", "--no-db"][..], &["run", "--dry-run"]] {
            let out = atropos().args(args).arg(&path).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {stderr}");
            assert!(
                stderr.contains(&format!("{}{place}", path.display())),
                "{name} {args:?}: {stderr}"
            );
            assert!(
                stderr.contains(why) && stderr.contains(help),
                "{name} {args:?}: {stderr}"
            );
            assert!(
                stderr.contains("1 command cannot start; nothing was run"),
                "{stderr}"
            );
            assert!(
                out.stdout.is_empty(),
                "{name} {args:?}: no plan, no trial: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert_eq!(processes_with(&tok), vec![], "{name} {args:?}");
        }
        // `validate` checks the file only: a program may be built after it is written.
        let out = atropos().arg("validate").arg(&path).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Once it can start, it runs.
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("not-executable.yaml");
    let out = atropos()
        .args(["run", "--dry-run"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn counts_in_validate_and_run_messages_are_singular_for_one() {
    let dir = tempdir();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        experiment(
            &token("singular"),
            "    - { name: f, signal: SIGTERM, at: { phase: ready } }",
        ),
    )
    .unwrap();
    let out = atropos().arg("validate").arg(&good).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok: 1 experiment in 1 file"), "{stdout}");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        experiment(
            &token("singular"),
            "    - { name: f, signal: SIGTERM, at: { phase: redy } }",
        ),
    )
    .unwrap();
    for cmd in ["validate", "run"] {
        let out = atropos().arg(cmd).arg(&bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("error: 1 problem found; nothing was run"),
            "{cmd}: {stderr}"
        );
    }
}
