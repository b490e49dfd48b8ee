//! `/experiments/{name}`: the coverage matrix and run history of one experiment, and the
//! comparison of two of its runs.

use super::Q;
use askama::Template;
use axum::Json;
use axum::extract::{Path, State};
use axum::response::Html;
use serde::Deserialize;

use super::query;
use crate::dashboard::pages::{CompareHtml, ExperimentHtml};
use crate::dashboard::{AppState, Error, Result};
use crate::store::query::{self as q, Compare, ExperimentPage};

/// `?version=ID`: limit the matrix to one version.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::dashboard) struct VersionQuery {
    version: Option<i64>,
}

/// `?a=RUN&b=RUN`: the runs to compare (default: the latest two).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::dashboard) struct CompareQuery {
    a: Option<String>,
    b: Option<String>,
}

async fn load(state: &AppState, name: &str, q: Q<VersionQuery>) -> Result<ExperimentPage> {
    let v = query(q)?;
    Ok(q::experiment(&state.store, name, v.version).await?)
}

pub(in crate::dashboard) async fn page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Q<VersionQuery>,
) -> Result<Html<String>> {
    let page = load(&state, &name, q).await?;
    Ok(Html(ExperimentHtml { page: &page }.render()?))
}

pub(in crate::dashboard) async fn api(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Q<VersionQuery>,
) -> Result<Json<ExperimentPage>> {
    Ok(Json(load(&state, &name, q).await?))
}

async fn load_compare(state: &AppState, name: &str, q: Q<CompareQuery>) -> Result<Compare> {
    let runs = match query(q)? {
        CompareQuery {
            a: Some(a),
            b: Some(b),
        } => Some((a, b)),
        CompareQuery { a: None, b: None } => None,
        _ => {
            return Err(Error::BadRequest(
                "give both runs to compare (?a=RUN&b=RUN), or neither for the latest two".into(),
            ));
        }
    };
    Ok(q::compare(&state.store, name, runs).await?)
}

pub(in crate::dashboard) async fn compare_page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Q<CompareQuery>,
) -> Result<Html<String>> {
    let page = load_compare(&state, &name, q).await?;
    Ok(Html(CompareHtml { page: &page }.render()?))
}

pub(in crate::dashboard) async fn compare_api(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Q<CompareQuery>,
) -> Result<Json<Compare>> {
    Ok(Json(load_compare(&state, &name, q).await?))
}
