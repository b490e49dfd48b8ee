//! The injectors a run may send trials to: declared in an `atropos.yaml` next to the
//! experiments (`kind: Injectors`) or given as `atropos run --injector NAME=URL`, and the
//! client that runs a trial on one of them.
//!
//! # Theory of operation
//! - Before the run, every injector an experiment names is asked `GET /v1/info`: a wrong
//!   token, an unreachable node or another plan format stops the run before any trial.
//!   Its `capacity` bounds the trials sent to it at once.
//! - A trial goes to the matching injector with the fewest trials in flight (waiting while
//!   all are full) as one `POST /v1/trials`; its answer is a stream of lines, the last one
//!   the observation. A stream that breaks, ends early, or says nothing for [`SILENCE`]
//!   (the injector beats every 100 ms) is the trial's `error`: "injector lost", with why.
//! - Cancelling the run sends `DELETE /v1/trials/{id}` and reads on, briefly, for the
//!   observation of the interrupted trial; the connection closing would cancel it anyway.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use atropos_injector::CancellationToken;
use atropos_injector::wire::{ApiError, Done, Event, Info, TrialRequest};
use serde::Deserialize;

use crate::spec::{Invalid, Problem};

/// The name of the file that declares injectors, looked for next to the experiments.
pub const FILE_NAME: &str = "atropos.yaml";

/// The longest an injector may say nothing during a trial.
pub const SILENCE: Duration = Duration::from_secs(3);

/// How long a request for `/v1/info` may take.
const INFO_TIMEOUT: Duration = Duration::from_secs(5);

/// How an injector is declared in `atropos.yaml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectorSpec {
    /// Its name (`target.node` names it).
    pub name: String,
    /// Where it listens: `http://host:port` or `https://host:port`.
    pub url: String,
    /// A file holding its bearer token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding its bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Labels `target.nodes` selects it by.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The CA its TLS certificate is signed by (PEM).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The client certificate to present (mutual TLS, PEM).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InjectorsFile {
    kind: String,
    injectors: Vec<InjectorSpec>,
}

/// Reads the `atropos.yaml` at `file`; problems name file, line, column and field.
pub fn load(file: &Path) -> Result<Vec<InjectorSpec>, Invalid> {
    let problem = |line, field: &str, message: String| {
        Invalid(vec![Problem {
            file: file.to_owned(),
            line,
            column: 1,
            field: field.to_owned(),
            message,
        }])
    };
    let text = std::fs::read_to_string(file).map_err(|e| problem(0, "", e.to_string()))?;
    let parsed: InjectorsFile = serde_yaml::from_str(&text)
        .map_err(|err| Invalid(vec![crate::spec::problem_from_yaml(file, 1, &text, &err)]))?;
    let line_of = |needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .map_or(1, |i| i + 1)
    };
    if parsed.kind != "Injectors" {
        return Err(problem(
            line_of("kind"),
            "kind",
            format!("`{}`; expected `Injectors`", parsed.kind),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, inj) in parsed.injectors.iter().enumerate() {
        let at = line_of(&inj.name);
        let field = |f: &str| format!("injectors[{i}].{f}");
        if inj.name.is_empty()
            || !inj
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(problem(
                at,
                &field("name"),
                format!("`{}`; expected letters, digits, `-`, `_` or `.`", inj.name),
            ));
        }
        if !seen.insert(inj.name.clone()) {
            return Err(problem(
                at,
                &field("name"),
                format!("`{}` is declared twice", inj.name),
            ));
        }
        if !(inj.url.starts_with("http://") || inj.url.starts_with("https://")) {
            return Err(problem(
                line_of(&inj.url),
                &field("url"),
                format!(
                    "`{}`; expected http://HOST:PORT or https://HOST:PORT",
                    inj.url
                ),
            ));
        }
        if inj.token_file.is_some() == inj.token_env.is_some() {
            return Err(problem(
                at,
                &field("token_file"),
                "expected exactly one of token_file and token_env".to_owned(),
            ));
        }
        if inj.client_cert.is_some() != inj.client_key.is_some() {
            return Err(problem(
                at,
                &field("client_cert"),
                "expected client_cert and client_key together".to_owned(),
            ));
        }
    }
    // Relative paths are taken from the file's folder.
    let base = file.parent().unwrap_or(Path::new("."));
    Ok(parsed
        .injectors
        .into_iter()
        .map(|mut inj| {
            for path in [
                &mut inj.token_file,
                &mut inj.ca,
                &mut inj.client_cert,
                &mut inj.client_key,
            ]
            .into_iter()
            .flatten()
            {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
            inj
        })
        .collect())
}

/// `NAME=URL` of `--injector`; its token comes from `ATROPOS_INJECTOR_TOKEN`.
pub fn parse_flag(text: &str) -> Result<InjectorSpec, String> {
    let Some((name, url)) = text.split_once('=') else {
        return Err(format!("--injector `{text}`: expected NAME=URL"));
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "--injector `{text}`: the name `{name}`; expected letters, digits, `-`, `_` or `.`"
        ));
    }
    Ok(InjectorSpec {
        name: name.to_owned(),
        url: url.to_owned(),
        token_file: None,
        token_env: Some("ATROPOS_INJECTOR_TOKEN".to_owned()),
        labels: BTreeMap::new(),
        ca: None,
        client_cert: None,
        client_key: None,
    })
}

