//! `atropos trigger NAME` and `atropos abort RUN`: orders to a running controller
//! (`atropos serve --experiments ... --token-file ...`) over its token-protected API.

use std::path::PathBuf;
use std::time::Duration;

use super::{EXIT_HARNESS, EXIT_INVALID, EXIT_OK};
use crate::scheduler::percent_encode;

/// Where a controller is and how to be let in.
#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// The controller's address.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:7878",
        env = "ATROPOS_CONTROLLER"
    )]
    controller: String,
    /// A file holding the controller's token (default: the ATROPOS_TOKEN variable).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Who asks, kept with the run (default: $USER, else `api`).
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
}

/// Arguments of `atropos trigger`.
#[derive(Debug, clap::Args)]
pub struct TriggerArgs {
    /// The experiment to run now (its `metadata.name`).
    experiment: String,
    #[command(flatten)]
    to: ControllerArgs,
}

/// Arguments of `atropos abort`.
#[derive(Debug, clap::Args)]
pub struct AbortArgs {
    /// The run to abort (its id, as `atropos trigger` printed it).
    run: String,
    #[command(flatten)]
    to: ControllerArgs,
}

pub(super) fn trigger(args: TriggerArgs) -> u8 {
    let path = format!("/api/experiments/{}/runs", percent_encode(&args.experiment));
    order(&args.to, &path, "triggered")
}

pub(super) fn abort(args: AbortArgs) -> u8 {
    let path = format!("/api/runs/{}/abort", percent_encode(&args.run));
    order(&args.to, &path, "aborted")
}

fn order(to: &ControllerArgs, path: &str, done: &str) -> u8 {
    let token = match &to.token_file {
        Some(file) => match atropos_injector::agent::read_token(file) {
            Ok(token) => token,
            Err(err) => {
                eprintln!("error: {err}");
                return EXIT_INVALID;
            }
        },
        None => match std::env::var("ATROPOS_TOKEN") {
            Ok(token) if !token.trim().is_empty() => token.trim().to_owned(),
            _ => {
                eprintln!(
                    "error: no token\nhelp: pass --token-file FILE (the file `atropos serve \
                     --token-file` reads), or set ATROPOS_TOKEN"
                );
                return EXIT_INVALID;
            }
        },
    };
    let by = to
        .by
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "api".to_owned());
    let url = format!("{}{path}", to.controller.trim_end_matches('/'));
    let runtime = match super::runtime(Some(1)) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sent = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let response = client
            .post(&url)
            .bearer_auth(&token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({ "by": by }).to_string())
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        Ok::<_, reqwest::Error>((status, body))
    });
    match sent {
        Ok((status, body)) if status.is_success() => {
            let run = body["run"].as_str().unwrap_or("?");
            println!("{done} run {run}");
            EXIT_OK
        }
        Ok((status, body)) => {
            let why = body["error"].as_str().unwrap_or("no reason given");
            eprintln!("error: the controller said {status}: {why}");
            EXIT_INVALID
        }
        Err(err) => {
            eprintln!(
                "error: cannot reach the controller at {}: {err}\nhelp: is `atropos serve` \
                 running there? pass --controller URL",
                to.controller
            );
            EXIT_HARNESS
        }
    }
}
