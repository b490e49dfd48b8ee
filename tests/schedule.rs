//! `atropos serve --experiments`: the controller fires an experiment on its schedule, each
//! run an `atropos run` it starts, recorded with the trigger `schedule`; two controllers on
//! one store fire each tick once; a stopped controller leaves no run going.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Owned, atropos, processes_with, served_address, tempdir, token};

/// An experiment every two seconds: a target that prints `ready` and sleeps, SIGTERM at
/// `ready`. `tok` is in the target's argv, so what it leaves can be looked for.
fn experiment(tok: &str, name: &str) -> String {
    format!(
        r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: {name} }}
spec:
  target:
    run: {{ command: [sh, -c, "echo ready; sleep 5", {tok}] }}
  phases:
    - {{ name: ready, marker: {{ stdout: "^ready$" }} }}
  faults:
    - {{ name: term-ready, signal: SIGTERM, at: {{ phase: ready }} }}
  expect:
    exit: {{ signals: [SIGTERM], within: 2s }}
  trials: 1
  schedule: "*/2 * * * * *"
  timezone: Europe/Paris
"#
    )
}

fn serve(db: &std::path::Path, experiments: &std::path::Path) -> (Owned, String) {
    let mut child = atropos()
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .arg("--experiments")
        .arg(experiments)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let address = served_address(&mut child);
    (Owned(child), address)
}

/// A recorded decision: tick, decided at, outcome, its run's status and trigger.
type Decision = (f64, f64, String, Option<String>, Option<String>);

/// Every decision in the store, oldest first.
fn decisions(db: &std::path::Path) -> Vec<Decision> {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(
            "SELECT t.tick_at, t.decided_at, t.outcome, r.status, r.trigger
             FROM schedule_ticks t LEFT JOIN runs r ON r.uid = t.run_uid ORDER BY t.tick_at",
        )
        .output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            let text = |i: usize| (!f[i].is_empty()).then(|| f[i].to_owned());
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].to_owned(),
                text(3),
                text(4),
            )
        })
        .collect()
}

/// Whether the sqlite3 shell is there to read the store (in CI it must be: `.ci/run`
/// installs it).
fn have_sqlite3() -> bool {
    if Command::new("sqlite3").arg("-version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "sqlite3 is missing; .ci/run installs it"
    );
    eprintln!("skipped: no sqlite3 to read the store with");
    false
}

fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn serve_fires_an_experiment_on_its_schedule_and_records_the_trigger() {
    if !have_sqlite3() {
        return;
    }
    let dir = tempdir();
    let tok = token("schedule");
    let exp = dir.path().join("game-day.yaml");
    std::fs::write(&exp, experiment(&tok, "game-day")).unwrap();
    let db = dir.path().join("atropos.db");
    let (controller, address) = serve(&db, &exp);
    // Two ticks fired and their runs finished, within a few ticks.
    let fired = wait_for(
        Duration::from_secs(20),
        "two finished scheduled runs",
        || {
            let done: Vec<_> = decisions(&db)
                .into_iter()
                .filter(|d| d.2 == "fired" && d.3.as_deref() == Some("finished"))
                .collect();
            (done.len() >= 2).then_some(done)
        },
    );
    for (tick, decided, _, _, trigger) in &fired {
        assert_eq!(trigger.as_deref(), Some("schedule"));
        // On a tick of the cron line, and decided at it (not a second later).
        assert!((tick % 2.0).abs() < 1e-6, "tick {tick} is on the 2 s grid");
        assert!(decided - tick < 1.0, "tick {tick} decided at {decided}");
    }
    assert!(
        fired.windows(2).all(|w| w[1].0 > w[0].0),
        "each tick decided once: {fired:?}"
    );
    // The controller's metrics count them, without pids or trial ids as labels.
    let metrics = get(&address, "/metrics");
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{prefix}` in:\n{metrics}"))
    };
    assert!(value("atropos_runs_total{experiment=\"game-day\",state=\"passed\"}") >= 2.0);
    assert!(value("atropos_trials_total{experiment=\"game-day\",verdict=\"pass\"}") >= 4.0);
    assert!(value("atropos_injection_latency_seconds_count") >= 2.0);
    let next = value("atropos_schedule_next_run_timestamp_seconds{experiment=\"game-day\"}");
    assert!(
        next > fired.last().unwrap().0,
        "next fire {next} after the last tick"
    );
    assert!(
        !metrics.contains("pid=") && !metrics.contains("trial="),
        "{metrics}"
    );
    // The schedules page: the line, its time zone, the coming fire times in it, the last
    // decision and the state of its run.
    let page = get(&address, "/schedules");
    for wanted in [
        "game-day",
        "*/2 * * * * *",
        "Europe/Paris",
        "forbid",
        " CET<br>",
        "fired",
    ] {
        assert!(
            page.contains(wanted),
            "no `{wanted}` on the schedules page:\n{page}"
        );
    }
    // A completed run's state is its verdict; who asked is kept.
    let runs = get(&address, "/api/runs");
    let body = &runs[runs.find('{').unwrap()..=runs.rfind('}').unwrap()];
    let list: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {runs}"));
    assert!(
        list["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["state"] == "passed"
                && r["trigger"] == "schedule"
                && r["requested_by"] == "schedule"),
        "{list:#}"
    );
    drop(controller);
    // The controller's SIGTERM interrupts its runs: nothing of them is left.
    let deadline = Instant::now() + Duration::from_secs(12);
    while !processes_with(&tok).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        processes_with(&tok),
        Vec::new(),
        "a target outlived its controller"
    );
}

#[test]
fn two_controllers_on_one_store_fire_each_tick_once() {
    if !have_sqlite3() {
        return;
    }
    let dir = tempdir();
    let tok = token("schedule-twice");
    let exp = dir.path().join("twice.yaml");
    std::fs::write(&exp, experiment(&tok, "twice")).unwrap();
    let db = dir.path().join("atropos.db");
    let (a, _) = serve(&db, &exp);
    let (b, _) = serve(&db, &exp);
    let _seen = wait_for(Duration::from_secs(20), "three decided ticks", || {
        let all = decisions(&db);
        (all.len() >= 3).then_some(all)
    });
    drop((a, b));
    // Every run either controller queued belongs to exactly one fired tick.
    let all = decisions(&db);
    let fired = all.iter().filter(|d| d.2 == "fired").count();
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT count(*) FROM runs WHERE trigger = 'schedule'")
        .output()
        .unwrap();
    let runs: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(fired >= 3, "{all:?}");
    assert_eq!(
        runs, fired,
        "one run per fired tick, whichever controller fired it: {all:?}"
    );
}

#[test]
fn bad_schedules_exit_2_with_file_line_and_field() {
    let dir = tempdir();
    let path = dir.path().join("bad.yaml");
    let base = experiment("atropos-e2e-unused", "bad");
    let cases = [
        (
            base.replace("*/2 * * * * *", "0 25 * * *"),
            "bad.yaml:14:3: spec.schedule:",
        ),
        (
            base.replace("Europe/Paris", "Europe/Pariss"),
            "bad.yaml:15:3: spec.timezone: `Europe/Pariss` is not an IANA time zone name",
        ),
        (
            format!(
                "{base}  blackouts: [ {{ from: \"2026-03-29 02:30\", to: \"2026-03-30 00:00\" }} ]\n"
            ),
            "spec.blackouts[0].from: `2026-03-29 02:30` does not exist once in Europe/Paris",
        ),
        (
            format!("{base}  windows: [ {{ cron: \"0 14 * * FRI\" }} ]\n"),
            "spec.windows[0].cron: expected either `cron` and `for`",
        ),
        (
            format!("{base}  concurrency: sometimes\n"),
            "spec.concurrency: unknown variant `sometimes`",
        ),
    ];
    for (yaml, wanted) in cases {
        std::fs::write(&path, &yaml).unwrap();
        let out = atropos().arg("validate").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(wanted), "wanted `{wanted}` in:\n{stderr}");
    }
}

/// A controller with a token, holding an experiment with no schedule that runs for as long
/// as it is let (its target sleeps 30 s after `ready`; the fault is aimed at a phase that
/// never comes).
fn controller_with_token(dir: &std::path::Path, tok: &str) -> (Owned, String, std::path::PathBuf) {
    let exp = dir.join("on-demand.yaml");
    std::fs::write(
        &exp,
        format!(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: on-demand }}
spec:
  target:
    run: {{ command: [sh, -c, "echo ready; sleep 30", {tok}] }}
  phases:
    - {{ name: ready, marker: {{ stdout: "^ready$" }} }}
    - {{ name: never, marker: {{ stdout: "^never$" }} }}
  faults:
    - {{ name: term-never, signal: SIGTERM, at: {{ phase: never }} }}
  timeout: 60s
  trials: 1
"#
        ),
    )
    .unwrap();
    let token = dir.join("controller.token");
    std::fs::write(&token, format!("{tok}-secret-token\n")).unwrap();
    let db = dir.join("atropos.db");
    let mut child = atropos()
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .arg("--experiments")
        .arg(&exp)
        .arg("--token-file")
        .arg(&token)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let address = served_address(&mut child);
    (Owned(child), address, token)
}

fn sql(db: &std::path::Path, query: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(query).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn trigger_and_abort_need_the_token_and_an_aborted_run_leaves_nothing() {
    if !have_sqlite3() {
        return;
    }
    let dir = tempdir();
    let tok = token("trigger");
    let (controller, address, token) = controller_with_token(dir.path(), &tok);
    let db = dir.path().join("atropos.db");
    let url = format!("http://{address}");
    // Without the token, or with a wrong one: refused, and nothing starts.
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "a-wrong-token-of-some-length").unwrap();
    for (file, said) in [(None, "no token"), (Some(&wrong), "401")] {
        let mut cmd = atropos();
        cmd.args(["trigger", "on-demand", "--controller", &url])
            .env_remove("ATROPOS_TOKEN");
        if let Some(file) = file {
            cmd.arg("--token-file").arg(file);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(said), "{stderr}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sql(&db, "SELECT count(*) FROM runs"), "0");
    assert!(processes_with(&tok).is_empty());
    // With it: the run starts, recorded as asked by the API and by whom.
    let out = atropos()
        .args([
            "trigger",
            "on-demand",
            "--controller",
            &url,
            "--by",
            "alice",
        ])
        .arg("--token-file")
        .arg(&token)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = stdout
        .trim()
        .strip_prefix("triggered run ")
        .unwrap()
        .to_owned();
    wait_for(
        Duration::from_secs(15),
        "the triggered run's target",
        || (!processes_with(&tok).is_empty()).then_some(()),
    );
    assert_eq!(
        sql(
            &db,
            &format!("SELECT trigger, requested_by FROM runs WHERE uid = '{run}'")
        ),
        "api|alice"
    );
    // An unknown experiment is a 404, said plainly.
    let out = atropos()
        .args(["trigger", "no-such", "--controller", &url])
        .arg("--token-file")
        .arg(&token)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no experiment `no-such`"));
    // The abort: the run ends as aborted with the reason, and its target is gone.
    let out = atropos()
        .args(["abort", &run, "--controller", &url, "--by", "bob"])
        .arg("--token-file")
        .arg(&token)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sql(
            &db,
            &format!("SELECT status, abort_reason FROM runs WHERE uid = '{run}'")
        ),
        "aborted|aborted by bob through the API"
    );
    assert_eq!(
        processes_with(&tok),
        Vec::new(),
        "the aborted run left its target"
    );
    // The run page says who asked, and why it was aborted.
    let page = get(&address, &format!("/runs/{run}"));
    assert!(page.contains("aborted by bob through the API"), "{page}");
    assert!(page.contains("api by alice"), "{page}");
    drop(controller);
}

/// The body of `GET path` from the dashboard at `address`.
fn get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn serve_refuses_a_non_loopback_address_without_a_token() {
    let dir = tempdir();
    let exp = dir.path().join("x.yaml");
    std::fs::write(&exp, experiment("atropos-e2e-unused", "x")).unwrap();
    let out = atropos()
        .args(["serve", "--listen", "0.0.0.0:0", "--db"])
        .arg(dir.path().join("atropos.db"))
        .arg("--experiments")
        .arg(&exp)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("without --token-file"), "{stderr}");
}

#[test]
fn a_killed_controller_takes_its_runs_with_it_and_a_restarted_one_keeps_the_schedule() {
    if !have_sqlite3() {
        return;
    }
    let dir = tempdir();
    let tok = token("schedule-killed");
    // Every 2 s, a run whose trial waits for a phase that never comes: it is still going
    // when the controller is killed.
    let exp = dir.path().join("long.yaml");
    std::fs::write(
        &exp,
        experiment(&tok, "long")
            .replace("echo ready; sleep 5", "echo ready; sleep 30")
            .replace("at: { phase: ready }", "at: { phase: never }")
            .replace(
                "    - { name: ready, marker: { stdout: \"^ready$\" } }",
                "    - { name: ready, marker: { stdout: \"^ready$\" } }\n    - { name: never, marker: { stdout: \"^never$\" } }",
            )
            .replace("  trials: 1", "  trials: 1\n  timeout: 60s"),
    )
    .unwrap();
    let db = dir.path().join("atropos.db");
    let (mut first, _) = serve(&db, &exp);
    wait_for(Duration::from_secs(15), "a scheduled run's target", || {
        (!processes_with(&tok).is_empty()).then_some(())
    });
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let killed_at = decisions(&db).last().unwrap().0;
    // Its run is interrupted as on Ctrl-C: nothing left, and recorded so.
    wait_for(Duration::from_secs(10), "the orphaned run to end", || {
        processes_with(&tok).is_empty().then_some(())
    });
    let states = wait_for(
        Duration::from_secs(10),
        "the run recorded interrupted",
        || {
            let states = sql(&db, "SELECT group_concat(status) FROM runs");
            states
                .split(',')
                .all(|s| s == "interrupted")
                .then_some(states)
        },
    );
    assert!(!states.is_empty());
    // A new controller on the same store fires the next ticks, never an old one again.
    let (second, _) = serve(&db, &exp);
    let later = wait_for(Duration::from_secs(15), "a tick after the restart", || {
        let all = decisions(&db);
        all.iter()
            .any(|d| d.0 > killed_at && d.2 == "fired")
            .then_some(all)
    });
    let mut ticks: Vec<i64> = later.iter().map(|d| (d.0 * 1e3) as i64).collect();
    let n = ticks.len();
    ticks.dedup();
    assert_eq!(ticks.len(), n, "a tick decided twice: {later:?}");
    drop(second);
    wait_for(
        Duration::from_secs(12),
        "the second controller's runs to end",
        || processes_with(&tok).is_empty().then_some(()),
    );
}