/// One injector, ready to take trials.
pub struct Node {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    url: String,
    token: String,
    client: reqwest::Client,
    /// Trials it takes at once.
    pub capacity: usize,
}

/// The injectors of a run, with the trials in flight on each.
///
/// (Its `Debug` names the nodes only: never a token.)
pub struct Fleet {
    /// The injectors, in declaration order.
    pub nodes: Vec<Node>,
    /// Per injector: trials in flight, and whether it was lost (no more trials go to it).
    busy: Mutex<Vec<(usize, bool)>>,
    room: Condvar,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.nodes.iter().map(|n| (&n.name, &n.url, n.capacity)))
            .finish()
    }
}

/// Every injector declared for `paths`: the `atropos.yaml` in each folder given (or in the
/// folder of each file given), then `--injector` flags; a name declared twice is an error.
pub fn declared(paths: &[PathBuf], flags: &[String]) -> Result<Vec<InjectorSpec>, String> {
    let mut files: Vec<PathBuf> = Vec::new();
    for path in paths {
        let dir = if path.is_dir() {
            path.clone()
        } else {
            path.parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        };
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let file = dir.join(FILE_NAME);
        if file.is_file() && !files.contains(&file) {
            files.push(file);
        }
    }
    let mut all: Vec<InjectorSpec> = Vec::new();
    for file in &files {
        let specs = load(file).map_err(|invalid| invalid.to_string())?;
        for spec in specs {
            if all.iter().any(|s| s.name == spec.name) {
                return Err(format!(
                    "{}: injector `{}` is declared twice",
                    file.display(),
                    spec.name
                ));
            }
            all.push(spec);
        }
    }
    for flag in flags {
        let spec = parse_flag(flag)?;
        if all.iter().any(|s| s.name == spec.name) {
            return Err(format!(
                "--injector {flag}: injector `{}` is declared twice",
                spec.name
            ));
        }
        all.push(spec);
    }
    Ok(all)
}

fn tls_client(spec: &InjectorSpec) -> Result<reqwest::Client, String> {
    use rustls::pki_types::pem::PemObject;
    // reqwest builds with rustls but no crypto of its own: ring, process-wide (a second
    // install is refused, harmlessly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let builder = reqwest::Client::builder()
        .connect_timeout(INFO_TIMEOUT)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(64);
    if !spec.url.starts_with("https://") {
        return builder.build().map_err(|e| e.to_string());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = spec
        .ca
        .as_ref()
        .ok_or_else(|| format!("injector `{}`: an https URL needs `ca`", spec.name))?;
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|c| c.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", ca.display()))?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (&spec.client_cert, &spec.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|c| c.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            config
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("{}: {e}", cert.display()))?
        }
        _ => config.with_no_client_auth(),
    };
    builder
        .use_preconfigured_tls(config)
        .build()
        .map_err(|e| e.to_string())
}

