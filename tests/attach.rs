//! `target: attach:`: what a selector picks among processes this test started (each with a
//! unique token in its argv, the only thing selectors here match), how it refuses, what
//! atropos does to them and never does, and the checks of the experiment file. Every process
//! atropos hits here is one this test started; the rest end when the test closes their
//! stdin.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::process::{Child, Command, Stdio};

use common::{
    OwnCgroup, atropos, attach_dry_run as dry_run, attach_experiment as experiment, tempdir, token,
};

/// A process of ours that waits for end of file on its stdin; `Drop` closes it and reaps.
struct Waiting(Child);

impl Waiting {
    fn start(token: &str) -> Waiting {
        Waiting::script("read _", token)
    }

    /// `sh -c SCRIPT TOKEN` (the token is `$0`), its stdin a pipe of this test's.
    fn script(script: &str, token: &str) -> Waiting {
        let child = Command::new("sh")
            .args(["-c", script, token])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        Waiting(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn alive(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}", self.pid())).exists()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

#[test]
fn the_dry_run_lists_the_process_a_selector_picks_with_its_identity() {
    let dir = tempdir();
    let tok = token("attach-one");
    let target = Waiting::start(&tok);
    let _other = Waiting::start(&token("attach-other"));
    // The fixture may not have exec'd `sh` yet: its command line is then atropos's test.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let out = dry_run(
        dir.path(),
        &experiment(&format!("{{ cmdline: \"{tok}$\" }}"), ""),
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("target: attach: 1 of 1 matching (max_targets 1)"),
        "{stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.contains(&format!("pid {} ·", target.pid())))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("start time "), "{line}");
    assert!(line.contains(&format!("uid {}", nix_uid())), "{line}");
    assert!(line.ends_with(&format!("sh -c read _ {tok}")), "{line}");
    assert!(
        stdout.contains("term-up × 1: SIGTERM → each chosen process at up + 0s"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("baseline:"),
        "no baseline is spawned for attached processes"
    );
    assert!(target.alive(), "a dry run touches nothing");
}

fn nix_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn more_matches_than_max_targets_is_an_error_that_lists_them_never_a_guess() {
    let dir = tempdir();
    let tok = token("attach-many");
    let a = Waiting::start(&tok);
    let b = Waiting::start(&tok);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let out = dry_run(
        dir.path(),
        &experiment(&format!("{{ cmdline: \"{tok}$\" }}"), ""),
        &[],
    );
    let lists_both = |out: &std::process::Output| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("2 processes match, but at most 1 may"),
            "{stderr}"
        );
        for p in [&a, &b] {
            assert!(
                stderr.contains(&format!("{} (sh -c read _ {tok})", p.pid())),
                "{stderr}"
            );
        }
        assert!(stderr.contains("help: narrow the selector"), "{stderr}");
    };
    lists_both(&out);
    // The run itself refuses the same way, before anything is signalled.
    let out = atropos()
        .args(["run", "--no-db"])
        .arg(dir.path().join("attach.yaml"))
        .output()
        .unwrap();
    lists_both(&out);
    for p in [&a, &b] {
        assert_eq!(state(p.pid()), 'S', "not signalled");
    }
    // Allowed, and asked for both.
    let out = dry_run(
        dir.path(),
        &experiment(
            &format!("{{ cmdline: \"{tok}$\", count: all, max_targets: 2 }}"),
            "",
        ),
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("2 of 2 matching"), "{stdout}");
    assert!(
        stdout
            .contains("blast radius: 2 target(s) × 1 signal(s) each (a pause is two) = at most 2 signals; max_signals 2\n"),
        "{stdout}"
    );
    for p in [&a, &b] {
        assert!(stdout.contains(&format!("pid {} ·", p.pid())), "{stdout}");
    }
    let out = dry_run(
        dir.path(),
        &experiment(
            &format!("{{ cmdline: \"{tok}$\", count: all, max_targets: 2, max_signals: 1 }}"),
            "",
        ),
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("max_signals 1 (the run stops once it has sent 1)"),
        "{stdout}"
    );
}

#[test]
fn a_protected_pid_is_refused_and_listed_with_why() {
    let dir = tempdir();
    let tok = token("attach-protect");
    let target = Waiting::start(&tok);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let pid = target.pid().to_string();
    let out = dry_run(
        dir.path(),
        &experiment(&format!("{{ cmdline: \"{tok}$\" }}"), ""),
        &["--protect", &pid],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "no process matches that may be aimed at; refused: {pid} (protected)"
        )),
        "{stderr}"
    );
    // The same from the experiment's own list.
    let out = dry_run(
        dir.path(),
        &experiment(&format!("{{ cmdline: \"{tok}$\", protect: [{pid}] }}"), ""),
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
}

/// `atropos run --json` of `yaml` (written to `dir`): the exit code, the report, stderr.
fn run_json(dir: &std::path::Path, yaml: &str) -> (Option<i32>, serde_json::Value, String) {
    let path = dir.join("attach.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (out, report) = common::run_json(&[path.to_str().unwrap()], dir);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), report, stderr)
}

/// The state letter of `pid` in `/proc/PID/stat` (`S`, `T`, ...).
fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.chars().next().unwrap()
}

#[test]
fn a_fault_hits_the_attached_process_by_pidfd_and_its_exit_status_stays_unknown() {
    let dir = tempdir();
    let tok = token("attach-run");
    let mut target = Waiting::start(&tok);
    let bystander = Waiting::start(&token("attach-bystander"));
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (code, report, stderr) = run_json(
        dir.path(),
        &experiment(&format!("{{ cmdline: \"{tok}$\" }}"), ""),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let trial = &report["trials"][0];
    assert_eq!(trial["verdict"], "pass", "{trial:#}");
    let obs = &trial["observation"];
    assert_eq!(obs["pid"], target.pid(), "{obs:#}");
    let delivery = &obs["deliveries"][0];
    assert_eq!(delivery["outcome"], "delivered", "{obs:#}");
    assert_eq!(delivery["pids"][0], target.pid());
    assert_eq!(obs["stop"], "exited", "{obs:#}");
    assert_eq!(obs["exit"]["code"], serde_json::Value::Null);
    assert_eq!(obs["exit"]["signal"], serde_json::Value::Null);
    // Its parent (this test) learns what atropos could not: SIGTERM ended it.
    let status = target.0.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(15));
    assert!(bystander.alive(), "only the selected process was hit");
    assert!(
        !report["trials"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["fault"] == "baseline"),
        "no baseline for a running service"
    );
}

#[test]
fn a_run_stops_at_its_blast_radius_before_the_signal_that_would_pass_it() {
    let dir = tempdir();
    let tok = token("attach-radius");
    let mut first = Waiting::start(&tok);
    std::thread::sleep(std::time::Duration::from_millis(100));
    // Three trials may send one signal in all: the first hits, the second is refused.
    let yaml = experiment(
        &format!("{{ cmdline: \"{tok}$\", max_signals: 1, cooldown: 10ms }}"),
        "  trials: 3\n  timeout: 5s\n",
    );
    let second = std::thread::spawn({
        let tok = tok.clone();
        move || {
            // The replacement a supervisor would start, once the first is gone (reaped by
            // this test, its parent): never two at once, which the selector would refuse.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while matches!(first.0.try_wait(), Ok(None)) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the first was never hit"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Waiting::start(&tok)
        }
    });
    let (code, report, stderr) = run_json(dir.path(), &yaml);
    let second = second.join().unwrap();
    let trials = report["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2, "{report:#}");
    assert_eq!(
        trials[0]["observation"]["deliveries"][0]["outcome"],
        "delivered"
    );
    let why = trials[1]["observation"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains(
            "blast radius: 1 signal(s) sent, and this trial could send 1 more, past max_signals 1"
        ),
        "{why}"
    );
    assert_ne!(code, Some(0), "{stderr}");
    assert!(second.alive(), "the replacement was never signalled");
}

#[test]
fn bad_attach_targets_exit_2_with_file_line_and_field() {
    let dir = tempdir();
    let cases: [(&str, &str, &str); 12] = [
        (
            "{ name: x, max_signals: 0 }",
            "",
            "spec.target.attach.max_signals: 0; expected at least 1",
        ),
        ("{}", "", "spec.target.attach: no criterion"),
        (
            "{ pid: 1 }",
            "",
            "spec.target.attach.pid: pid 1; expected a process id above 1",
        ),
        (
            "{ name: x, count: some }",
            "",
            "spec.target.attach.count: `some` is not a count",
        ),
        (
            "{ name: x, user: no-such-user-atropos }",
            "",
            "spec.target.attach.user: no user `no-such-user-atropos`",
        ),
        ("{ cmdline: \"(\" }", "", "spec.target.attach.cmdline"),
        (
            "{ name: x, parent: { name: y, count: all } }",
            "",
            "spec.target.attach.parent: count, max_targets, max_signals, protect and allow_users belong to the outer",
        ),
        (
            "{ name: x }",
            "  expect: { exit: { codes: [0] } }\n",
            "spec.expect.exit.codes: an attached process is not atropos's child",
        ),
        (
            "{ name: x }",
            "  expect: { stdout: { contains: [done] } }\n",
            "spec.expect.stdout: an attached process's stdout is not atropos's to read",
        ),
        (
            "{ name: x }",
            "    - { name: grp, signal: SIGTERM, to: group, at: { phase: up } }\n",
            "spec.faults[1].to: the process group of a process atropos did not start",
        ),
        (
            "{ name: x }",
            "    - { name: rnd, signal: SIGTERM, at: { phase: up, offset: random } }\n",
            "spec.faults[1].at.offset: `random` spreads over a phase's length",
        ),
        (
            "{ name: x }",
            "    - { name: zmb, signal: SIGTERM, at: { exited: zombie } }\n",
            "spec.faults[1].at.exited: an attached process is reaped by its own parent",
        ),
    ];
    for (attach, rest, wanted) in cases {
        let yaml = experiment(attach, rest);
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, &yaml).unwrap();
        let out = atropos().args(["validate"]).arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{attach}: {stderr}");
        let prefix = format!("{}:", path.display());
        let line = stderr
            .lines()
            .find(|l| l.contains(wanted))
            .unwrap_or_else(|| panic!("{attach}: wanted `{wanted}` in {stderr}"));
        let at = line.strip_prefix("error: ").unwrap_or(line);
        assert!(
            at.starts_with(&prefix),
            "{attach}: no file:line:col in {line}"
        );
        let mut spot = at[prefix.len()..].split(':');
        let line_no: usize = spot.next().unwrap().parse().unwrap();
        let _col: usize = spot.next().unwrap().parse().unwrap();
        assert!(
            line_no >= 6,
            "{attach}: the line of the field, not of the file's start: {line}"
        );
    }
    // Both kinds of target, and a stdout marker on an attached process.
    let both = experiment("{ name: x }", "").replace(
        "    attach:",
        "    run: { command: [\"true\"] }\n    attach:",
    );
    let stdout_marker =
        experiment("{ name: x }", "").replace("{ delay: 10ms }", "{ stdout: \"^up$\" }");
    let journald = |unit: &str, regex: &str| {
        experiment("{ name: x }", "").replace(
            "{ delay: 10ms }",
            &format!("{{ journald: {{ unit: \"{unit}\", regex: \"{regex}\" }} }}"),
        )
    };
    for (yaml, wanted) in [
        (both, "both `run` and `attach`"),
        (
            stdout_marker,
            "an attached process's stdout is not atropos's to read",
        ),
        (
            journald("/etc/redis", "ready"),
            "spec.phases[0].marker.journald.unit: `/etc/redis` is not a systemd unit name",
        ),
        (
            journald("redis.service", "("),
            "spec.phases[0].marker.journald.regex",
        ),
        (
            experiment("{ name: x }", "").replace(
                "{ delay: 10ms }",
                "{ journald: { unit: redis.service, regex: x, since: 1 } }",
            ),
            "unknown field `since`",
        ),
    ] {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, &yaml).unwrap();
        let out = atropos().args(["validate"]).arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(wanted), "{stderr}");
    }
}

