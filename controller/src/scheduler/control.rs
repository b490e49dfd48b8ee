//! The controller's API that changes something: start a run now, abort one. Every route
//! here needs the controller's bearer token (`serve --token-file`), compared in constant
//! time; a controller started without one takes no orders (403). Bodies are small JSON
//! (at most [`MAX_BODY`] bytes, unknown fields refused); errors are JSON with a plain
//! message, the detail in the log.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::daemon::{Order, Refused};

/// The largest request body taken.
pub const MAX_BODY: usize = 4096;

/// How long an order may take (an abort waits for its run to end).
const ORDER_TIMEOUT: Duration = Duration::from_secs(30);

/// What the routes share.
pub struct Control {
    /// Where orders go (the controller loop).
    pub orders: mpsc::Sender<Order>,
    /// The bearer token; `None`: no orders are taken.
    pub token: Option<String>,
}

/// An order's body: who asks (kept with the run).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Asked {
    /// Who asks; default `api`.
    #[serde(default)]
    pub by: Option<String>,
}

/// A started or aborted run.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunRef {
    /// The run's id.
    pub run: String,
}

/// The routes, to merge into the dashboard's router.
pub fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route("/api/experiments/{name}/runs", post(trigger))
        .route("/api/runs/{uid}/abort", post(abort))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(control)
}

/// A refusal: its status and plain message.
#[derive(Debug)]
struct Denied(StatusCode, String);

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let Denied(status, message) = self;
        let mut response = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Denied {
    Denied(status, message.into())
}

/// `Ok` when the request carries the controller's token.
fn authorised(control: &Control, headers: &HeaderMap) -> Result<(), Denied> {
    let Some(token) = &control.token else {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "this controller takes no orders: start it with --token-file",
        ));
    };
    if atropos_injector::agent::bearer_matches(headers, token) {
        Ok(())
    } else {
        Err(refuse(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is needed",
        ))
    }
}

/// Who asked, from an optional JSON body.
fn asked(body: &[u8]) -> Result<String, Denied> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok("api".to_owned());
    }
    let asked: Asked = serde_json::from_slice(body).map_err(|e| {
        refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("not an order: {e}"),
        )
    })?;
    let by = asked.by.unwrap_or_else(|| "api".to_owned());
    if by.is_empty() || by.len() > 128 || by.chars().any(char::is_control) {
        return Err(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "`by`: expected 1 to 128 printable characters",
        ));
    }
    Ok(by)
}

/// Sends `order` and waits for its answer.
async fn send<T>(
    control: &Control,
    order: Order,
    answer: oneshot::Receiver<Result<T, Refused>>,
) -> Result<T, Denied> {
    if control.orders.send(order).await.is_err() {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the controller is stopping",
        ));
    }
    match tokio::time::timeout(ORDER_TIMEOUT, answer).await {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(refused @ (Refused::NoExperiment(_) | Refused::NoRun(_))))) => {
            Err(refuse(StatusCode::NOT_FOUND, refused.to_string()))
        }
        Ok(Ok(Err(Refused::Failed(why)))) => {
            tracing::error!(%why, "an order failed");
            Err(refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the order failed: the controller's log has the details",
            ))
        }
        Ok(Err(_)) => Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the controller is stopping",
        )),
        Err(_) => Err(refuse(
            StatusCode::GATEWAY_TIMEOUT,
            format!("no answer within {}s", ORDER_TIMEOUT.as_secs()),
        )),
    }
}

/// Checks the token and the body, then sends the order `make` builds from who asked and
/// the reply channel, and waits for its answer.
async fn obey<T>(
    control: &Control,
    headers: &HeaderMap,
    body: &[u8],
    make: impl FnOnce(String, oneshot::Sender<Result<T, Refused>>) -> Order,
) -> Result<T, Denied> {
    authorised(control, headers)?;
    let by = asked(body)?;
    let (reply, answer) = oneshot::channel();
    send(control, make(by, reply), answer).await
}

/// `POST /api/experiments/{name}/runs`: starts a run of the experiment now.
async fn trigger(
    State(control): State<Arc<Control>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let started = obey(&control, &headers, &body, |by, reply| Order::Trigger {
        experiment: name,
        by,
        reply,
    });
    match started.await {
        Ok(run) => (StatusCode::CREATED, Json(RunRef { run })).into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// `POST /api/runs/{uid}/abort`: aborts a run this controller started.
async fn abort(
    State(control): State<Arc<Control>>,
    Path(uid): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let run = uid.clone();
    let aborted = obey(&control, &headers, &body, |by, reply| Order::Abort {
        run,
        by,
        reply,
    });
    match aborted.await {
        Ok(()) => Json(RunRef { run: uid }).into_response(),
        Err(refused) => refused.into_response(),
    }
}
