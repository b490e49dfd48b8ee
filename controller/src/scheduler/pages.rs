//! `GET /schedules` (and `/api/schedules`): what the controller holds and when it fires
//! next, in each experiment's own time zone, with the last decision (fired, or skipped and
//! why) and the state of the run it started.

use std::sync::Arc;

use askama::Template;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use serde::Serialize;

use super::Schedule;
use crate::store::Store;

/// How many coming fire times a schedule shows.
const COMING: usize = 3;

/// What the pages read.
pub struct Held {
    /// The store.
    pub store: Store,
    /// Every experiment the controller holds, with its schedule if it has one.
    pub experiments: Vec<(String, Option<Schedule>)>,
}

/// One held experiment.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleRow {
    /// Its name.
    pub experiment: String,
    /// The cron line (`None`: it runs only when triggered).
    pub schedule: Option<String>,
    /// Its time zone.
    pub timezone: Option<String>,
    /// `forbid`, `allow` or `replace`.
    pub concurrency: Option<String>,
    /// Whether it fires nothing.
    pub suspended: bool,
    /// The next fire times, in its time zone.
    pub next: Vec<String>,
    /// The last decision: `fired` or `skipped`.
    pub last_outcome: Option<String>,
    /// When that tick was, in its time zone.
    pub last_tick: Option<String>,
    /// Why it was skipped.
    pub last_reason: Option<String>,
    /// The run it started.
    pub last_run: Option<String>,
    /// That run's state.
    pub last_state: Option<String>,
}

/// The page.
#[derive(Debug, Clone, Serialize)]
pub struct SchedulesPage {
    /// One row per experiment held.
    pub rows: Vec<ScheduleRow>,
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesHtml<'a> {
    page: &'a SchedulesPage,
}

/// The routes.
pub fn router(held: Arc<Held>) -> Router {
    Router::new()
        .route("/schedules", get(html))
        .route("/api/schedules", get(api))
        .with_state(held)
}

async fn load(held: &Held) -> anyhow::Result<SchedulesPage> {
    let now = Utc::now();
    let mut decided = held.store.last_decisions().await?;
    let mut rows = Vec::with_capacity(held.experiments.len());
    for (name, schedule) in &held.experiments {
        let mut row = ScheduleRow {
            experiment: name.clone(),
            schedule: None,
            timezone: None,
            concurrency: None,
            suspended: false,
            next: Vec::new(),
            last_outcome: None,
            last_tick: None,
            last_reason: None,
            last_run: None,
            last_state: None,
        };
        if let Some(s) = schedule {
            row.schedule = Some(s.line.clone());
            row.timezone = Some(s.tz.to_string());
            row.concurrency = Some(format!("{:?}", s.concurrency).to_lowercase());
            row.suspended = s.suspend;
            let local = |t: chrono::DateTime<Utc>| {
                t.with_timezone(&s.tz)
                    .format("%Y-%m-%d %H:%M:%S %Z")
                    .to_string()
            };
            if !s.suspend {
                let mut t = now;
                while row.next.len() < COMING {
                    let Some(next) = s.next_after(t) else { break };
                    row.next.push(local(next));
                    t = next;
                }
            }
            if let Some((last, state)) = decided.remove(name) {
                row.last_tick = Some(local(super::daemon::from_seconds(last.tick_at)));
                row.last_outcome = Some(last.outcome);
                row.last_reason = last.reason;
                row.last_run = last.run_uid;
                row.last_state = state;
            }
        }
        rows.push(row);
    }
    Ok(SchedulesPage { rows })
}

fn failed(err: &anyhow::Error) -> Response {
    tracing::error!(error = format!("{err:#}"), "schedules page failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error: the server log has the details\n",
    )
        .into_response()
}

async fn html(State(held): State<Arc<Held>>) -> Response {
    match load(&held).await {
        Ok(page) => match (SchedulesHtml { page: &page }).render() {
            Ok(text) => Html(text).into_response(),
            Err(err) => failed(&err.into()),
        },
        Err(err) => failed(&err),
    }
}

async fn api(State(held): State<Arc<Held>>) -> Response {
    match load(&held).await {
        Ok(page) => Json(page).into_response(),
        Err(err) => failed(&err),
    }
}
