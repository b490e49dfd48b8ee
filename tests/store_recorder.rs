//! The results store against a real SQLite file: what `atropos run` records comes back whole,
//! experiments are versioned by content, aggregates match the trials, and runs whose
//! atropos died are marked interrupted.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::sync::Arc;

use atropos::record::{RunEvent, RunStatus, Verdict};
use atropos::report::model::FaultKind;
use atropos::store::query::{self, CellState, RunFilter};
use atropos::store::{Recorder, Store, synthetic};

fn events_of(uid: &str, seed: u64, exps: &[atropos::record::ExperimentInfo]) -> Vec<RunEvent> {
    synthetic::run(uid, 1_700_000_000.0 + seed as f64, seed, exps, 4)
}

#[tokio::test]
async fn a_recorded_run_reads_back_record_for_record() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nested/atropos.db");
    let exps = vec![synthetic::experiment(1, 3, 4)];
    let events = events_of("run-a", 7, &exps);
    let mut recorder = Recorder::open(&db).await.unwrap();
    for event in &events {
        recorder.record(event).await.unwrap();
    }
    let store = Store::open(&db, false).await.unwrap();
    let trials: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Trial(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(trials.len(), 17, "a baseline and 4 faults × 4 trials");
    for t in trials {
        let view = query::trial(&store, &t.id).await.unwrap();
        // The store keeps the sums of `landed` (kind_coverage), not each trial's list.
        let mut expected = t.as_ref().clone();
        expected.landed.clear();
        assert_eq!(view.record, expected, "trial {} differs", t.id);
        assert_eq!(view.run, "run-a");
    }
    let page = query::run(&store, "run-a", RunFilter::default())
        .await
        .unwrap();
    assert_eq!(page.run.status, "finished");
    assert_eq!(page.matching, 17);
    assert_eq!(page.run.counts.total(), 17);
    assert_eq!(page.experiments[0].name, exps[0].name);
}

#[tokio::test]
async fn trials_committed_together_keep_their_own_phases_and_expectations() {
    // The rows of a batch are written in pieces (16 + 1 for 17 trials) and the phase and
    // expectation rows name their trial by the id its piece gave it: a second run in the
    // same file starts past the first one's ids.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("atropos.db");
    let exps = vec![synthetic::experiment(2, 3, 4)];
    let mut recorder = Recorder::open(&db).await.unwrap();
    let first = events_of("batch-1", 3, &exps);
    let second = events_of("batch-2", 4, &exps);
    recorder.record_batch(&first).await.unwrap();
    recorder.record_batch(&second).await.unwrap();
    recorder.close().await.unwrap();
    let store = Store::open(&db, false).await.unwrap();
    let mut checked = 0;
    for (run, events) in [("batch-1", &first), ("batch-2", &second)] {
        for t in events.iter().filter_map(|e| match e {
            RunEvent::Trial(t) => Some(t),
            _ => None,
        }) {
            let view = query::trial(&store, &t.id).await.unwrap();
            assert!(!t.observation.phases.is_empty() && !t.expectations.is_empty());
            assert_eq!(
                view.record.observation.phases, t.observation.phases,
                "{}",
                t.id
            );
            assert_eq!(view.record.expectations, t.expectations, "{}", t.id);
            assert_eq!(view.run, run);
            checked += 1;
        }
    }
    assert_eq!(checked, 34, "two runs of 17 trials");
}

