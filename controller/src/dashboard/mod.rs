//! The dashboard: server-rendered HTML pages over the results store, each with a JSON twin
//! under `/api/`.
//!
//! # Theory of operation
//! Every page is one handler that asks [`crate::store::query`] for a view, then renders it
//! twice over: as HTML through an askama template (which escapes everything it prints, so
//! target output shows as text), or as JSON. Drawings are inline SVG whose geometry comes
//! from [`svg`]; there is no JavaScript and nothing is loaded from elsewhere: the stylesheet
//! is compiled into the binary. A page of a running run refreshes itself with a plain
//! `<meta http-equiv="refresh">`.
//!
//! [`app`] builds the router, so tests call `app(state).oneshot(request)`. `atropos serve`
//! wraps it in the [`host`] allow-list and serves it through [`server`], which bounds every
//! connection's time and their number.

mod assets;
mod error;
pub mod format;
pub mod host;
mod pages;
mod routes;
pub mod server;
pub mod svg;

use axum::Router;
use axum::routing::get;

pub use error::{Error, Result};

use crate::store::Store;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The store read.
    pub store: Store,
}

/// The dashboard's router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(routes::overview::page))
        .route("/api/overview", get(routes::overview::api))
        .route("/experiments/{name}", get(routes::experiments::page))
        .route("/api/experiments/{name}", get(routes::experiments::api))
        .route(
            "/experiments/{name}/compare",
            get(routes::experiments::compare_page),
        )
        .route(
            "/api/experiments/{name}/compare",
            get(routes::experiments::compare_api),
        )
        .route("/runs", get(routes::runs::list_page))
        .route("/api/runs", get(routes::runs::list_api))
        .route("/runs/{uid}", get(routes::runs::page))
        .route("/api/runs/{uid}", get(routes::runs::api))
        .route("/runs/{uid}/latency", get(routes::runs::latency_page))
        .route("/api/runs/{uid}/latency", get(routes::runs::latency_api))
        .route("/trials/{uid}", get(routes::trials::page))
        .route("/api/trials/{uid}", get(routes::trials::api))
        .route("/static/style.css", get(assets::style))
        .route("/favicon.svg", get(assets::favicon))
        .fallback(routes::not_found)
        .with_state(state)
}
