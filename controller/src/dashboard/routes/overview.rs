//! `/`: every experiment at a glance.

use askama::Template;
use axum::Json;
use axum::extract::State;
use axum::response::Html;

use crate::dashboard::pages::OverviewHtml;
use crate::dashboard::{AppState, Result, svg};
use crate::store::query::{self, Overview};

pub(in crate::dashboard) async fn page(State(state): State<AppState>) -> Result<Html<String>> {
    let page = query::overview(&state.store).await?;
    let rows = page
        .experiments
        .iter()
        .map(|e| (e, svg::sparkline(&e.trend)))
        .collect();
    Ok(Html(OverviewHtml { page: &page, rows }.render()?))
}

pub(in crate::dashboard) async fn api(State(state): State<AppState>) -> Result<Json<Overview>> {
    Ok(Json(query::overview(&state.store).await?))
}
