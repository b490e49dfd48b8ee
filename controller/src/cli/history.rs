//! `atropos history [EXPERIMENT]`: recent runs from the results store, in a terminal.

use std::path::PathBuf;

use super::{EXIT_INVALID, EXIT_OK};
use crate::dashboard::format;
use crate::report::model::plural;
use crate::store::Store;
use crate::store::query::{self, NotFound};

/// Arguments of `atropos history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only the runs of this experiment, with its pass rate and coverage.
    experiment: Option<String>,
    /// The results store.
    #[arg(long, value_name = "PATH", default_value = "atropos.db")]
    db: PathBuf,
    /// How many runs to show, newest first.
    #[arg(long, short = 'n', default_value_t = 20)]
    limit: u32,
}

pub(super) fn main(args: HistoryArgs) -> u8 {
    super::coverage::block_on(history(args))
}

fn verdict(counts: &query::Counts, status: &str) -> String {
    counts.run_verdict(status).to_uppercase()
}

async fn history(args: HistoryArgs) -> anyhow::Result<u8> {
    let store = Store::open(&args.db, false).await?;
    let Some(name) = args.experiment else {
        let list = query::runs(&store, None, args.limit).await?;
        if list.runs.is_empty() {
            println!("no runs in {} yet", args.db.display());
            return Ok(EXIT_OK);
        }
        let rows: Vec<Vec<String>> = list
            .runs
            .iter()
            .map(|r| {
                vec![
                    format::time(r.started_at),
                    r.uid.clone(),
                    verdict(&r.counts, &r.status),
                    r.status.clone(),
                    r.counts.pass.to_string(),
                    r.counts.fail.to_string(),
                    r.counts.error.to_string(),
                    r.planned.to_string(),
                    format::span(r.started_at, r.ended_at),
                    r.trigger.clone(),
                    r.ci_commit
                        .as_deref()
                        .map(format::short)
                        .unwrap_or("-")
                        .to_owned(),
                    r.experiments.join(","),
                ]
            })
            .collect();
        print!(
            "{}",
            format::table(
                &[
                    "STARTED (UTC)",
                    "RUN",
                    "VERDICT",
                    "STATUS",
                    "PASS",
                    "FAIL",
                    "ERROR",
                    "PLANNED",
                    "TOOK",
                    "TRIGGER",
                    "COMMIT",
                    "EXPERIMENTS",
                ],
                &rows
            )
        );
        return Ok(EXIT_OK);
    };
    let page = match query::experiment(&store, &name, None).await {
        Ok(page) => page,
        Err(err) if err.is::<NotFound>() => {
            let known = query::overview(&store).await?;
            let names: Vec<&str> = known.experiments.iter().map(|e| e.name.as_str()).collect();
            eprintln!("error: {err}");
            eprintln!("help: the store has: {}", names.join(", "));
            return Ok(EXIT_INVALID);
        }
        Err(err) => return Err(err),
    };
    let mut recent = query::Counts::default();
    for r in page.runs.iter().take(30) {
        recent.merge(r.point.counts);
    }
    println!(
        "{}: {} · pass rate {} over its last {} · coverage {}/{} ({})",
        page.name,
        plural(page.versions.len() as u64, "version", "versions"),
        format::percent(recent.pass_percent()),
        plural(page.runs.len().min(30) as u64, "run", "runs"),
        page.matrix.coverage.covered,
        plural(page.matrix.coverage.required as u64, "cell", "cells"),
        format::percent(page.matrix.percent()),
    );
    let rows: Vec<Vec<String>> = page
        .runs
        .iter()
        .take(args.limit as usize)
        .map(|r| {
            vec![
                format::time(r.point.started_at),
                r.point.run.clone(),
                verdict(&r.point.counts, &r.point.status),
                r.point.status.clone(),
                r.point.counts.pass.to_string(),
                r.point.counts.fail.to_string(),
                r.point.counts.error.to_string(),
                r.planned.to_string(),
                format::percent(r.point.counts.pass_percent()),
                r.trigger.clone(),
                r.commit
                    .as_deref()
                    .map(format::short)
                    .unwrap_or("-")
                    .to_owned(),
                format::short(&r.content_hash).to_owned(),
            ]
        })
        .collect();
    print!(
        "{}",
        format::table(
            &[
                "STARTED (UTC)",
                "RUN",
                "VERDICT",
                "STATUS",
                "PASS",
                "FAIL",
                "ERROR",
                "PLANNED",
                "RATE",
                "TRIGGER",
                "COMMIT",
                "VERSION",
            ],
            &rows
        )
    );
    Ok(EXIT_OK)
}
