//! `atropos serve`: the dashboard over a results store, and with `--experiments` the
//! controller that fires their schedules.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::{EXIT_INVALID, EXIT_OK};
use crate::dashboard::host::{AllowedHosts, HostPattern};
use crate::dashboard::server::{self, Limits};
use crate::dashboard::{AppState, app, host};
use crate::scheduler::control::{self, Control};
use crate::scheduler::daemon::{self, Launcher, Scheduled};
use crate::scheduler::metrics::{self, Metrics};
use crate::scheduler::pages::{self, Held};
use crate::store::Store;
use atropos_injector::CancellationToken;

/// How often runs whose atropos died are looked for.
const REAP_EVERY: Duration = Duration::from_secs(10);

/// Arguments of `atropos serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The results store (made empty if it does not exist yet).
    #[arg(long, value_name = "PATH", default_value = "atropos.db")]
    db: PathBuf,
    /// Address and port to listen on (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Another host name the dashboard answers for, besides `localhost`, `127.0.0.1`,
    /// `[::1]` and the `--listen` address (NAME: on any port; NAME:PORT: on that one).
    /// Requests for any other `Host` get 421. Repeat for more.
    #[arg(long = "allow-host", value_name = "NAME[:PORT]")]
    allow_host: Vec<HostPattern>,
    /// Connections open at once; when all are taken, the oldest idle one is closed to make
    /// room.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_connections: u32,
    /// Time a client has to send a request's head; also how long a kept-alive connection
    /// may stay idle.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    header_timeout: Duration,
    /// Time a page has to be computed before the request is answered with 503.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = positive_duration)]
    request_timeout: Duration,
    /// Time a connection may go without a byte read or written before it is closed.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = positive_duration)]
    idle_timeout: Duration,
    /// Experiment files or folders whose `schedule:` this controller fires (each run is an
    /// `atropos run` it starts, recorded in `--db`). A file with errors is reported and
    /// left out; the valid ones run.
    #[arg(long = "experiments", value_name = "PATH", num_args = 1..)]
    experiments: Vec<PathBuf>,
    /// A file holding the bearer token that `atropos trigger` and `atropos abort` (the API
    /// that starts and aborts runs) must present; without it the controller takes no
    /// orders, and it refuses to listen beyond loopback.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// The experiments of `paths`, each file loaded on its own (an invalid file is reported on
/// stderr and never keeps the others from running).
fn scheduled(paths: &[PathBuf]) -> anyhow::Result<Vec<Scheduled>> {
    let files = crate::spec::collect_files(paths).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = Vec::new();
    for file in files {
        let valid = match crate::spec::load_all(std::slice::from_ref(&file)) {
            Ok(valid) => valid,
            Err(invalid) => {
                eprintln!("{invalid}");
                eprintln!("warning: {} is left out of the schedules", file.display());
                continue;
            }
        };
        for v in valid {
            let spec = &v.loaded.experiment.spec;
            out.push(Scheduled {
                name: v.loaded.experiment.metadata.name.clone(),
                file: file.clone(),
                // Validation checked it: a schedule that does not parse cannot be here.
                schedule: crate::scheduler::Schedule::of(spec).ok().flatten(),
            });
        }
    }
    Ok(out)
}

/// A humantime duration greater than zero (`500ms`, `10s`).
fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be greater than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(err) => Err(format!("{err} (expected a duration such as 500ms or 10s)")),
    }
}

pub(super) fn main(args: ServeArgs) -> u8 {
    let runtime = match super::runtime(Some(2)) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => EXIT_OK,
        Err(err) => {
            eprintln!("error: {err:#}");
            EXIT_INVALID
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let token = args
        .token_file
        .as_deref()
        .map(atropos_injector::agent::read_token)
        .transpose()
        .map_err(|e| anyhow::anyhow!(e))?;
    // The dashboard alone only reads (and answers its allowed host names); a controller
    // that starts runs needs a token off loopback.
    if token.is_none() && !args.experiments.is_empty() && !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "refusing to listen on {} without --token-file: beyond loopback anyone could reach \
             the controller\nhelp: listen on 127.0.0.1, or give a token with --token-file",
            args.listen
        );
    }
    let store = Store::open(&args.db, true).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "failed to listen on {}\nhelp: is another `atropos serve` running? choose another port with --listen",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    println!(
        "atropos dashboard: http://{addr}/ (store {})",
        args.db.display()
    );
    let reaper = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            loop {
                tick.tick().await;
                if let Err(err) = store.mark_dead_runs_interrupted().await {
                    tracing::warn!(error = format!("{err:#}"), "failed to look for dead runs");
                }
            }
        })
    };
    let hosts = AllowedHosts::new(addr, &args.allow_host);
    tracing::info!(
        hosts = %hosts.patterns().iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        "the dashboard answers for these host names"
    );
    let limits = Limits {
        header_timeout: args.header_timeout,
        request_timeout: args.request_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
    };
    let stop = CancellationToken::new();
    let (orders, taken) = tokio::sync::mpsc::channel(16);
    let control = Arc::new(Control {
        orders,
        token: token.clone(),
    });
    let experiments = if args.experiments.is_empty() {
        Vec::new()
    } else {
        scheduled(&args.experiments)?
    };
    let held_experiments: Vec<_> = experiments
        .iter()
        .map(|e| (e.name.clone(), e.schedule.clone()))
        .collect();
    let metrics = Arc::new(Metrics::new(
        store.clone(),
        experiments
            .iter()
            .filter_map(|e| Some((e.name.clone(), e.schedule.clone()?)))
            .collect(),
    ));
    let scheduler = if args.experiments.is_empty() {
        None
    } else {
        // Not on stdout: whoever read the dashboard's address may have closed it.
        tracing::info!(experiments = experiments.len(), "the scheduler starts");
        let launcher = Launcher {
            exe: std::env::current_exe().context("cannot find the atropos binary")?,
            db: args.db.clone(),
        };
        let (store, stop) = (store.clone(), stop.clone());
        Some(tokio::spawn(async move {
            if let Err(err) = daemon::run(store, experiments, launcher, taken, stop).await {
                tracing::error!(error = format!("{err:#}"), "the scheduler stopped");
            }
        }))
    };
    let held = Arc::new(Held {
        store: store.clone(),
        experiments: held_experiments,
    });
    let router = app(AppState { store })
        .merge(metrics::router(metrics))
        .merge(pages::router(held));
    let router = if scheduler.is_some() {
        router.merge(control::router(control))
    } else {
        router
    };
    let router = host::only_for(hosts, router);
    let served = server::serve(listener, router, limits, shutdown()).await;
    // The runs the scheduler started are interrupted and waited for.
    stop.cancel();
    if let Some(scheduler) = scheduler {
        let _ = scheduler.await;
    }
    served.context("the dashboard server failed")?;
    reaper.abort();
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