#[tokio::test]
async fn coverage_counts_match_the_trials_that_were_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("atropos.db");
    let exps = vec![synthetic::experiment(2, 3, 5)];
    let mut recorder = Recorder::open(&db).await.unwrap();
    // Per (phase, kind): trials that landed there, and of those how many did not pass.
    let mut expected = std::collections::HashMap::<(String, FaultKind), (u64, u64)>::new();
    let mut fault_trials = 0;
    for (i, uid) in ["r1", "r2", "r3"].iter().enumerate() {
        let events = events_of(uid, i as u64 + 1, &exps);
        assert_eq!(
            events.len(),
            2 + 1 + 5 * 4,
            "start, end, baseline, 5 faults × 4"
        );
        for event in &events {
            if let RunEvent::Trial(t) = event
                && t.fault != "baseline"
            {
                fault_trials += 1;
                for l in &t.landed {
                    let e = expected.entry((l.phase.clone(), l.kind)).or_default();
                    e.0 += 1;
                    e.1 += u64::from(t.verdict != Verdict::Pass);
                }
            }
        }
        recorder.record_batch(&events).await.unwrap();
    }
    assert_eq!(fault_trials, 3 * 5 * 4);
    assert!(!expected.is_empty(), "synthetic trials land somewhere");
    let store = Store::open(&db, false).await.unwrap();
    let page = query::experiment(&store, &exps[0].name, None)
        .await
        .unwrap();
    assert_eq!(page.runs.len(), 3);
    let cov = &page.matrix.coverage;
    assert_eq!(cov.rows.first().map(|r| r.phase.as_str()), Some("start"));
    assert_eq!(cov.rows.last().map(|r| r.phase.as_str()), Some("exited"));
    // Five synthetic faults use four kinds: SIGTERM, SIGKILL, SIGINT, other (SIGHUP, SIGQUIT).
    assert_eq!(cov.kinds.len(), 4);
    assert_eq!(cov.required, 3 * 4, "named phases × kinds used");
    assert_eq!(cov.rows.len(), 3 + 2);
    let mut seen = 0;
    for row in &cov.rows {
        assert_eq!(row.cells.len(), cov.kinds.len());
        for cell in &row.cells {
            let key = (row.phase.clone(), cell.kind);
            match expected.get(&key) {
                None => assert_eq!(cell.state, CellState::Uncovered, "{key:?}"),
                Some((n, bad)) => {
                    seen += 1;
                    assert_eq!(cell.counts.total(), *n, "{key:?}");
                    assert_eq!(cell.counts.fail + cell.counts.error, *bad, "{key:?}");
                }
            }
        }
    }
    assert_eq!(seen, expected.len(), "every landed cell is in the matrix");
    assert_eq!(
        cov.covered,
        expected
            .keys()
            .filter(|(p, _)| p != "start" && p != "exited")
            .count()
    );
    let overview = query::overview(&store).await.unwrap();
    assert_eq!(overview.experiments.len(), 1);
    let summary = &overview.experiments[0];
    assert_eq!(summary.covered, cov.covered);
    assert_eq!(summary.coverage_percent, cov.percent());
    assert_eq!(summary.trend.len(), 3);
    assert_eq!(summary.last.as_ref().map(|p| p.run.as_str()), Some("r3"));
}

#[tokio::test]
async fn a_changed_document_is_a_new_version_of_the_same_experiment() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("atropos.db");
    let v1 = synthetic::experiment(3, 2, 2);
    let mut v2 = v1.clone();
    v2.source.push_str("# changed\n");
    v2.content_hash = "changed".repeat(8);
    v2.faults.push("sigusr1-at-ready".into());
    let mut recorder = Recorder::open(&db).await.unwrap();
    recorder
        .record_batch(&events_of("old", 1, std::slice::from_ref(&v1)))
        .await
        .unwrap();
    recorder
        .record_batch(&events_of("same", 2, std::slice::from_ref(&v1)))
        .await
        .unwrap();
    recorder
        .record_batch(&events_of("new", 3, std::slice::from_ref(&v2)))
        .await
        .unwrap();
    let store = Store::open(&db, false).await.unwrap();
    let page = query::experiment(&store, &v1.name, None).await.unwrap();
    assert_eq!(page.versions.len(), 2);
    assert_eq!(page.versions[0].content_hash, v2.content_hash);
    assert_eq!(
        page.matrix.coverage.kinds.len(),
        3,
        "axes come from the latest version"
    );
    let old = page.versions[1].id;
    let only_old = query::experiment(&store, &v1.name, Some(old))
        .await
        .unwrap();
    assert_eq!(only_old.matrix.coverage.kinds.len(), 2);
    assert!(only_old.source.contains("synthetic") && !only_old.source.contains("changed"));
}

#[tokio::test]
async fn each_trial_is_visible_to_readers_as_soon_as_it_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("atropos.db");
    let exps = vec![synthetic::experiment(4, 2, 2)];
    let events = events_of("live", 5, &exps);
    let mut recorder = Recorder::open(&db).await.unwrap();
    let store = Store::open(&db, false).await.unwrap();
    recorder.record(&events[0]).await.unwrap();
    // The start is committed without the run waiting for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let page = loop {
        match query::run(&store, "live", RunFilter::default()).await {
            Ok(page) => break page,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "the start is not committed: {e:#}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    };
    assert_eq!(
        (page.run.status.as_str(), page.matching),
        ("running", 0),
        "the start is committed"
    );
    for (n, event) in events[1..events.len() - 1].iter().enumerate() {
        recorder.record(event).await.unwrap();
        // The writer commits it at once, without the run waiting for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let page = query::run(&store, "live", RunFilter::default())
                .await
                .unwrap();
            assert_eq!(page.run.status, "running");
            if page.matching == n as u64 + 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "trial {n} not committed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    recorder.record(events.last().unwrap()).await.unwrap();
    let page = query::run(&store, "live", RunFilter::default())
        .await
        .unwrap();
    assert_eq!(
        page.run.status, "finished",
        "the end is committed when record returns"
    );
    assert_eq!(page.matching, events.len() as u64 - 2);
}

#[tokio::test]
async fn a_failed_commit_is_reported_by_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("atropos.db");
    let exps = vec![synthetic::experiment(8, 2, 2)];
    let events = events_of("twice", 5, &exps);
    let mut recorder = Recorder::open(&db).await.unwrap();
    recorder.record_batch(&events).await.unwrap();
    // A second start of the same run: refused by the store, reported by the next call.
    recorder.record(&events[0]).await.unwrap();
    let err = recorder.flush().await.unwrap_err();
    assert!(format!("{err:#}").contains("twice"), "{err:#}");
    assert!(
        recorder.record(&events[1]).await.is_err(),
        "and stays failed"
    );
}