fn token_of(spec: &InjectorSpec) -> Result<String, String> {
    let token = match (&spec.token_file, &spec.token_env) {
        (Some(file), _) => std::fs::read_to_string(file).map_err(|e| {
            format!(
                "injector `{}`: token_file {}: {e}",
                spec.name,
                file.display()
            )
        })?,
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            format!(
                "injector `{}`: the environment variable {var} holds no token",
                spec.name
            )
        })?,
        (None, None) => String::new(),
    };
    Ok(token.trim().to_owned())
}

impl Fleet {
    /// Connects to each of `specs` and asks for its info; any failure stops here.
    pub async fn connect(specs: &[InjectorSpec]) -> Result<Fleet, String> {
        let mut nodes = Vec::new();
        for spec in specs {
            let client = tls_client(spec)?;
            let token = token_of(spec)?;
            let url = spec.url.trim_end_matches('/').to_owned();
            let answer = client
                .get(format!("{url}/v1/info"))
                .bearer_auth(&token)
                .timeout(INFO_TIMEOUT)
                .send()
                .await
                .map_err(|e| format!("injector `{}` at {url}: {}", spec.name, error_chain(&e)))?;
            let status = answer.status();
            let body = answer.bytes().await.unwrap_or_default();
            if !status.is_success() {
                return Err(format!(
                    "injector `{}` at {url}: {status}: {}",
                    spec.name,
                    api_error(&body)
                ));
            }
            let info: Info = serde_json::from_slice(&body).map_err(|e| {
                format!(
                    "injector `{}` at {url}: not an injector's answer: {e}",
                    spec.name
                )
            })?;
            if info.format != atropos_injector::PLAN_FORMAT {
                return Err(format!(
                    "injector `{}` at {url} runs plan format {} (atropos-injector {}); this atropos sends format {}",
                    spec.name,
                    info.format,
                    info.version,
                    atropos_injector::PLAN_FORMAT
                ));
            }
            let mut labels = info.labels;
            labels.extend(spec.labels.clone());
            nodes.push(Node {
                name: spec.name.clone(),
                labels,
                url,
                token,
                client,
                capacity: info.capacity.max(1),
            });
        }
        let count = nodes.len();
        Ok(Fleet {
            nodes,
            busy: Mutex::new(vec![(0, false); count]),
            room: Condvar::new(),
        })
    }

    /// The injectors an experiment's `target.node`/`target.nodes` names.
    pub fn matching(
        &self,
        node: Option<&str>,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| node.is_none_or(|name| n.name == name))
            .filter(|(_, n)| {
                labels.is_none_or(|want| want.iter().all(|(k, v)| n.labels.get(k) == Some(v)))
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Takes a place on the least busy of `among` that is not lost, waiting while all are
    /// full. `Err(None)` if cancelled meanwhile; `Err(Some(why))` when every one is lost.
    pub fn acquire(
        &self,
        among: &[usize],
        cancel: &CancellationToken,
    ) -> Result<Slot<'_>, Option<String>> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if cancel.is_cancelled() {
                return Err(None);
            }
            if among.iter().all(|&i| busy[i].1) {
                let names: Vec<&str> = among.iter().map(|&i| self.nodes[i].name.as_str()).collect();
                return Err(Some(format!(
                    "every injector this experiment may use was lost during the run: {}",
                    names.join(", ")
                )));
            }
            let free = among
                .iter()
                .copied()
                .filter(|&i| !busy[i].1 && busy[i].0 < self.nodes[i].capacity)
                .min_by_key(|&i| busy[i].0);
            if let Some(i) = free {
                busy[i].0 += 1;
                return Ok(Slot {
                    fleet: self,
                    node: i,
                });
            }
            busy = self
                .room
                .wait_timeout(busy, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A place taken on one injector; given back when dropped.
pub struct Slot<'a> {
    fleet: &'a Fleet,
    /// The injector's index.
    pub node: usize,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut busy = self.fleet.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy[self.node].0 -= 1;
        self.fleet.room.notify_all();
    }
}

impl Slot<'_> {
    /// Marks the injector lost: the run sends it nothing more.
    pub fn lost(&self) {
        let mut busy = self.fleet.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !busy[self.node].1 {
            busy[self.node].1 = true;
            let node = &self.fleet.nodes[self.node].name;
            tracing::warn!(%node, "injector lost; the run goes on without it");
        }
        self.fleet.room.notify_all();
    }
}

