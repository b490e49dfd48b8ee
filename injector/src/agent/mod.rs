//! `atropos-injector`, the node agent: runs the trials a controller sends, on this node, and
//! streams back what they did.
//!
//! # Theory of operation
//! - Every route but `GET /healthz` needs `Authorization: Bearer <token>`, compared in
//!   constant time. The token is mandatory (an agent that spawns commands and signals
//!   processes as root is remote code execution by design); TLS (rustls) is optional on
//!   loopback, and with a client CA the connection must present a certificate it signed.
//! - `POST /v1/trials` takes a [`TrialRequest`] (at most [`MAX_BODY`] bytes, unknown fields
//!   refused) and answers `200` with one JSON [`Event`] per line: `started`, each phase and
//!   delivery as it happens, a `beat` every [`BEAT`] while nothing else is said, and `done`
//!   with the observation and the after-checks. Refusals come before anything runs: `409`
//!   for another plan format or another node's plan, `403` for a command or an attached
//!   process outside the allow-lists, `429` when `--max-trials` run already.
//! - The trial runs on a thread of its own, as in-process. The stream owns the trial's
//!   cancellation: when it is dropped (the controller closed the connection, or died, and
//!   a beat could not be written) the trial is cancelled and its target killed.
//!   `DELETE /v1/trials/{id}` cancels it too.
//! - A trial's port and folder are this node's ([`TrialRequest::fill`]).

mod metrics;
pub mod server;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use regex::Regex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::plan::{PLAN_FORMAT, Target};
use crate::wire::{ApiError, Done, Event, Info, TrialRequest};

pub use metrics::Metrics;
pub use server::{TlsFiles, serve};

/// The largest request body taken.
pub const MAX_BODY: usize = 1 << 20;

/// How long a request body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a selection waits for a process to match, whatever the request asks.
pub const MAX_SELECT_WAIT: Duration = Duration::from_secs(60);

/// How often a stream says it is alive while a trial is quiet: a controller that went away
/// is noticed by the write that fails, so within two beats.
pub const BEAT: Duration = Duration::from_millis(100);

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name.
    pub node: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The bearer token every request must carry.
    pub token: String,
    /// Trials at once.
    pub max_trials: usize,
    /// Commands allowed (a regex over the argv joined by spaces); empty: every command.
    pub allow_command: Vec<Regex>,
    /// Attached processes allowed (a regex over their joined argv); empty: none.
    pub allow_attach: Vec<Regex>,
    /// Where trial folders are made.
    pub work_dir: PathBuf,
}

/// What the handlers share.
pub struct Agent {
    config: Config,
    running: Mutex<HashMap<String, CancellationToken>>,
    ports: crate::sockets::PortPool,
    pool: Pool,
    /// Selections waiting for a match, at most `max_trials` at once.
    selecting: Arc<tokio::sync::Semaphore>,
    /// Cancelled when the agent stops: what waits (selections) stops waiting.
    closing: CancellationToken,
    run_dir: PathBuf,
    /// The agent's metrics.
    pub metrics: Metrics,
}

impl Agent {
    /// An agent for `config`; makes its folder for trial folders.
    pub fn new(config: Config) -> std::io::Result<Arc<Agent>> {
        let run_dir = config.work_dir.join(format!(
            "{}injector-{}",
            crate::workdir::PREFIX,
            std::process::id()
        ));
        for gone in crate::workdir::sweep_dead(&config.work_dir) {
            tracing::info!(folder = %gone.display(), "removed the trial folders of a dead run");
        }
        crate::workdir::create(&run_dir)?;
        let selecting = Arc::new(tokio::sync::Semaphore::new(config.max_trials.max(1)));
        Ok(Arc::new(Agent {
            config,
            running: Mutex::new(HashMap::new()),
            ports: crate::sockets::PortPool::default(),
            pool: Pool::default(),
            selecting,
            closing: CancellationToken::new(),
            run_dir,
            metrics: Metrics::new(),
        }))
    }

