//! `/trials/{uid}`: one trial in full.

use askama::Template;
use axum::Json;
use axum::extract::{Path, State};
use axum::response::Html;

use crate::dashboard::pages::TrialHtml;
use crate::dashboard::{AppState, Result, svg};
use crate::store::query::{self, TrialView};

pub(in crate::dashboard) async fn page(
    State(state): State<AppState>,
    Path(uid): Path<String>,
) -> Result<Html<String>> {
    let view = query::trial(&state.store, &uid).await?;
    let timeline = svg::timeline(&view.record.observation);
    Ok(Html(
        TrialHtml {
            view: &view,
            timeline,
        }
        .render()?,
    ))
}

pub(in crate::dashboard) async fn api(
    State(state): State<AppState>,
    Path(uid): Path<String>,
) -> Result<Json<TrialView>> {
    Ok(Json(query::trial(&state.store, &uid).await?))
}
