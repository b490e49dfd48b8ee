//! The one error type of the dashboard's handlers: the detail goes to the log, the response
//! carries a plain message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store::query::NotFound;

/// What went wrong in a handler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The page asked for something the store does not hold.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong (a bad query string).
    #[error("{0}")]
    BadRequest(String),
    /// The store failed; the detail is logged, not shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Error {
        match e.downcast::<NotFound>() {
            Ok(nf) => Error::NotFound(nf.to_string()),
            Err(e) => Error::Internal(e),
        }
    }
}

impl From<askama::Error> for Error {
    fn from(e: askama::Error) -> Error {
        Error::Internal(e.into())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Error::NotFound(m) => (StatusCode::NOT_FOUND, format!("not found: {m}\n")),
            Error::BadRequest(m) => (StatusCode::BAD_REQUEST, format!("bad request: {m}\n")),
            Error::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "dashboard request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error: the server log has the details\n".to_owned(),
                )
            }
        };
        (status, message).into_response()
    }
}

/// The result of a handler.
pub type Result<T> = std::result::Result<T, Error>;
