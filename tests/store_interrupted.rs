//! A run killed with SIGKILL keeps every trial it had committed, and the next atropos that
//! opens the store marks it interrupted.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atropos::store::Store;
use atropos::store::query::{self, RunFilter};

const ATROPOS: &str = env!("CARGO_BIN_EXE_atropos");
const LONG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/store/long.yaml"
);

async fn committed(store: &Store) -> Option<(String, String, u64)> {
    let runs = query::runs(store, None, 1).await.unwrap();
    let run = runs.runs.first()?;
    Some((run.uid.clone(), run.status.clone(), run.counts.total()))
}

#[tokio::test]
async fn a_run_killed_with_sigkill_keeps_its_trials_and_is_marked_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("atropos.db");
    let mut run = Command::new(ATROPOS)
        .current_dir(dir.path())
        .args(["run", LONG, "-j", "2", "--db"])
        .arg(&db)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Wait for a few committed trials, reading the file as the dashboard would.
    let started = Instant::now();
    let store = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no trial was committed in time"
        );
        if db.exists()
            && let Ok(store) = Store::open(&db, false).await
            && let Some((_, _, n)) = committed(&store).await
            && n >= 6
        {
            break store;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // SIGKILL: only the atropos we spawned. It cannot clean up or say goodbye.
    run.kill().unwrap();
    let status = run.wait().unwrap();
    assert!(!status.success());
    let (uid, status, kept) = committed(&store).await.unwrap();
    assert!(kept >= 6);
    assert!(kept < 801, "the run was killed before its end");
    drop(store);
    // Its row still says running: nobody has looked yet.
    assert_eq!(status, "running", "{uid}");

    // The next atropos to open the file (here `atropos history`) marks it interrupted.
    let out = Command::new(ATROPOS)
        .args(["history", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&uid) && text.contains("interrupted"),
        "{text}"
    );

    let store = Store::open(&db, false).await.unwrap();
    let page = query::run(&store, &uid, RunFilter::default())
        .await
        .unwrap();
    assert_eq!(page.run.status, "interrupted");
    assert_eq!(page.matching, kept, "every committed trial is kept");
    assert!(page.run.ended_at.is_some());
    assert!(
        !page.trials.is_empty(),
        "the loop below has trials to check"
    );
    for t in &page.trials {
        assert!(
            !t.record.expectations.is_empty(),
            "{} is whole",
            t.record.id
        );
        assert_eq!(t.record.experiment, "store-long");
    }
}