#[test]
fn a_paused_attached_process_is_resumed_by_the_next_atropos_after_a_sigkill() {
    let dir = tempdir();
    let state_dir = dir.path().join("state");
    let tok = token("attach-pause");
    let target = Waiting::start(&tok);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let path = dir.path().join("pause.yaml");
    std::fs::write(
        &path,
        experiment(
            &format!("{{ cmdline: \"{tok}$\" }}"),
            "    - { name: pause-up, pause: 30s, at: { phase: up } }\n",
        ),
    )
    .unwrap();
    let mut first = atropos()
        .args(["run", "--no-db", "--filter", "attach-test/pause-up"])
        .arg(&path)
        .env("ATROPOS_STATE_DIR", &state_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while state(target.pid()) != 'T' {
        assert!(std::time::Instant::now() < deadline, "never paused");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Our own child: killed without a chance to resume what it paused.
    first.kill().unwrap();
    first.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        state(target.pid()),
        'T',
        "still stopped once atropos is gone"
    );
    // The next atropos, whatever it runs, resumes what the dead one left paused.
    let trivial = dir.path().join("trivial.yaml");
    std::fs::write(
        &trivial,
        "apiVersion: atropos/v1\nkind: Experiment\nmetadata: { name: trivial }\nspec:\n  \
         target: { run: { command: [sh, -c, \"sleep 0.1\"] } }\n  phases:\n    - { name: up, marker: { delay: 1ms } }\n  \
         faults:\n    - { name: after, signal: SIGTERM, at: { exited: reaped } }\n  trials: 1\n",
    )
    .unwrap();
    let out = atropos()
        .args(["run", "--no-db"])
        .arg(&trivial)
        .env("ATROPOS_STATE_DIR", &state_dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(target.pid()), 'S', "resumed");
    assert_eq!(
        std::fs::read_dir(state_dir.join("paused")).unwrap().count(),
        0,
        "the journal is empty again"
    );
}

/// The pid of a process whose command line ends with `tail`, among `pids`.
fn find_by_cmdline(pids: &[i64], tail: &str) -> Option<i64> {
    pids.iter().copied().find(|p| {
        std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
            String::from_utf8_lossy(&c)
                .trim_end_matches('\0')
                .ends_with(tail)
        })
    })
}

