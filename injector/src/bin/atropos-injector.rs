//! `atropos-injector`: the node agent. Runs the trials a controller sends, on this node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use atropos_injector::agent::{self, Config, TlsFiles};
use clap::Parser;
use regex::Regex;

/// Runs atropos trials on this node for the controllers that hold its token.
#[derive(Debug, Parser)]
#[command(
    name = "atropos-injector",
    version,
    after_help = "`atropos-injector --openapi` prints the OpenAPI document of its API and exits."
)]
struct Args {
    /// Address to listen on (`127.0.0.1:7979`; port 0 picks one, printed on stdout).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// File holding the bearer token every request must carry (required: the agent spawns
    /// commands and signals processes).
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// TLS certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA whose certificates clients must present (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// This node's name (default: the host name).
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// A label controllers select this node by, `key=value`; repeatable.
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Trials at once; more are refused with 429.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    max_trials: u16,
    /// Commands allowed, as a regex over the arguments joined by spaces; repeatable. None
    /// given: every command.
    #[arg(long, value_name = "REGEX", value_parser = parse_regex)]
    allow_command: Vec<Regex>,
    /// Running processes that may be attached to, as a regex over their command line;
    /// repeatable. None given: no attached trial runs here.
    #[arg(long, value_name = "REGEX", value_parser = parse_regex)]
    allow_attach: Vec<Regex>,
    /// Where the pause journal lives (default: `$ATROPOS_STATE_DIR`, else the XDG state
    /// folder).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Where trial folders are made (default: the temp folder).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
}

/// `atropos-injector --openapi`: prints the API's OpenAPI document and exits.
fn print_openapi() -> bool {
    if std::env::args().nth(1).as_deref() == Some("--openapi") {
        println!("{}", agent::openapi_json());
        return true;
    }
    false
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{text}` is not key=value")),
    }
}

fn parse_regex(text: &str) -> Result<Regex, String> {
    // Anchored: an allow-list entry names whole commands, not any that contains it.
    Regex::new(&format!("^(?:{text})$")).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    atropos_injector::default_sigpipe();
    if print_openapi() {
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ATROPOS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage(message)) => {
            eprintln!("atropos-injector: {message}");
            ExitCode::from(2)
        }
        Err(Fail::Runtime(message)) => {
            eprintln!("atropos-injector: {message}");
            ExitCode::from(1)
        }
    }
}

enum Fail {
    /// Bad input: exit 2, nothing started.
    Usage(String),
    /// Something failed while running: exit 1.
    Runtime(String),
}

fn run(args: Args) -> Result<(), Fail> {
    let token = agent::read_token(&args.token_file).map_err(Fail::Usage)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            agent::server::tls_config(&TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.client_ca.clone(),
            })
            .map_err(Fail::Usage)?,
        ),
        _ => None,
    };
    if let Some(dir) = &args.state_dir {
        atropos_injector::journal::set_dir(dir.clone());
    }
    let node = args.node.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    });
    let labels: BTreeMap<String, String> = args.labels.into_iter().collect();
    let resumed = atropos_injector::init()
        .map_err(|e| Fail::Runtime(format!("cannot prepare to run trials: {e}")))?;
    if resumed > 0 {
        tracing::info!(resumed, "resumed processes a crashed injector had paused");
    }
    if args.allow_command.is_empty() {
        tracing::warn!("no --allow-command: every command a controller sends may run");
    }
    let config = Config {
        node: node.clone(),
        labels,
        token,
        max_trials: usize::from(args.max_trials),
        allow_command: args.allow_command,
        allow_attach: args.allow_attach,
        work_dir: args.work_dir.unwrap_or_else(std::env::temp_dir),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .map_err(|e| Fail::Runtime(format!("cannot start the runtime: {e}")))?;
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| Fail::Usage(format!("--listen {}: {e}", args.listen)))?;
        let local = listener
            .local_addr()
            .map_err(|e| Fail::Runtime(e.to_string()))?;
        agent::warn_if_exposed(local, tls.is_some());
        let agent = agent::Agent::new(config)
            .map_err(|e| Fail::Runtime(format!("cannot make the trial folder: {e}")))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        // The one line on stdout: where to reach this node (port 0 picks one).
        println!("listening on {scheme}://{local} as node {node}");
        tracing::info!(%local, node = %node, "atropos-injector ready");
        let app = agent::router(agent.clone());
        let served = agent::serve(listener, app, tls, shutdown_signal()).await;
        agent.close();
        // The trials cancelled above kill their targets; give them a moment.
        for _ in 0..50 {
            if agent.metrics.running.get() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        served.map_err(|e| Fail::Runtime(e.to_string()))
    });
    // Nothing that still runs on the runtime's threads may keep the agent from stopping.
    runtime.shutdown_timeout(Duration::from_secs(2));
    atropos_injector::shutdown();
    result
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping: cancelling the trials that run");
}
