//! The handlers, one file per resource.

pub(super) mod experiments;
pub(super) mod overview;
pub(super) mod runs;
pub(super) mod trials;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;

use super::Error;

/// Any path no route takes.
pub(super) async fn not_found(uri: axum::http::Uri) -> Error {
    Error::NotFound(format!("no page at {}", uri.path()))
}

/// A query string parsed into `T`, or a plain 400.
pub(super) fn query<T>(q: Q<T>) -> Result<T, Error> {
    q.map(|Query(q)| q)
        .map_err(|e| Error::BadRequest(e.body_text()))
}

/// A query string as extracted: parsed, or why not.
pub(super) type Q<T> = Result<Query<T>, QueryRejection>;
