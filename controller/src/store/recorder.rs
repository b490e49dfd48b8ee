//! [`Recorder`]: the writer `atropos run` hands its events to.
//!
//! The recorder queues each event for a writer that owns the connection. The writer commits
//! whatever is queued: what arrives more than [`COALESCE`] after the last commit is
//! committed at once; what arrives sooner waits for the next commit, [`COALESCE`] after the
//! previous one, together with everything that arrived meanwhile (group commit). So the run
//! never waits for the disk, a killed run loses at most what arrived in its last 100 ms, and
//! when trials are cheap the cost of a commit (and of the round trips to the connection's
//! thread) is shared. A run's end is committed before [`Recorder::record`] returns; its
//! start is committed first, ahead of its trials, without the run waiting for it (an error
//! is reported by the next call).
//!
//! The writer runs on a thread of its own (with its own small runtime) at a lower priority
//! ([`atropos_injector::background_thread`]; the connection's thread, started from it,
//! inherits it): on a busy machine the CPU the store takes came straight out of the lanes'
//! targets and the injector's wake-ups. The queue is bounded: a writer that falls behind
//! slows the run down rather than letting its memory grow with the trial count.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow};
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::{Notify, mpsc, oneshot};

use super::owner::{Owner, mark_dead_runs_interrupted};
use super::write::{RunIds, finish_run, insert_run, insert_trials};
use crate::record::{RunEvent, TrialRecord, unix_now};

/// The writer's page cache (`PRAGMA cache_size`: negative is KiB).
const WRITER_CACHE: &str = "-2000";

/// Most events committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Most events queued for the writer: [`Recorder::record`] waits when it is full.
const QUEUE: usize = 4 * MAX_BATCH;

/// The shortest time between two commits of trials: trials that arrive within it of the
/// last commit wait for the next one, with those that arrive meanwhile. At 20 ms the store
/// added 7.8 % [+5.6, +10.2] to the wall time of 501 trivial trials, at 100 ms 4.6 %
/// [+2.6, +6.6] (120 rounds each); a dashboard a tenth of a second behind is no loss.
pub const COALESCE: std::time::Duration = std::time::Duration::from_millis(100);

/// Writes the events of runs to a store file.
///
/// ```no_run
/// # async fn demo(events: Vec<atropos::record::RunEvent>) -> anyhow::Result<()> {
/// let mut recorder = atropos::store::Recorder::open("atropos.db".as_ref()).await?;
/// for event in &events {
///     recorder.record(event).await?;
/// }
/// recorder.close().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Recorder {
    queue: mpsc::Sender<Message>,
    /// Wakes the writer when a [`Message::Flush`] is queued (trials alone do not).
    flush_wanted: Arc<Notify>,
    /// Answered when the writer's thread has closed the file (dropped if it panicked).
    closed: oneshot::Receiver<()>,
    /// The first error of the writer, reported by the next call.
    failed: Arc<Mutex<Option<String>>>,
}

#[derive(Debug)]
enum Message {
    Event(RunEvent),
    /// Answered once every event queued before it is committed (or failed).
    Flush(oneshot::Sender<Result<(), String>>),
}

/// The writer task's side: the connection and the ids of the run being written.
struct Writer {
    conn: SqliteConnection,
    owner: Owner,
    run: Option<RunIds>,
}

/// The trials among `events`.
fn trials(events: &[RunEvent]) -> Vec<&TrialRecord> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Trial(t) => Some(&**t),
            _ => None,
        })
        .collect()
}