#[tokio::test]
async fn a_running_run_whose_atropos_is_gone_is_marked_interrupted_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("atropos.db");
    let exps = vec![synthetic::experiment(5, 2, 2)];
    let events = events_of("dead", 9, &exps);
    let mut recorder = Recorder::open(&db).await.unwrap();
    // The start and three trials, then nothing: as if atropos had been killed.
    recorder.record_batch(&events[..4]).await.unwrap();
    recorder.close().await.unwrap();
    // Our own process is alive: a reopen leaves the run alone.
    let store = Store::open(&db, false).await.unwrap();
    assert_eq!(store.mark_dead_runs_interrupted().await.unwrap(), 0);
    // Hand the run to a process that has exited (one we spawned and reaped).
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    sqlx::query("UPDATE runs SET owner_pid = ? WHERE uid = 'dead'")
        .bind(pid)
        .execute(store.pool())
        .await
        .unwrap();
    drop(store);
    let _recorder = Recorder::open(&db).await.unwrap();
    let store = Store::open(&db, false).await.unwrap();
    let page = query::run(&store, "dead", RunFilter::default())
        .await
        .unwrap();
    assert_eq!(page.run.status, "interrupted");
    assert_eq!(page.matching, 3, "the committed trials are kept");
    assert!(page.run.ended_at.is_some());
    // A run that ended with SIGINT is recorded as interrupted by atropos itself.
    let mut events = events_of("stopped", 10, &exps);
    if let Some(RunEvent::Finished(end)) = events.last_mut() {
        let mut e = end.as_ref().clone();
        e.status = RunStatus::Interrupted;
        *end = Arc::new(e);
    }
    let mut recorder = Recorder::open(&db).await.unwrap();
    recorder.record_batch(&events).await.unwrap();
    let page = query::run(&store, "stopped", RunFilter::default())
        .await
        .unwrap();
    assert_eq!(page.run.status, "interrupted");
}

#[tokio::test]
async fn run_filters_select_by_verdict_fault_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("atropos.db");
    let exps = vec![synthetic::experiment(6, 3, 3)];
    let mut events = synthetic::run("big", 1.0, 11, &exps, 40);
    // Make sure the second fault has failures, whatever the synthetic draw.
    for event in events.iter_mut().skip(50).step_by(7) {
        if let RunEvent::Trial(t) = event {
            let mut failed = t.as_ref().clone();
            failed.verdict = Verdict::Fail;
            *t = Arc::new(failed);
        }
    }
    let mut recorder = Recorder::open(&db).await.unwrap();
    recorder.record_batch(&events).await.unwrap();
    let store = Store::open(&db, false).await.unwrap();
    let all = query::run(&store, "big", RunFilter::default())
        .await
        .unwrap();
    assert_eq!(all.matching, 121);
    assert_eq!((all.pages, all.trials.len()), (3, 50));
    let fault = exps[0].faults[1].clone();
    let filter = RunFilter {
        fault: Some(fault.clone()),
        verdict: Some("fail".into()),
        ..RunFilter::default()
    };
    let failed = query::run(&store, "big", filter).await.unwrap();
    assert!(
        failed.matching > 0,
        "the second phase is flaky in synthetic runs"
    );
    assert!(
        failed
            .trials
            .iter()
            .all(|t| t.record.fault == fault && t.record.verdict == Verdict::Fail)
    );
    let last = RunFilter {
        page: Some(3),
        ..RunFilter::default()
    };
    assert_eq!(
        query::run(&store, "big", last).await.unwrap().trials.len(),
        21
    );
    assert_eq!(all.latency.count, 120);
}

#[tokio::test]
async fn opening_a_missing_store_read_only_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(&dir.path().join("none.db"), false)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("atropos run"), "{err:#}");
}