#[test]
fn an_attached_targets_orphans_are_reported_and_killed_only_under_orphans_kill() {
    for (policy, verdict) in [("none", "fail"), ("kill", "pass")] {
        let dir = tempdir();
        let tok = token(&format!("attach-orphans-{policy}"));
        let child_tok = format!("{tok}-child");
        // A service with a helper of its own that outlives it.
        let mut outer = Waiting::script(
            "sh -c 'while :; do sleep 1; done' \"$0-child\" & read _",
            &tok,
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (code, report, stderr) = run_json(
            dir.path(),
            &experiment(
                &format!("{{ cmdline: \"{tok}$\" }}"),
                &format!("  expect: {{ orphans: {policy} }}\n"),
            ),
        );
        let trial = &report["trials"][0];
        assert_eq!(trial["verdict"], verdict, "{stderr}\n{trial:#}");
        assert_eq!(code, Some(if verdict == "pass" { 0 } else { 1 }));
        let orphans = trial["observation"]["orphans"].as_array().unwrap();
        let pids: Vec<i64> = orphans.iter().map(|o| o["pid"].as_i64().unwrap()).collect();
        let helper = orphans
            .iter()
            .find(|o| o["cmdline"].as_str().unwrap().ends_with(&child_tok))
            .unwrap_or_else(|| panic!("{orphans:#?}"));
        outer.0.wait().unwrap();
        if policy == "kill" {
            assert_eq!(helper["killed"], true, "{helper:#}");
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert_eq!(find_by_cmdline(&pids, &child_tok), None, "killed");
        } else {
            assert_eq!(
                (&helper["killed"], &helper["kept"]),
                (&false.into(), &true.into())
            );
            let why = trial["reasons"][0].as_str().unwrap();
            assert!(why.contains("left running (not atropos's to kill"), "{why}");
            // Ours (this test's own process tree): ended here, by its token-checked pid.
            let pid = find_by_cmdline(&pids, &child_tok).expect("left running");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        }
    }
}

#[test]
fn a_service_selected_by_its_cgroup_owns_what_left_its_process_tree() {
    // By its cgroup's path, and by a unit name (a cgroup named as systemd names a service's).
    for by_unit in [false, true] {
        cgroup_owns_what_left_the_tree(by_unit);
    }
}

fn cgroup_owns_what_left_the_tree(by_unit: bool) {
    use std::io::Write;
    let dir = tempdir();
    let tok = token(if by_unit {
        "attach-unit"
    } else {
        "attach-cgroup"
    });
    let unit = format!("{tok}.service");
    let cgroup = OwnCgroup::new(if by_unit { &unit } else { &tok });
    let escaped_tok = format!("{tok}-escaped");
    // Moved into the cgroup first; then, on a line on its stdin, it starts a helper that
    // leaves its process tree (a double fork: the helper's parent exits at once).
    let mut service = Waiting::script(
        "read _; (setsid sh -c 'while :; do sleep 1; done' \"$0-escaped\" &); read _",
        &tok,
    );
    cgroup.adopt(service.pid());
    writeln!(service.0.stdin.as_mut().unwrap(), "go").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let members = cgroup.members();
    let helper = find_by_cmdline(&members, &escaped_tok).expect("the helper is in the cgroup");
    let helper_parent = std::fs::read_to_string(format!("/proc/{helper}/stat")).unwrap();
    assert!(
        !helper_parent.contains(&format!(") S {} ", service.pid())),
        "the helper is not the service's child"
    );
    let (code, report, stderr) = run_json(
        dir.path(),
        &experiment(
            &if by_unit {
                format!("{{ systemd_unit: \"{unit}\", cmdline: \"{tok}$\" }}")
            } else {
                format!("{{ cgroup: \"{}\", cmdline: \"{tok}$\" }}", cgroup.path)
            },
            "  expect: { orphans: kill }\n",
        ),
    );
    assert_eq!(code, Some(0), "{stderr}\n{report:#}");
    let orphans = report["trials"][0]["observation"]["orphans"]
        .as_array()
        .unwrap();
    let found = orphans
        .iter()
        .find(|o| o["pid"] == helper)
        .unwrap_or_else(|| panic!("the escaped helper is an orphan: {orphans:#?}"));
    assert_eq!(found["killed"], true);
    service.0.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !cgroup.members().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            cgroup.members()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_process_that_matched_at_selection_is_no_replacement_and_an_exit_step_never_stops_one() {
    let dir = tempdir();
    let tok = token("attach-survivor");
    let (mut a, mut b) = (Waiting::start(&tok), Waiting::start(&tok));
    std::thread::sleep(std::time::Duration::from_millis(100));
    // One of two is hit; nothing starts a new one: the survivor is not a replacement.
    let (code, report, stderr) = run_json(
        dir.path(),
        &experiment(
            &format!("{{ cmdline: \"{tok}$\", count: one, max_targets: 2 }}"),
            "  expect: { recover: { reaches: up, within: 500ms } }\n",
        ),
    );
    let trial = &report["trials"][0];
    assert_eq!(code, Some(1), "{stderr}\n{trial:#}");
    let why = trial["reasons"][0].as_str().unwrap();
    assert!(
        why.contains("no process matching the selector replaced it within 500ms"),
        "{why}"
    );
    let hit = trial["observation"]["pid"].as_u64().unwrap();
    let survivor = if u64::from(a.pid()) == hit {
        &mut b
    } else {
        &mut a
    };
    assert!(survivor.alive());
    // A step due after the exit of a process that does not exit: skipped after the grace
    // period, and the process is never stopped for it.
    let survivor_tok = tok.clone();
    let (code, report, stderr) = run_json(
        dir.path(),
        &experiment(
            &format!("{{ cmdline: \"{survivor_tok}$\" }}"),
            "    - { name: after-exit, signal: SIGTERM, at: { exited: reaped } }\n  \
             expect: { exit: { within: 300ms } }\n",
        )
        .replace(
            "    - { name: term-up, signal: SIGTERM, at: { phase: up } }\n",
            "",
        ),
    );
    let trial = &report["trials"][0];
    assert_eq!(trial["fault"], "after-exit", "{trial:#}");
    assert_ne!(code, Some(0), "{stderr}");
    assert_eq!(
        trial["observation"]["stop_signal"],
        serde_json::Value::Null,
        "{trial:#}"
    );
    assert!(
        trial["observation"]["deliveries"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let skipped = trial["observation"]["skipped"][0]["reason"]
        .as_str()
        .unwrap();
    assert!(
        skipped.contains(
            "did not exit within 300ms (atropos does not stop a process it did not start)"
        ),
        "{skipped}"
    );
    assert!(survivor.alive(), "never signalled");
}

#[test]
fn trials_against_running_processes_never_overlap_even_across_experiments_and_lanes() {
    let dir = tempdir();
    let (ta, tb) = (token("attach-serial-a"), token("attach-serial-b"));
    let (a, b) = (Waiting::start(&ta), Waiting::start(&tb));
    std::thread::sleep(std::time::Duration::from_millis(100));
    // A pause is undone by its SIGCONT: each process is hit twice and left as it was.
    let one = |name: &str, tok: &str| {
        experiment(&format!("{{ cmdline: \"{tok}$\", cooldown: 50ms }}"), "")
            .replace("name: attach-test", &format!("name: {name}"))
            .replace(
                "{ name: term-up, signal: SIGTERM, at: { phase: up } }",
                "{ name: pause-up, pause: 100ms, at: { phase: up } }",
            )
            + "  trials: 2\n"
    };
    let yaml = format!("{}---\n{}", one("serial-a", &ta), one("serial-b", &tb));
    let path = dir.path().join("attach.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (out, report) = common::run_json(&[path.to_str().unwrap(), "--jobs", "2"], dir.path());
    let trials = report["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 4, "{}", String::from_utf8_lossy(&out.stderr));
    let mut spans: Vec<(u64, u64, String)> = trials
        .iter()
        .map(|t| {
            let obs = &t["observation"];
            let start = obs["started_monotonic_ns"].as_u64().unwrap();
            let end = start + obs["ended_ns"].as_u64().unwrap();
            (start, end, t["experiment"].as_str().unwrap().to_owned())
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two attach trials overlapped: {spans:?}"
        );
        if pair[0].2 == pair[1].2 {
            assert!(
                pair[1].0 - pair[0].1 >= 50_000_000,
                "cooldown kept: {spans:?}"
            );
        }
    }
    for t in trials {
        assert_eq!(t["verdict"], "pass", "{t:#}");
    }
    assert!(a.alive() && b.alive(), "paused and resumed, not ended");
    assert_eq!((state(a.pid()), state(b.pid())), ('S', 'S'));
}

#[test]
fn a_peer_in_the_services_cgroup_is_not_an_orphan_of_the_one_hit() {
    let dir = tempdir();
    let tok = token("attach-peer");
    let cgroup = OwnCgroup::new(&tok);
    let (a, b) = (Waiting::start(&tok), Waiting::start(&tok));
    cgroup.adopt(a.pid());
    cgroup.adopt(b.pid());
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (code, report, stderr) = run_json(
        dir.path(),
        &experiment(
            &format!(
                "{{ cgroup: \"{}\", cmdline: \"{tok}$\", count: one, max_targets: 2 }}",
                cgroup.path
            ),
            "  expect: { orphans: kill }\n",
        ),
    );
    let trial = &report["trials"][0];
    assert_eq!(code, Some(0), "{stderr}\n{trial:#}");
    let hit = trial["observation"]["pid"].as_u64().unwrap();
    let peer = if u64::from(a.pid()) == hit { &b } else { &a };
    assert!(peer.alive(), "the peer was killed");
    assert_eq!(state(peer.pid()), 'S');
    assert!(
        trial["observation"]["orphans"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{trial:#}"
    );
}

#[test]
fn a_journald_marker_sees_a_units_entries_and_times_its_recovery() {
    use std::os::unix::process::CommandExt;
    let dir = tempdir();
    let Some(journal) = atropos_injector::journald::testing::TestJournal::start(dir.path()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-journal-remote is missing; .ci/run installs it"
        );
        eprintln!("skipped: systemd-journal-remote is not installed");
        return;
    };
    let tok = token("journald");
    let unit = format!("{tok}.service");
    // The service's argv tells it apart: a number no other `sleep` has.
    let tag = common::numeric_tag();
    // A supervisor of this test's own; each process of the service logs `ready` to the
    // unit's journal (as the process the sleep then becomes), then sleeps.
    let script = format!(
        "while :; do sh -c 'printf \"__REALTIME_TIMESTAMP=%s\\n_BOOT_ID={boot}\\n_SYSTEMD_UNIT={unit}\\n_PID=%s\\nMESSAGE=ready\\n\\n\" \"$(date +%s%6N)\" $$ > {fifo}; exec sleep 3000.{tag}'; sleep 0.2; done",
        boot = journal.boot,
        fifo = journal.fifo.display(),
    );
    let _supervisor = common::Group(
        Command::new("sh")
            .args(["-c", &script])
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let yaml = format!(
        r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: journald }}
spec:
  target:
    attach: {{ cmdline: "^sleep 3000\\.{tag}$", cooldown: 10ms }}
  phases:
    - {{ name: ready, marker: {{ journald: {{ unit: "{unit}", regex: "^ready$", directory: {dir:?} }} }} }}
  faults:
    - {{ name: term-ready, signal: SIGTERM, at: {{ phase: ready }} }}
  expect:
    exit: {{ within: 2s }}
    recover: {{ reaches: ready, within: 5s }}
  trials: 2
"#,
        dir = journal.dir.display().to_string(),
    );
    // The service must be up (its entry written) before the run selects it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (code, report, stderr) = run_json(dir.path(), &yaml);
    assert_eq!(code, Some(0), "{stderr}");
    let trials = common::trials_n(&report, "journald", "term-ready", 2);
    for t in &trials {
        assert_eq!(t["verdict"], "pass", "{}", common::reasons(t));
        let evidence = t["observation"]["phases"][0]["evidence"].as_str().unwrap();
        assert_eq!(
            evidence,
            format!("already reached at selection: in the journal of {unit}: ready"),
        );
        let recovery = &t["recovery"];
        let replaced = recovery["attached"]["replaced_ns"].as_u64().unwrap();
        let reached = recovery["reached_ns"].as_u64().unwrap();
        // The supervisor waits 200 ms; the replacement's entry is seen after it appeared.
        assert!(
            replaced >= 150_000_000 && reached >= replaced,
            "{recovery:#}"
        );
        let seen = recovery["observation"]["phases"][0]["evidence"]
            .as_str()
            .unwrap();
        assert_eq!(seen, format!("journal of {unit}: ready"), "{recovery:#}");
    }
    assert_eq!(
        trials[1]["observation"]["pid"],
        trials[0]["recovery"]["attached"]["pid"]
    );
}