    /// Removes the agent's trial folders.
    pub fn close(&self) {
        self.closing.cancel();
        for token in self.running().values() {
            token.cancel();
        }
        let _ = crate::workdir::remove(&self.run_dir);
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The agent's routes.
pub fn router(agent: Arc<Agent>) -> Router {
    let authed = Router::new()
        .route("/v1/info", get(info))
        .route("/v1/trials", post(start_trial))
        .route("/v1/trials/{id}", delete(cancel_trial))
        .route("/metrics", get(metrics::render))
        .route("/v1/openapi.json", get(openapi))
        .route_layer(axum::middleware::from_fn_with_state(
            agent.clone(),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(authed)
        .fallback(|| async { refuse(StatusCode::NOT_FOUND, "no such route") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(agent)
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ApiError {
        error: message.into(),
    };
    (status, axum::Json(body)).into_response()
}

/// The shortest bearer token taken (the agent's and the controller's).
pub const MIN_TOKEN: usize = 16;

/// The token in `path`, trimmed: at least [`MIN_TOKEN`] characters; a file others may read
/// is worth a warning.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    let token = text.trim().to_owned();
    if token.len() < MIN_TOKEN {
        return Err(format!(
            "--token-file {}: the token must be at least {MIN_TOKEN} characters\n\
             help: head -c 32 /dev/urandom | base64 > {}",
            path.display(),
            path.display()
        ));
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(file = %path.display(), "the token file is readable by others; chmod 600 it");
    }
    Ok(token)
}

/// Whether `headers` carry `Authorization: Bearer TOKEN`. Equal lengths compare in
/// constant time; a different length is refused at once (it tells only the length).
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    given.as_bytes().ct_eq(token.as_bytes()).into()
}

async fn authenticate(
    State(agent): State<Arc<Agent>>,
    headers: HeaderMap,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    if !bearer_matches(&headers, &agent.config.token) {
        tracing::warn!(path = %request.uri().path(), "refused a request without the right token");
        let mut response = refuse(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        return response;
    }
    next.run(request).await
}

/// The OpenAPI document of this API (also `atropos-injector --openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "atropos-injector",
        description = "The node agent of atropos: runs fault-injection trials for a controller."
    ),
    paths(healthz, info, start_trial, cancel_trial, metrics::render, openapi),
    components(schemas(TrialRequest, Event, Info, ApiError)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document as JSON.
pub fn openapi_json() -> String {
    use utoipa::OpenApi;
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Says the agent is up; needs no token and says nothing else.
#[utoipa::path(get, path = "/healthz", security(()),
    responses((status = 200, description = "The agent is up", body = String, content_type = "text/plain")))]
async fn healthz() -> ([(header::HeaderName, &'static str); 1], &'static str) {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json",
    responses(
        (status = 200, description = "The OpenAPI document", content_type = "application/json"),
        (status = 401, description = "No valid bearer token", body = ApiError),
    ))]
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

/// The node: name, labels, version, plan format, capacity and trials running.
#[utoipa::path(get, path = "/v1/info",
    responses(
        (status = 200, description = "The node", body = Info),
        (status = 401, description = "No valid bearer token", body = ApiError),
    ))]
async fn info(State(agent): State<Arc<Agent>>) -> axum::Json<Info> {
    axum::Json(Info {
        node: agent.config.node.clone(),
        labels: agent.config.labels.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        format: PLAN_FORMAT,
        capacity: agent.config.max_trials,
        running: agent.running().len(),
    })
}

/// Cancels a running trial: its target is killed, its stream ends with its observation.
#[utoipa::path(delete, path = "/v1/trials/{id}",
    params(("id" = String, Path, description = "The trial's id")),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 401, description = "No valid bearer token", body = ApiError),
        (status = 404, description = "No such trial runs here", body = ApiError),
    ))]
