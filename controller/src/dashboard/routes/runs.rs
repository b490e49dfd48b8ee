//! `/runs`: recent runs; `/runs/{uid}`: one run's trials with their timelines;
//! `/runs/{uid}/latency`: its injection latency.

use super::Q;
use askama::Template;
use axum::Json;
use axum::extract::{Path, State};
use axum::response::Html;
use serde::{Deserialize, Serialize};

use super::query;
use crate::dashboard::pages::{LatencyHtml, RunHtml, RunsHtml};
use crate::dashboard::{AppState, Result, svg};
use crate::store::query::{self as q, Latency, RunBrief, RunFilter, RunList, RunPage};

/// `?experiment=NAME&limit=N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::dashboard) struct ListQuery {
    experiment: Option<String>,
    limit: Option<u32>,
}

/// `?experiment=NAME`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::dashboard) struct LatencyQuery {
    experiment: Option<String>,
}

async fn load_list(state: &AppState, q: Q<ListQuery>) -> Result<RunList> {
    let l = query(q)?;
    let limit = l.limit.unwrap_or(100).clamp(1, 1000);
    Ok(q::runs(&state.store, l.experiment.as_deref(), limit).await?)
}

pub(in crate::dashboard) async fn list_page(
    State(state): State<AppState>,
    q: Q<ListQuery>,
) -> Result<Html<String>> {
    let page = load_list(&state, q).await?;
    Ok(Html(RunsHtml { page: &page }.render()?))
}

pub(in crate::dashboard) async fn list_api(
    State(state): State<AppState>,
    q: Q<ListQuery>,
) -> Result<Json<RunList>> {
    Ok(Json(load_list(&state, q).await?))
}

pub(in crate::dashboard) async fn page(
    State(state): State<AppState>,
    Path(uid): Path<String>,
    q: Q<RunFilter>,
) -> Result<Html<String>> {
    let page = q::run(&state.store, &uid, query(q)?).await?;
    let trials = page
        .trials
        .iter()
        .map(|t| (t, svg::timeline(&t.record.observation)))
        .collect();
    let histogram = svg::histogram(&page.latency.buckets);
    Ok(Html(
        RunHtml {
            page: &page,
            trials,
            histogram,
        }
        .render()?,
    ))
}

pub(in crate::dashboard) async fn api(
    State(state): State<AppState>,
    Path(uid): Path<String>,
    q: Q<RunFilter>,
) -> Result<Json<RunPage>> {
    Ok(Json(q::run(&state.store, &uid, query(q)?).await?))
}

/// The JSON of the latency page.
#[derive(Debug, Serialize)]
pub(in crate::dashboard) struct LatencyJson {
    run: RunBrief,
    latency: Latency,
}

async fn load_latency(state: &AppState, uid: &str, q: Q<LatencyQuery>) -> Result<LatencyJson> {
    let l = query(q)?;
    let (run, latency) = q::latency(&state.store, uid, l.experiment.as_deref()).await?;
    Ok(LatencyJson { run, latency })
}

pub(in crate::dashboard) async fn latency_page(
    State(state): State<AppState>,
    Path(uid): Path<String>,
    q: Q<LatencyQuery>,
) -> Result<Html<String>> {
    let l = load_latency(&state, &uid, q).await?;
    let histogram = svg::histogram(&l.latency.buckets);
    Ok(Html(
        LatencyHtml {
            run: &l.run,
            latency: &l.latency,
            histogram,
        }
        .render()?,
    ))
}

pub(in crate::dashboard) async fn latency_api(
    State(state): State<AppState>,
    Path(uid): Path<String>,
    q: Q<LatencyQuery>,
) -> Result<Json<LatencyJson>> {
    Ok(Json(load_latency(&state, &uid, q).await?))
}