impl Writer {
    /// Opens (or creates) the store at `path`, applies the migrations, and marks runs whose
    /// atropos died as interrupted.
    async fn open(path: &Path) -> anyhow::Result<Writer> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create the folder {}", dir.display()))?;
        }
        // The writer appends: the pages it touches are the right edges of the tables and
        // indexes and the small aggregate tables, so a small page cache serves it as well as
        // the readers' 16 MB, and a run's memory does not grow with the file.
        let options = super::connect_options(path, true).pragma("cache_size", WRITER_CACHE);
        let mut conn = SqliteConnection::connect_with(&options)
            .await
            .with_context(|| format!("failed to open the results store {}", path.display()))?;
        super::open::migrate(&mut conn, path).await?;
        mark_dead_runs_interrupted(&mut conn).await?;
        Ok(Writer {
            conn,
            owner: Owner::current(),
            run: None,
        })
    }

    /// Commits `events` in one transaction.
    async fn write(&mut self, events: &[RunEvent]) -> anyhow::Result<()> {
        let now = unix_now();
        // The run's ids change only once the transaction is committed.
        let mut run = self.run.clone();
        let mut tx = self.conn.begin().await?;
        let is_trial = |e: &RunEvent| matches!(e, RunEvent::Trial(_));
        for segment in events.chunk_by(|a, b| is_trial(a) && is_trial(b)) {
            match segment {
                [RunEvent::Started(info)] => {
                    run = Some(insert_run(&mut tx, info, &self.owner).await?);
                }
                [RunEvent::Finished(end)] => {
                    let ids = run
                        .take()
                        .context("a run's end was recorded before its start")?;
                    finish_run(&mut tx, ids.run, end).await?;
                }
                _ => {
                    let ids = run
                        .as_ref()
                        .context("a trial was recorded before its run started")?;
                    insert_trials(&mut tx, ids, &trials(segment), now).await?;
                }
            }
        }
        tx.commit()
            .await
            .context("failed to commit to the results store")?;
        self.run = run;
        Ok(())
    }

    /// Commits what is queued, as it comes, until the recorder is dropped or closed.
    async fn run(
        mut self,
        mut queue: mpsc::Receiver<Message>,
        flush_wanted: Arc<Notify>,
        failed: Arc<Mutex<Option<String>>>,
    ) {
        let mut events = Vec::new();
        let mut acks = Vec::new();
        let mut last_commit = tokio::time::Instant::now() - COALESCE;
        while let Some(first) = queue.recv().await {
            let mut next = Some(first);
            loop {
                while let Some(message) = next.take() {
                    match message {
                        Message::Event(e) => events.push(e),
                        Message::Flush(ack) => acks.push(ack),
                    }
                    if events.len() < MAX_BATCH {
                        next = queue.try_recv().ok();
                    }
                }
                // Right after a commit, let trials that end meanwhile join the next one
                // (unless someone waits for it).
                let due = last_commit + COALESCE;
                if !acks.is_empty()
                    || events.len() >= MAX_BATCH
                    || tokio::time::Instant::now() >= due
                {
                    break;
                }
                // A flush (the run's end) cuts the wait short.
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = flush_wanted.notified() => {}
                }
                next = queue.try_recv().ok();
                if next.is_none() {
                    break;
                }
            }
            tracing::trace!(events = events.len(), "committing");
            let result = if events.is_empty() {
                Ok(())
            } else {
                self.write(&events).await.map_err(|e| format!("{e:#}"))
            };
            events.clear();
            last_commit = tokio::time::Instant::now();
            if let Err(e) = &result {
                tracing::warn!(error = e.as_str(), "failed to record in the results store");
                let mut failed = failed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                failed.get_or_insert_with(|| e.clone());
            }
            for ack in acks.drain(..) {
                let _ = ack.send(result.clone());
            }
        }
        if let Err(e) = self.conn.close().await {
            tracing::warn!(error = %e, "failed to close the results store");
        }
    }
}

impl Recorder {
    /// Opens (or creates) the store at `path`, applies the migrations, and marks runs whose
    /// atropos died as interrupted. The writer gets a thread of its own, which opens the file.
    pub async fn open(path: &Path) -> anyhow::Result<Recorder> {
        let path = path.to_owned();
        let (queue, rx) = mpsc::channel(QUEUE);
        let failed = Arc::new(Mutex::new(None));
        let flush_wanted = Arc::new(Notify::new());
        let (opened_tx, opened) = oneshot::channel();
        let (closed_tx, closed) = oneshot::channel();
        let (wanted, fails) = (flush_wanted.clone(), failed.clone());
        std::thread::Builder::new()
            .name("atropos-store".to_owned())
            .spawn(move || {
                atropos_injector::background_thread();
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let e = anyhow!(e).context("failed to start the results store's writer");
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Writer::open(&path).await {
                        Ok(writer) => {
                            let _ = opened_tx.send(Ok(()));
                            writer.run(rx, wanted, fails).await;
                        }
                        Err(e) => {
                            let _ = opened_tx.send(Err(e));
                        }
                    }
                });
                let _ = closed_tx.send(());
            })
            .context("failed to start the results store's writer")?;
        opened
            .await
            .map_err(|_| anyhow!("the results store's writer stopped while opening the file"))??;
        Ok(Recorder {
            queue,
            flush_wanted,
            closed,
            failed,
        })
    }

    fn check(&self) -> anyhow::Result<()> {
        let failed = self
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match failed.as_ref() {
            Some(e) => Err(anyhow!("{e}")),
            None => Ok(()),
        }
    }

    async fn send(&self, message: Message) -> anyhow::Result<()> {
        self.queue
            .send(message)
            .await
            .map_err(|_| anyhow!("the results store's writer has stopped"))
    }

    /// Records one event. A run's end is committed before this returns; its start and its
    /// trials are committed by the writer as soon as it can, in order, the caller waiting
    /// only while the writer's queue is full. An error of an earlier commit is returned by
    /// the next call.
    pub async fn record(&mut self, event: &RunEvent) -> anyhow::Result<()> {
        self.check()?;
        self.send(Message::Event(event.clone())).await?;
        match event {
            RunEvent::Started(_) | RunEvent::Trial(_) => Ok(()),
            RunEvent::Finished(_) => self.flush().await,
        }
    }

    /// Records several events and waits until they are committed (imports, benchmarks).
    pub async fn record_batch(&mut self, events: &[RunEvent]) -> anyhow::Result<()> {
        self.check()?;
        for event in events {
            self.send(Message::Event(event.clone())).await?;
        }
        self.flush().await
    }

    /// Waits until every event recorded so far is committed.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        let (ack, done) = oneshot::channel();
        self.send(Message::Flush(ack)).await?;
        self.flush_wanted.notify_one();
        done.await
            .map_err(|_| anyhow!("the results store's writer has stopped"))?
            .map_err(|e| anyhow!("{e}"))
    }

    /// Commits what is queued and closes the file (checkpointing the write-ahead log).
    pub async fn close(mut self) -> anyhow::Result<()> {
        let flushed = self.flush().await;
        drop(self.queue);
        self.closed
            .await
            .context("the results store's writer failed")?;
        flushed
    }
}
