//! The scheduler's records: the last tick each schedule decided, every decision with its
//! reason, and the run a fired tick queued.
//!
//! A tick is decided once across every controller that shares the file: the transaction
//! that records it first moves `schedules.last_tick` forward (`BEGIN IMMEDIATE`, so two
//! controllers take turns), and a controller that finds it moved already records nothing
//! and fires nothing. The run a tick fires is queued (`runs.status = 'queued'`, its owner
//! the controller) in the same transaction; the `atropos run` that runs it takes the record
//! over ([`super::write`]), and a queued run whose controller died is marked interrupted
//! like any run whose owner is gone.

use super::Store;
use super::owner::Owner;
use super::write::{ns_to_sql, u64_to_sql};
use crate::record::Trigger;

/// What a controller decided for one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickOutcome {
    /// The tick starts a run with this id and seed.
    Fire {
        /// The run's id (`runs.uid`).
        run_uid: String,
        /// Its seed.
        seed: u64,
    },
    /// The tick starts nothing, for this reason.
    Skip(String),
}

/// One recorded decision.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct TickRow {
    /// The experiment.
    pub experiment: String,
    /// The tick, seconds since the Unix epoch.
    pub tick_at: f64,
    /// When it was decided.
    pub decided_at: f64,
    /// `fired` or `skipped`.
    pub outcome: String,
    /// Why it was skipped.
    pub reason: Option<String>,
    /// The run it queued.
    pub run_uid: Option<String>,
}

impl Store {
    /// The last tick decided for `experiment`'s schedule; the first time it is seen, `now`
    /// (ticks before a schedule was first loaded never fire).
    pub async fn schedule_mark(&self, experiment: &str, now: f64) -> anyhow::Result<f64> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query(
            "INSERT INTO schedules (experiment, last_tick) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(experiment)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        let last: f64 = sqlx::query_scalar("SELECT last_tick FROM schedules WHERE experiment = ?")
            .bind(experiment)
            .fetch_one(&mut *conn)
            .await?;
        Ok(last)
    }

