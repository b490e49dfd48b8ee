//! Opening the store file: connection settings, migrations, and the reader pool.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

/// How long a connection waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The settings every connection to a store file uses: WAL (readers and one writer at once),
/// `synchronous = NORMAL` (a commit survives the death of the process; only a power cut
/// may lose the last ones), a busy timeout, and foreign keys.
pub fn connect_options(path: &Path, create: bool) -> SqliteConnectOptions {
    SqliteConnectOptions::from_str("sqlite:")
        .expect("`sqlite:` is a valid SQLite URL")
        .filename(path)
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        .pragma("cache_size", "-16000")
}

/// Applies the migrations in `migrations/`. Two processes opening a new file at once may
/// both try; the loser finds the tables made and tries again.
pub(crate) async fn migrate(conn: &mut SqliteConnection, path: &Path) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..5 {
        match sqlx::migrate!("../migrations").run(&mut *conn).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "migration raced another process; retrying");
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Err(last.expect("the loop ran at least once")).with_context(|| {
        format!(
            "failed to prepare the results store {}: is it an atropos store of a newer version?",
            path.display()
        )
    })
}

/// The reader side of a store file: a small connection pool for the dashboard and the CLI.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) pool: SqlitePool,
}

impl Store {
    /// Opens (`create`: or creates) the store at `path`, applies the migrations, and marks
    /// runs whose atropos died as interrupted.
    pub async fn open(path: &Path, create: bool) -> anyhow::Result<Store> {
        if !create && !path.exists() {
            anyhow::bail!(
                "no results store at {}\nhelp: `atropos run` writes one there (or pass --db PATH)",
                path.display()
            );
        }
        let options = connect_options(path, create);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options)
            .await
            .with_context(|| format!("failed to open the results store {}", path.display()))?;
        {
            let mut conn = pool.acquire().await?;
            migrate(&mut conn, path).await?;
        }
        let store = Store { pool };
        store.mark_dead_runs_interrupted().await?;
        Ok(store)
    }

    /// Marks every `running` run whose owner process is gone as `interrupted`; returns how
    /// many. Safe to call at any time, from any process.
    pub async fn mark_dead_runs_interrupted(&self) -> anyhow::Result<u64> {
        let mut conn = self.pool.acquire().await?;
        super::owner::mark_dead_runs_interrupted(&mut conn).await
    }

    /// The pool, for queries this module does not offer.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}