/// Why a trial came back without an observation.
#[derive(Debug)]
pub enum Failure {
    /// The injector is gone or broken: no more trials go to it.
    Lost(String),
    /// The injector refused this trial, or the run was interrupted first.
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Lost(why) | Failure::Refused(why) => f.write_str(why),
        }
    }
}

fn api_error(body: &[u8]) -> String {
    serde_json::from_slice::<ApiError>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

impl Node {
    /// Runs `request` on this injector to its end, on this (blocking) thread; `limit` bounds
    /// the whole exchange. `Err` says why no observation came back.
    pub fn run(
        &self,
        request: &TrialRequest,
        limit: Duration,
        cancel: &CancellationToken,
        handle: &tokio::runtime::Handle,
    ) -> Result<Done, Failure> {
        handle.block_on(self.exchange(request, limit, cancel))
    }

    async fn exchange(
        &self,
        request: &TrialRequest,
        limit: Duration,
        cancel: &CancellationToken,
    ) -> Result<Done, Failure> {
        use Failure::{Lost, Refused};
        let name = &self.name;
        let lost = |why: String| Lost(format!("injector `{name}` lost: {why}"));
        let body = serde_json::to_vec(request).map_err(|e| Refused(e.to_string()))?;
        // Full (another controller shares the node): try again for a while.
        let give_up = tokio::time::Instant::now() + SILENCE;
        let mut answer = loop {
            let send = self
                .client
                .post(format!("{}/v1/trials", self.url))
                .bearer_auth(&self.token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send();
            let answer = tokio::select! {
                answer = tokio::time::timeout(SILENCE, send) => match answer {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(err)) => return Err(lost(error_chain(&err))),
                    Err(_) => return Err(Lost(format!(
                        "injector `{name}` timed out: no answer to the trial in {SILENCE:?}"
                    ))),
                },
                () = cancel.cancelled() => {
                    return Err(Refused("interrupted before the injector answered".to_owned()));
                }
            };
            let status = answer.status();
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS
                && tokio::time::Instant::now() < give_up
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            if !status.is_success() {
                let body = answer.bytes().await.unwrap_or_default();
                return Err(Refused(format!(
                    "injector `{name}` refused the trial: {status}: {}",
                    api_error(&body)
                )));
            }
            break answer;
        };
        let deadline = tokio::time::Instant::now() + limit;
        let mut pending: Vec<u8> = Vec::new();
        let mut cancelled = false;
        loop {
            let chunk = tokio::select! {
                chunk = tokio::time::timeout(SILENCE, answer.chunk()) => chunk,
                () = cancel.cancelled(), if !cancelled => {
                    cancelled = true;
                    self.cancel(&request.trial.id).await;
                    continue;
                }
                () = tokio::time::sleep_until(deadline) => {
                    self.cancel(&request.trial.id).await;
                    return Err(Lost(format!(
                        "injector `{name}` timed out: the trial took longer than {limit:?}"
                    )));
                }
            };
            let bytes = match chunk {
                Ok(Ok(Some(bytes))) => bytes,
                Ok(Ok(None)) => return Err(lost("its stream ended before the trial did".into())),
                Ok(Err(err)) => return Err(lost(error_chain(&err))),
                Err(_) => return Err(lost(format!("it said nothing for {SILENCE:?}"))),
            };
            pending.extend_from_slice(&bytes);
            if pending.len() > 64 << 20 {
                return Err(lost("it sent more than 64 MiB for one trial".into()));
            }
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                match serde_json::from_slice::<Event>(&line) {
                    Ok(Event::Done(done)) => return Ok(*done),
                    Ok(Event::Failed { message }) => {
                        return Err(Refused(format!("injector `{name}`: {message}")));
                    }
                    Ok(_) => {}
                    Err(err) => {
                        return Err(lost(format!("it sent a line that is not an event: {err}")));
                    }
                }
            }
        }
    }

    async fn cancel(&self, id: &str) {
        let _ = self
            .client
            .delete(format!("{}/v1/trials/{id}", self.url))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
    }
}

