//! `GET /metrics` of the controller (`atropos serve`), in Prometheus's text format
//! (`prometheus-client`): runs by experiment and state, trials by experiment and verdict,
//! injection latency and recovery time as histograms, and each schedule's next fire time.
//! No pid or trial id is ever a label.
//!
//! Everything comes from the store, so runs recorded by any `atropos run` on the file
//! count: the totals are read at each scrape (a few grouped rows from the aggregate
//! tables), the histograms are fed the trials recorded since the last scrape (a cursor on
//! the trial id), so a scrape never reads the whole history again.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use super::Schedule;
use crate::store::Store;
use crate::store::query::run_state;

/// Trials read into the histograms per query.
const BATCH: i64 = 50_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    experiment: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrialLabels {
    experiment: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExperimentLabel {
    experiment: String,
}

/// What the controller's metrics keep between scrapes.
pub struct Metrics {
    store: Store,
    schedules: Vec<(String, Schedule)>,
    latency: Histogram,
    recovery: Histogram,
    /// The last trial id fed to the histograms.
    cursor: tokio::sync::Mutex<i64>,
}

impl Metrics {
    /// Metrics of `store` and of these schedules.
    pub fn new(store: Store, schedules: Vec<(String, Schedule)>) -> Metrics {
        Metrics {
            store,
            schedules,
            // 1 µs to ~16 ms: the engine's latency is tens to hundreds of µs.
            latency: Histogram::new(exponential_buckets(1e-6, 2.0, 15)),
            // 10 ms to ~82 s: a supervisor's restart takes a second or more.
            recovery: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            cursor: tokio::sync::Mutex::new(0),
        }
    }

    /// The text exposition now.
    pub async fn render(&self) -> anyhow::Result<String> {
        self.feed_histograms().await?;
        let mut conn = self.store.pool().acquire().await?;
        let mut registry = Registry::with_prefix("atropos");
        // A run's state per experiment: its status, and for a completed run its verdict.
        let runs: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT e.name, r.status, re.failed > 0, re.errors > 0, count(*)
             FROM run_experiments re JOIN runs r ON r.id = re.run_id
             JOIN experiments e ON e.id = re.experiment_id GROUP BY 1, 2, 3, 4",
        )
        .fetch_all(&mut *conn)
        .await?;
        let runs_total = Family::<RunLabels, Counter>::default();
        for (experiment, status, failed, errors, n) in runs {
            let state = run_state(&status, failed, errors);
            runs_total
                .get_or_create(&RunLabels { experiment, state })
                .inc_by(u64::try_from(n).unwrap_or(0));
        }
        registry.register("runs", "Runs by experiment and state", runs_total);
        let trials: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT e.name, sum(re.passed), sum(re.failed), sum(re.errors)
             FROM run_experiments re JOIN experiments e ON e.id = re.experiment_id GROUP BY 1",
        )
        .fetch_all(&mut *conn)
        .await?;
        let trials_total = Family::<TrialLabels, Counter>::default();
        for (experiment, pass, fail, error) in trials {
            for (verdict, n) in [("pass", pass), ("fail", fail), ("error", error)] {
                trials_total
                    .get_or_create(&TrialLabels {
                        experiment: experiment.clone(),
                        verdict: verdict.to_owned(),
                    })
                    .inc_by(u64::try_from(n).unwrap_or(0));
            }
        }
        registry.register("trials", "Trials by experiment and verdict", trials_total);
        registry.register(
            "injection_latency_seconds",
            "From a step being due to its signal sent",
            self.latency.clone(),
        );
        registry.register(
            "recovery_seconds",
            "From a fault's effect to the service back in its phase (recover:)",
            self.recovery.clone(),
        );
        let next = Family::<ExperimentLabel, Gauge<f64, AtomicU64>>::default();
        let now = chrono::Utc::now();
        for (experiment, schedule) in &self.schedules {
            if schedule.suspend {
                continue;
            }
            if let Some(at) = schedule.next_after(now) {
                next.get_or_create(&ExperimentLabel {
                    experiment: experiment.clone(),
                })
                .set(super::daemon::seconds(at));
            }
        }
        registry.register(
            "schedule_next_run_timestamp_seconds",
            "When each schedule fires next, seconds since the Unix epoch",
            next,
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }

    /// Feeds the trials recorded since the last scrape into the histograms.
    async fn feed_histograms(&self) -> anyhow::Result<()> {
        let mut cursor = self.cursor.lock().await;
        let mut conn = self.store.pool().acquire().await?;
        loop {
            let rows: Vec<(i64, Option<i64>, Option<i64>)> = sqlx::query_as(
                "SELECT id, latency_ns, json_extract(recovery, '$.reached_ns')
                 FROM trials WHERE id > ? ORDER BY id LIMIT ?",
            )
            .bind(*cursor)
            .bind(BATCH)
            .fetch_all(&mut *conn)
            .await?;
            for (id, latency, recovered) in &rows {
                if let Some(ns) = latency {
                    self.latency.observe(*ns as f64 / 1e9);
                }
                if let Some(ns) = recovered {
                    self.recovery.observe(*ns as f64 / 1e9);
                }
                *cursor = *id;
            }
            if (rows.len() as i64) < BATCH {
                return Ok(());
            }
        }
    }
}

/// `GET /metrics`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.render().await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}
