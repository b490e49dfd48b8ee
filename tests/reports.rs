//! What a run keeps while it goes, and what its reports say: no trial record outlives its
//! hand-over (memory bounded whatever the number of trials), the JSON report's clocks, and
//! the same coverage figures in the terminal, JSON and JUnit.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::sync::{Arc, Weak};

use atropos::record::{RunEvent, TrialRecord};
use atropos::{plan, runner, spec};

/// An experiment of `sh -c 'exit 0'` trials hit after exit, its processes marked by `token`.
fn trivial(dir: &std::path::Path, token: &str, trials: u32) -> std::path::PathBuf {
    let path = dir.join("trivial.yaml");
    std::fs::write(
        &path,
        format!(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: trivial }}
spec:
  target:
    run: {{ command: ["sh", "-c", "exit 0", "{token}-${{trial.id}}"] }}
  faults:
    - {{ name: term-after-exit, signal: SIGTERM, at: {{ exited: reaped }} }}
  expect:
    exit: {{ codes: [0] }}
  trials: {trials}
"#
        ),
    )
    .unwrap();
    path
}

/// Before, the runner filed every record on its board until the run ended (and returned
/// them all), so memory grew with the number of trials. Now a record lives only as long as
/// its listeners hold it: once the first hundred have been handed on and dropped, none of
/// them is alive while the run goes on.
#[test]
fn the_runner_keeps_no_trial_record_once_it_has_handed_it_on() {
    const TRIALS: usize = 400;
    let dir = common::tempdir();
    let token = common::token("keeps-no-record");
    let path = trivial(dir.path(), &token, TRIALS as u32);
    let loaded = spec::load_all(&[path]).unwrap();
    let run = plan::plan(loaded, "rkeeps", 1, &plan::PlanOptions::default());
    assert_eq!(run.trial_count(), TRIALS + 1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (seen, alive_early) = runtime.block_on(async {
        atropos_injector::init().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(runner::EVENTS_CAPACITY);
        let listener = tokio::spawn(async move {
            let mut seen: Vec<Weak<TrialRecord>> = Vec::new();
            let mut alive_early = None;
            while let Some(event) = rx.recv().await {
                if let RunEvent::Trial(record) = event {
                    seen.push(Arc::downgrade(&record));
                    drop(record);
                    // Well after the first hundred were handed on, while the run goes on.
                    if seen.len() == 300 {
                        alive_early =
                            Some(seen[..100].iter().filter(|w| w.strong_count() > 0).count());
                    }
                }
            }
            (seen, alive_early)
        });
        let counts = runner::execute(
            run,
            &runner::RunOptions {
                jobs: 2,
                keep_dirs: false,
                fleet: None,
            },
            tx,
            Default::default(),
        )
        .await;
        assert_eq!(counts.total(), (TRIALS + 1) as u64);
        listener.await.unwrap()
    });
    assert_eq!(seen.len(), TRIALS + 1, "every trial was announced");
    assert_eq!(
        alive_early,
        Some(0),
        "records of finished trials are not kept"
    );
    assert!(seen.iter().all(|w| w.strong_count() == 0));
    assert!(common::processes_with(&token).is_empty());
}

/// A listener that falls behind (here: one that reads nothing for two seconds) makes the run
/// wait rather than pile its records up: the trials begun before it reads are at most what
/// the events channel holds (16 here), twice the runner's outbox (the batch being sent and
/// the next), and the lanes' trials in flight. The engine runs thousands of these trials a
/// second: without the bound, several thousand would have begun.
#[test]
fn a_listener_that_falls_behind_holds_the_run_back_instead_of_its_records_piling_up() {
    const TRIALS: usize = 3000;
    const JOBS: usize = 2;
    let dir = common::tempdir();
    let token = common::token("back-pressure");
    let path = trivial(dir.path(), &token, TRIALS as u32);
    let loaded = spec::load_all(&[path]).unwrap();
    let run = plan::plan(loaded, "rpressure", 1, &plan::PlanOptions::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    const CAPACITY: usize = 16;
    let (begun_before, seen) = runtime.block_on(async {
        atropos_injector::init().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(CAPACITY);
        let listener = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            let woke = atropos_injector::clock::now_ns();
            let (mut begun_before, mut seen) = (0, 0);
            while let Some(event) = rx.recv().await {
                if let RunEvent::Trial(record) = event {
                    seen += 1;
                    if record.observation.started_ns < woke {
                        begun_before += 1;
                    }
                }
            }
            (begun_before, seen)
        });
        runner::execute(
            run,
            &runner::RunOptions {
                jobs: JOBS,
                keep_dirs: false,
                fleet: None,
            },
            tx,
            Default::default(),
        )
        .await;
        listener.await.unwrap()
    });
    assert_eq!(seen, TRIALS + 1, "every trial was announced in the end");
    let bound = CAPACITY + 2 * runner::OUTBOX_LIMIT + JOBS;
    assert!(
        begun_before <= bound,
        "{begun_before} trials began while nobody read (at most {bound} may)"
    );
    assert!(common::processes_with(&token).is_empty());
}

/// The JSON report is one document however it was written, every `*_ns` of a trial counts
/// from that trial's start, and its figures are those of the terminal and JUnit.
#[test]
fn the_json_report_counts_every_ns_from_the_trial_start_and_shows_the_summary_figures() {
    let dir = common::tempdir();
    let junit = dir.path().join("report.xml");
    let (out, json) = common::run_json(
        &[
            "experiments/examples/well-behaved.yaml",
            "--trials",
            "2",
            "--junit",
            junit.to_str().unwrap(),
        ],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let trials = json["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 1 + 6 * 2, "the baseline and 6 faults × 2");
    for t in trials {
        let obs = &t["observation"];
        assert!(obs.get("started_ns").is_none(), "no absolute `*_ns`: {obs}");
        let start = obs["started_monotonic_ns"].as_u64().unwrap();
        let ended = obs["ended_ns"].as_u64().unwrap();
        assert!(start > 0);
        assert!(ended <= t["duration_ns"].as_u64().unwrap(), "{t}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| atropos::report::is_partial(&e.file_name().to_string_lossy()))
        .collect();
    assert!(
        leftovers.is_empty(),
        "the partial file was renamed into place"
    );

    let experiments = json["experiments"].as_array().unwrap();
    assert_eq!(experiments.len(), 1);
    let e = &experiments[0];
    let (covered, required) = (
        e["coverage"]["covered"].as_u64().unwrap(),
        e["coverage"]["required"].as_u64().unwrap(),
    );
    assert_eq!(
        required,
        3 * 4,
        "3 phases × SIGKILL, SIGTERM, SIGINT, pause"
    );
    let percent = e["coverage_percent"].as_u64().unwrap();
    assert_eq!(percent, covered * 100 / required);
    let line = format!("coverage {percent}% ({covered} of {required} cells)");
    assert!(stdout.contains(&line), "{line} in:\n{stdout}");
    let gaps = e["coverage"]["gaps"].as_array().unwrap();
    assert_eq!(gaps.len() as u64, required - covered);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(&format!(r#"name="coverage_percent" value="{percent}""#)),
        "{xml}"
    );
    assert_eq!(xml.matches(r#"name="coverage_gap""#).count(), gaps.len());
    let p50 = e["latency"]["p50_ns"].as_u64().unwrap();
    let shown = atropos::report::model::human_ns(p50);
    assert!(
        stdout.contains(&format!("p50 {shown} ")),
        "{shown} in:\n{stdout}"
    );
    assert!(xml.contains(&format!(r#"name="latency_p50" value="{shown}""#)));
}