async fn cancel_trial(State(agent): State<Arc<Agent>>, UrlPath(id): UrlPath<String>) -> Response {
    match agent.running().get(&id) {
        Some(token) => {
            token.cancel();
            tracing::info!(trial = %id, "trial cancelled by its controller");
            StatusCode::NO_CONTENT.into_response()
        }
        None => refuse(StatusCode::NOT_FOUND, format!("no trial `{id}` runs here")),
    }
}

/// Why the processes an attached trial names (given, or selected here) may not be hit: none
/// named, one that is no longer the process named, or one outside `--allow-attach`.
fn attach_admissible(agent: &Agent, req: &TrialRequest) -> Result<(), (StatusCode, String)> {
    let Target::Attach(attach) = &req.trial.target else {
        return Ok(());
    };
    if attach.processes.is_empty() {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            "an attached trial names no process".into(),
        ));
    }
    for p in &attach.processes {
        let same = crate::procfs::ProcStat::read(p.pid).is_some_and(|s| s.starttime == p.starttime);
        if !same {
            return Err((
                StatusCode::CONFLICT,
                format!(
                    "pid {} is no longer the process named (start time {})",
                    p.pid, p.starttime
                ),
            ));
        }
        let joined = crate::procfs::cmdline(p.pid);
        if !agent
            .config
            .allow_attach
            .iter()
            .any(|re| re.is_match(&joined))
        {
            return Err((
                StatusCode::FORBIDDEN,
                format!(
                    "pid {} (`{joined}`) is not allowed by --allow-attach",
                    p.pid
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `id` may name a trial here: it names the trial's folder, so only letters,
/// digits, `.`, `_`, `-`, at most 128 of them, and neither `.` nor `..`.
fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Why a request may not run here, checked before anything runs.
fn admissible(agent: &Agent, req: &TrialRequest) -> Result<(), (StatusCode, String)> {
    let malformed = |why: String| Err((StatusCode::UNPROCESSABLE_ENTITY, why));
    // Found by schemathesis: an empty id ran, and an id like `../x` would have named a
    // folder outside the agent's (made, then removed, with everything in it).
    for id in [&req.trial.id]
        .into_iter()
        .chain(req.after.recovery.as_ref().map(|r| &r.plan.id))
    {
        if !valid_id(id) {
            return malformed(format!(
                "trial id `{}`: expected 1 to 128 letters, digits, `.`, `_` or `-`",
                id.chars().take(140).collect::<String>()
            ));
        }
    }
    if let Target::Run(run) = &req.trial.target
        && run.argv.is_empty()
    {
        return malformed("the target's command is empty".into());
    }
    if let Some(service) = &req.after.service
        && service.index >= req.trial.phases.len()
    {
        return malformed(format!(
            "the service's recovery waits for phase {} of a trial with {}",
            service.index,
            req.trial.phases.len()
        ));
    }
    if !req.compatible() {
        return Err((
            StatusCode::CONFLICT,
            format!(
                "plan format {} (trial {}) is not this injector's format {PLAN_FORMAT} \
                 (atropos-injector {})",
                req.format,
                req.trial.format,
                env!("CARGO_PKG_VERSION")
            ),
        ));
    }
    if req.node != agent.config.node {
        return Err((
            StatusCode::CONFLICT,
            format!(
                "the plan is for node `{}`; this is node `{}`",
                req.node, agent.config.node
            ),
        ));
    }
    let allowed = |argv: &[String]| {
        let joined = argv.join(" ");
        agent.config.allow_command.is_empty()
            || agent
                .config
                .allow_command
                .iter()
                .any(|re| re.is_match(&joined))
    };
    let mut commands: Vec<&[String]> = Vec::new();
    if let Target::Run(run) = &req.trial.target {
        commands.push(&run.argv);
    }
    if let Some(check) = &req.after.check {
        commands.push(&check.argv);
    }
    if let Some(recovery) = &req.after.recovery
        && let Target::Run(run) = &recovery.plan.target
    {
        commands.push(&run.argv);
    }
    if let Some(refused) = commands.into_iter().find(|argv| !allowed(argv)) {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "the command `{}` is not allowed by --allow-command",
                refused.join(" ")
            ),
        ));
    }
    Ok(())
}

type Job = Box<dyn FnOnce() + Send>;

/// The threads trials run on, kept between trials: each keeps its lane cgroup (made once
/// per thread), so a trial costs no thread and no cgroup of its own. Every job gets a
/// thread at once, an idle one or a new one; there are never more than the most trials
/// that ran at once.
struct Pool {
    jobs: Mutex<std::sync::mpsc::Sender<Job>>,
    queue: Arc<Mutex<std::sync::mpsc::Receiver<Job>>>,
    idle: Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for Pool {
    fn default() -> Pool {
        let (tx, rx) = std::sync::mpsc::channel();
        Pool {
            jobs: Mutex::new(tx),
            queue: Arc::new(Mutex::new(rx)),
            idle: Arc::default(),
        }
    }
}

impl Pool {
    fn run(&self, job: Job) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        let reserved = self
            .idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |i| i.checked_sub(1))
            .is_ok();
        if !reserved {
            let (queue, idle) = (self.queue.clone(), self.idle.clone());
            std::thread::Builder::new()
                .name("trial".into())
                .spawn(move || {
                    loop {
                        let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(job) = job else { return };
                        job();
                        idle.fetch_add(1, Ordering::AcqRel);
                    }
                })?;
        }
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .map_err(|_| std::io::Error::other("the trial threads are gone"))
    }
}

/// The processes `plan` selects on this node, drawn with its seed, and the other matches
/// (never counted as the chosen ones' descendants); waits up to its limit while nothing
/// matches. More matches than allowed is an error at once: never a guess.
fn select_here(
    plan: &crate::wire::SelectPlan,
    cwd: &std::path::Path,
    stop: &CancellationToken,
) -> Result<crate::AttachTarget, String> {
    use crate::attach::service::{identity, target};
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(plan.seed);
    let wait = plan
        .wait_ns
        .min(u64::try_from(MAX_SELECT_WAIT.as_nanos()).unwrap_or(u64::MAX));
    let deadline = crate::clock::now_ns().saturating_add(wait);
    loop {
        let outcome = plan.selector.resolve(&plan.guard).and_then(|s| {
            let matched: Vec<_> = s.allowed.iter().map(identity).collect();
            s.choose(plan.count, plan.max_targets, |n| rng.random_range(0..n))
                .map(|chosen| (chosen, matched))
        });
        match outcome {
            // The chosen, their spare peers, and the service's cgroup where the selector
            // names one.
            Ok((chosen, matched)) => return Ok(target(&chosen, &matched, &plan.selector, cwd)),
            Err(err @ crate::attach::SelectError::TooMany { .. }) => return Err(err.to_string()),
            Err(err) if crate::clock::now_ns() >= deadline || stop.is_cancelled() => {
                return Err(err.to_string());
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A running trial's place, port and folder on this node, given back when dropped.
struct Held {
    agent: Arc<Agent>,
    id: String,
    port: u16,
    dir: Option<PathBuf>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if self.port != 0 {
            self.agent.ports.give_back(self.port);
        }
        self.agent.running().remove(&self.id);
        self.agent.metrics.running.dec();
        tracing::info!(trial = %self.id, "trial ended");
    }
}

/// Cancels a trial when dropped: the stream holds one, so a closed connection ends it.
struct CancelOnDrop(CancellationToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Runs a trial on this node; its events stream back, one JSON object per line.
#[utoipa::path(post, path = "/v1/trials",
    request_body(content = TrialRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One event per line, the last `done` or `failed`", body = Event, content_type = "application/x-ndjson"),
        (status = 401, description = "No valid bearer token", body = ApiError),
        (status = 403, description = "A command or attached process outside the allow-lists", body = ApiError),
        (status = 408, description = "The body took too long", body = ApiError),
        (status = 409, description = "Another plan format, another node's plan, or a trial id that runs already", body = ApiError),
        (status = 413, description = "The body is too large", body = ApiError),
        (status = 422, description = "Not a trial request", body = ApiError),
        (status = 429, description = "--max-trials run already", body = ApiError),
        (status = 503, description = "No thread for the trial", body = ApiError),
    ))]
async fn start_trial(State(agent): State<Arc<Agent>>, request: Request) -> Response {
    // A body sent slowly holds a connection: it has BODY_TIMEOUT to arrive, whole.
    let read = axum::body::to_bytes(request.into_body(), MAX_BODY);
    let body = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(err)) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body could not be read whole (at most {MAX_BODY} bytes): {err}"
                ),
            );
        }
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body took longer than {BODY_TIMEOUT:?}"),
            );
        }
    };
    let mut req: TrialRequest = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(err) => {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("not a trial request: {err}"),
            );
        }
    };
    // The cheap refusals first: nothing waits for a selection that could not run anyway.
    if let Err((status, message)) = admissible(&agent, &req) {
        tracing::warn!(trial = %req.trial.id, run = %req.run, %message, "refused a trial");
        return refuse(status, message);
    }
    // A trial against running processes: this node selects them, from its own /proc.
    if let Some(select) = req.select.clone() {
        // A waiting selection holds a thread: at most max-trials of them, each bounded in
        // time, and stopped when its controller goes away (this future is dropped) or the
        // agent stops. (A request asking to wait for ever made the agent ignore SIGTERM.)
        let Ok(_permit) = agent.selecting.clone().try_acquire_owned() else {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "--max-trials selections wait already",
            );
        };
        let stop = agent.closing.child_token();
        let _stop_when_dropped = stop.clone().drop_guard();
        let Target::Attach(attach) = &mut req.trial.target else {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "a trial with a selection must have an attach target",
            );
        };
        let cwd = attach.cwd.clone();
        let chosen = tokio::task::spawn_blocking(move || select_here(&select, &cwd, &stop)).await;
        match chosen {
            Ok(Ok(selected)) => *attach = selected,
            Ok(Err(why)) => {
                return refuse(StatusCode::CONFLICT, format!("nothing to attach to: {why}"));
            }
            Err(_) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, "the selection failed"),
        }
    }
    // A service's cgroup is this node's to find (from a selection it made): one named by
    // the request could make every member of any cgroup the trial's, and under
    // `orphans: kill` the node would kill what --allow-attach never named.
    if req.select.is_none()
        && let Target::Attach(attach) = &mut req.trial.target
    {
        attach.cgroup = None;
    }
    if let Err((status, message)) = attach_admissible(&agent, &req) {
        tracing::warn!(trial = %req.trial.id, run = %req.run, %message, "refused a trial");
        return refuse(status, message);
    }
    let cancel = CancellationToken::new();
    {
        let mut running = agent.running();
        if running.len() >= agent.config.max_trials {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{} trial(s) run here already, the most --max-trials allows",
                    running.len()
                ),
            );
        }
        if running.contains_key(&req.trial.id) {
            return refuse(
                StatusCode::CONFLICT,
                format!("trial `{}` runs here already", req.trial.id),
            );
        }
        running.insert(req.trial.id.clone(), cancel.clone());
    }
    agent.metrics.running.inc();
    let port = if req.bind.port { agent.ports.take() } else { 0 };
    let dir = req.bind.dir.then(|| agent.run_dir.join(&req.trial.id));
    if let Some(dir) = &dir {
        let _ = std::fs::create_dir_all(dir);
    }
    // From here the trial's place, port and folder are given back by this guard, whichever
    // way the trial ends: run, refused by the pool, or its thread panicking.
    let held = Held {
        agent: agent.clone(),
        id: req.trial.id.clone(),
        port,
        dir: dir.clone(),
    };
    let filled = req.fill(port, dir.as_deref());
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    let _ = tx.send(Event::Started {
        format: PLAN_FORMAT,
        node: agent.config.node.clone(),
        port,
        dir: dir.as_ref().map(|d| d.display().to_string()),
    });
    tracing::info!(trial = %req.trial.id, run = %req.run, "trial started");
    let worker = {
        let agent = agent.clone();
        let cancel = cancel.clone();
        move || {
            let event = match filled {
                Err(err) => Event::Failed {
                    message: format!("cannot fill the trial's port and folder: {err}"),
                },
                Ok(()) => run_here(&agent, &req, &cancel, &tx),
            };
            // The node is clean before its controller hears the end.
            drop(held);
            let _ = tx.send(event);
        }
    };
    if let Err(err) = agent.pool.run(Box::new(worker)) {
        // The worker, and with it what it held, is gone already.
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot start a trial thread: {err}"),
        );
    }
    let guard = CancelOnDrop(cancel);
    let stream =
        futures_util::stream::unfold((rx, guard, false), |(mut rx, guard, done)| async move {
            if done {
                return None;
            }
            let next = tokio::time::timeout(BEAT, rx.recv()).await;
            let (line, done) = match next {
                Ok(Some(event)) => {
                    let last = matches!(event, Event::Done(_) | Event::Failed { .. });
                    (serde_json::to_vec(&event), last)
                }
                // The worker is gone without a last word: it panicked.
                Ok(None) => (
                    serde_json::to_vec(&Event::Failed {
                        message: "the trial's thread ended without a result".into(),
                    }),
                    true,
                ),
                Err(_) => (serde_json::to_vec(&Event::Beat), false),
            };
            let mut line = line.unwrap_or_default();
            line.push(b'\n');
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(line)),
                (rx, guard, done),
            ))
        });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "cannot answer"))
}