    /// Records the decision for `tick` of `experiment`, and for a fired tick queues its run,
    /// in one transaction; `false` if the tick (or a later one) was decided already, by this
    /// controller or another: then nothing is written and nothing must fire.
    pub async fn decide_tick(
        &self,
        experiment: &str,
        tick: f64,
        decided_at: f64,
        outcome: &TickOutcome,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let moved = sqlx::query(
            "UPDATE schedules SET last_tick = ? WHERE experiment = ? AND last_tick < ?",
        )
        .bind(tick)
        .bind(experiment)
        .bind(tick)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let (name, reason, run_uid) = match outcome {
            TickOutcome::Fire { run_uid, .. } => ("fired", None, Some(run_uid.as_str())),
            TickOutcome::Skip(why) => ("skipped", Some(why.as_str()), None),
        };
        sqlx::query(
            "INSERT INTO schedule_ticks (experiment, tick_at, decided_at, outcome, reason, run_uid)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(experiment)
        .bind(tick)
        .bind(decided_at)
        .bind(name)
        .bind(reason)
        .bind(run_uid)
        .execute(&mut *tx)
        .await?;
        if let TickOutcome::Fire { run_uid, seed } = outcome {
            queue(
                &mut tx,
                run_uid,
                *seed,
                Trigger::Schedule,
                "schedule",
                decided_at,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Queues a run asked for by `by` through the API, to be taken over by the
    /// `atropos run` that runs it.
    pub async fn queue_run(
        &self,
        run_uid: &str,
        seed: u64,
        by: &str,
        at: f64,
    ) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await?;
        queue(&mut conn, run_uid, seed, Trigger::Api, by, at).await
    }

    /// Marks a run aborted, with why (after its `atropos run` ended).
    pub async fn mark_aborted(&self, run_uid: &str, why: &str, at: f64) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query(
            "UPDATE runs SET status = 'aborted', abort_reason = coalesce(abort_reason, ?),
                ended_at = COALESCE(ended_at, ?)
             WHERE uid = ? AND status IN ('running', 'queued', 'interrupted')",
        )
        .bind(why)
        .bind(at)
        .bind(run_uid)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Each experiment's last decision, with the state of the run it started (if any).
    pub async fn last_decisions(
        &self,
    ) -> anyhow::Result<std::collections::HashMap<String, (TickRow, Option<String>)>> {
        let mut conn = self.pool.acquire().await?;
        #[expect(clippy::type_complexity, reason = "one row of a query")]
        let rows: Vec<(
            String,
            f64,
            f64,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            i64,
            i64,
        )> = sqlx::query_as(
            "SELECT t.experiment, t.tick_at, t.decided_at, t.outcome, t.reason, t.run_uid,
                    r.status,
                    (SELECT coalesce(sum(failed), 0) FROM run_experiments WHERE run_id = r.id),
                    (SELECT coalesce(sum(errors), 0) FROM run_experiments WHERE run_id = r.id)
                 FROM schedule_ticks t LEFT JOIN runs r ON r.uid = t.run_uid
                 WHERE t.tick_at = (SELECT max(s.tick_at) FROM schedule_ticks s
                                    WHERE s.experiment = t.experiment)",
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(experiment, tick_at, decided_at, outcome, reason, run_uid, status, f, e)| {
                    let state = status.map(|s| crate::store::query::run_state(&s, f, e));
                    let row = TickRow {
                        experiment: experiment.clone(),
                        tick_at,
                        decided_at,
                        outcome,
                        reason,
                        run_uid,
                    };
                    (experiment, (row, state))
                },
            )
            .collect())
    }

    /// The latest decisions for `experiment`, newest first.
    pub async fn schedule_ticks(
        &self,
        experiment: &str,
        limit: u32,
    ) -> anyhow::Result<Vec<TickRow>> {
        let mut conn = self.pool.acquire().await?;
        Ok(sqlx::query_as(
            "SELECT experiment, tick_at, decided_at, outcome, reason, run_uid
             FROM schedule_ticks WHERE experiment = ? ORDER BY tick_at DESC LIMIT ?",
        )
        .bind(experiment)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?)
    }
}

/// Inserts a queued run owned by this process (the controller).
async fn queue(
    conn: &mut sqlx::SqliteConnection,
    run_uid: &str,
    seed: u64,
    trigger: Trigger,
    by: &str,
    at: f64,
) -> anyhow::Result<()> {
    let owner = Owner::current();
    sqlx::query(
        "INSERT INTO runs (uid, trigger, requested_by, seed, started_at, status, version,
            owner_host, owner_boot, owner_pid, owner_start, planned)
         VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, 0)",
    )
    .bind(run_uid)
    .bind(trigger.as_str())
    .bind(by)
    .bind(u64_to_sql(seed))
    .bind(at)
    .bind(crate::VERSION)
    .bind(&owner.host)
    .bind(&owner.boot)
    .bind(owner.pid)
    .bind(ns_to_sql(owner.start))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_controllers_on_one_file_fire_a_tick_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("atropos.db");
        let a = Store::open(&path, true).await.unwrap();
        let b = Store::open(&path, true).await.unwrap();
        assert_eq!(a.schedule_mark("game-day", 100.0).await.unwrap(), 100.0);
        // The second controller finds the first one's mark.
        assert_eq!(b.schedule_mark("game-day", 150.0).await.unwrap(), 100.0);
        for tick in [120.0, 140.0, 160.0] {
            let fire = |n: &str| TickOutcome::Fire {
                run_uid: format!("r-{n}-{tick}"),
                seed: 7,
            };
            let (by_a, by_b) = (fire("a"), fire("b"));
            let (fa, fb) = tokio::join!(
                a.decide_tick("game-day", tick, tick, &by_a),
                b.decide_tick("game-day", tick, tick, &by_b),
            );
            let (fa, fb) = (fa.unwrap(), fb.unwrap());
            assert!(fa ^ fb, "tick {tick}: exactly one fires, got {fa} and {fb}");
        }
        // An older tick, or the same one again, is decided already.
        let late = TickOutcome::Skip("late".into());
        assert!(
            !a.decide_tick("game-day", 140.0, 170.0, &late)
                .await
                .unwrap()
        );
        let queued: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE status = 'queued' AND trigger = 'schedule'",
        )
        .fetch_one(a.pool())
        .await
        .unwrap();
        assert_eq!(queued, 3);
        let ticks = a.schedule_ticks("game-day", 10).await.unwrap();
        assert_eq!(ticks.len(), 3);
        assert!(
            ticks
                .iter()
                .all(|t| t.outcome == "fired" && t.run_uid.is_some())
        );
    }

    #[tokio::test]
    async fn a_queued_run_whose_controller_died_is_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("atropos.db");
        let store = Store::open(&path, true).await.unwrap();
        store.schedule_mark("x", 0.0).await.unwrap();
        let fire = TickOutcome::Fire {
            run_uid: "r-dead".into(),
            seed: 1,
        };
        assert!(store.decide_tick("x", 1.0, 1.0, &fire).await.unwrap());
        // As if another process had queued it and died: a pid that is not alive.
        sqlx::query("UPDATE runs SET owner_pid = 2147483000 WHERE uid = 'r-dead'")
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(store.mark_dead_runs_interrupted().await.unwrap(), 1);
        let status: String = sqlx::query_scalar("SELECT status FROM runs WHERE uid = 'r-dead'")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(status, "interrupted");
    }
}