/// `name [k=v,...]` of each, or `none`.
fn listed<'a>(
    nodes: impl Iterator<Item = (&'a str, Option<&'a BTreeMap<String, String>>)>,
) -> String {
    let shown: Vec<String> = nodes
        .map(|(name, labels)| match labels {
            Some(labels) => {
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{name} [{}]", labels.join(","))
            }
            None => name.to_owned(),
        })
        .collect();
    if shown.is_empty() {
        "none".to_owned()
    } else {
        shown.join(", ")
    }
}

/// For a run whose experiments name injector nodes: reads their declarations, connects to
/// those an experiment may use (by name; all when one selects by labels), and gives each
/// experiment its nodes. `None` when no experiment names one. An error says what is wrong
/// (nothing has run): a name declared nowhere, a selection that matches nothing, an
/// injector that refuses or cannot be reached.
pub async fn resolve(
    plan: &mut crate::plan::RunPlan,
    paths: &[PathBuf],
    flags: &[String],
) -> Result<Option<Arc<Fleet>>, String> {
    let placement = |e: &crate::plan::ExperimentPlan| {
        let t = &e.loaded.experiment.spec.target;
        (t.node.clone(), t.nodes.clone())
    };
    if plan
        .experiments
        .iter()
        .all(|e| placement(e) == (None, None))
    {
        return Ok(None);
    }
    let specs = declared(paths, flags)?;
    let no_match = |e: &crate::plan::ExperimentPlan, wanted: String, known: String| {
        format!(
            "{}: experiment `{}`: {wanted} matches no injector; declared: {known}",
            e.loaded.file.display(),
            e.info.name
        )
    };
    // A name declared nowhere is found before connecting to anything.
    for exp in &plan.experiments {
        if let (Some(name), _) = placement(exp)
            && !specs.iter().any(|s| s.name == name)
        {
            let known = listed(specs.iter().map(|s| (s.name.as_str(), None)));
            return Err(no_match(exp, format!("target.node `{name}`"), known));
        }
    }
    let by_labels = plan.experiments.iter().any(|e| placement(e).1.is_some());
    let named: Vec<String> = plan
        .experiments
        .iter()
        .filter_map(|e| placement(e).0)
        .collect();
    let needed: Vec<InjectorSpec> = specs
        .into_iter()
        .filter(|s| by_labels || named.contains(&s.name))
        .collect();
    let fleet = Fleet::connect(&needed).await.map_err(|err| {
        format!("error: {err}\nhelp: nothing ran; check the injector's URL, token and certificates")
    })?;
    for exp in &mut plan.experiments {
        let (node, labels) = placement(exp);
        if node.is_none() && labels.is_none() {
            continue;
        }
        exp.nodes = fleet.matching(node.as_deref(), labels.as_ref());
        if exp.nodes.is_empty() {
            let wanted = match (&node, &labels) {
                (Some(name), _) => format!("target.node `{name}`"),
                (None, Some(labels)) => format!(
                    "target.nodes {}",
                    listed([("", Some(labels))].into_iter()).trim()
                ),
                (None, None) => String::new(),
            };
            let known = listed(
                fleet
                    .nodes
                    .iter()
                    .map(|n| (n.name.as_str(), Some(&n.labels))),
            );
            return Err(no_match(exp, wanted, known));
        }
    }
    Ok(Some(Arc::new(fleet)))
}
