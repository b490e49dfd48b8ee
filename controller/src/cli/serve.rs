//! `atropos serve`: the dashboard over a results store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::{EXIT_INVALID, EXIT_OK};
use crate::dashboard::{AppState, app};
use crate::store::Store;

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
    axum::serve(listener, app(AppState { store }))
        .with_graceful_shutdown(shutdown())
        .await
        .context("the dashboard server failed")?;
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