/// Runs a trial and its after-checks on this thread, telling `tx` as it goes.
fn run_here(
    agent: &Agent,
    req: &TrialRequest,
    cancel: &CancellationToken,
    tx: &mpsc::UnboundedSender<Event>,
) -> Event {
    let follower = |p: crate::record::Progress| {
        if let crate::record::Progress::Delivery(d) = &p {
            agent.metrics.delivered(d);
        }
        let _ = tx.send(p.into());
    };
    // Where each log ends before the fault: a service's replacement may write its line
    // before it is found (only a service's recovery reads them).
    let marks = if req.after.service.is_some() {
        crate::attach::service::marks(&req.trial.phases)
    } else {
        Vec::new()
    };
    let observation = crate::trial::run_followed(&req.trial, cancel, &follower);
    let ran = observation.error.is_none() && observation.stop != crate::StopReason::Interrupted;
    let after = if ran && !req.after.is_empty() {
        let trial = match &req.trial.target {
            Target::Attach(hit) => Some(crate::attach::service::AfterTrial {
                id: &req.trial.id,
                phases: &req.trial.phases,
                hit,
                obs: &observation,
                marks: &marks,
            }),
            Target::Run(_) => None,
        };
        crate::after::run(&req.after, trial, cancel)
    } else {
        crate::after::AfterSeen::default()
    };
    Event::Done(Box::new(Done {
        format: PLAN_FORMAT,
        node: agent.config.node.clone(),
        observation,
        after,
    }))
}

/// Where a listener may be bound: any address, but a non-loopback one is worth a warning
/// without TLS (the token then crosses the network in the clear).
pub fn warn_if_exposed(listen: SocketAddr, tls: bool) {
    if !listen.ip().is_loopback() && !tls {
        tracing::warn!(
            %listen,
            "listening beyond loopback without TLS: the token and every plan cross the \
             network in the clear; give --tls-cert and --tls-key"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::valid_id;

    #[test]
    fn a_trial_id_cannot_name_a_folder_outside_the_agents() {
        for good in ["r1a2b3c4-0-1-2", "r1-0-0-r", "A.b_c-9"] {
            assert!(valid_id(good), "{good}");
        }
        let long = "x".repeat(129);
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "/abs",
            "a b",
            "é",
            long.as_str(),
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
