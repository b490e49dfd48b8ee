//! [`Recorder`]: the writer `atropos run` hands its events to.

use std::path::Path;

use anyhow::Context;
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

use super::owner::{Owner, mark_dead_runs_interrupted};
use super::write::{RunIds, finish_run, insert_run, insert_trial};
use crate::record::{RunEvent, unix_now};

/// Writes the events of runs to a store file, one transaction per event.
///
/// ```no_run
/// # async fn demo(events: Vec<atropos::record::RunEvent>) -> anyhow::Result<()> {
/// let mut recorder = atropos::store::Recorder::open("atropos.db".as_ref()).await?;
/// for event in &events {
///     recorder.record(event).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Recorder {
    conn: SqliteConnection,
    owner: Owner,
    run: Option<RunIds>,
}

impl Recorder {
    /// Opens (or creates) the store at `path`, applies the migrations, and marks runs whose
    /// atropos died as interrupted.
    pub async fn open(path: &Path) -> anyhow::Result<Recorder> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create the folder {}", dir.display()))?;
        }
        let mut conn = SqliteConnection::connect_with(&super::connect_options(path, true))
            .await
            .with_context(|| format!("failed to open the results store {}", path.display()))?;
        super::open::migrate(&mut conn, path).await?;
        mark_dead_runs_interrupted(&mut conn).await?;
        Ok(Recorder {
            conn,
            owner: Owner::current(),
            run: None,
        })
    }

    /// Writes one event and commits it: a run's start, one trial, or the run's end.
    pub async fn record(&mut self, event: &RunEvent) -> anyhow::Result<()> {
        if let RunEvent::Trial(trial) = event {
            // One statement, so its own transaction: no BEGIN and COMMIT round trips.
            let run = self
                .run
                .as_ref()
                .context("a trial was recorded before its run started")?;
            return insert_trial(&mut self.conn, run, trial, unix_now()).await;
        }
        self.record_batch(std::slice::from_ref(event)).await
    }

    /// Writes several events in one transaction (imports and benchmarks: `atropos run`
    /// records each event on its own so that a killed run keeps its trials).
    pub async fn record_batch(&mut self, events: &[RunEvent]) -> anyhow::Result<()> {
        let now = unix_now();
        // The run's ids change only once the transaction is committed.
        let mut run = self.run.clone();
        let mut tx = self.conn.begin().await?;
        for event in events {
            match event {
                RunEvent::Started(info) => {
                    run = Some(insert_run(&mut tx, info, &self.owner).await?);
                }
                RunEvent::Trial(trial) => {
                    let ids = run
                        .as_ref()
                        .context("a trial was recorded before its run started")?;
                    insert_trial(&mut tx, ids, trial, now).await?;
                }
                RunEvent::Finished(end) => {
                    let ids = run
                        .take()
                        .context("a run's end was recorded before its start")?;
                    finish_run(&mut tx, ids.run, end).await?;
                }
            }
        }
        tx.commit()
            .await
            .context("failed to commit to the results store")?;
        self.run = run;
        Ok(())
    }

    /// Closes the connection, checkpointing the write-ahead log.
    pub async fn close(self) -> anyhow::Result<()> {
        self.conn.close().await?;
        Ok(())
    }
}
