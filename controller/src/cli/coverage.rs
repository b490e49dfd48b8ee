//! `atropos coverage [EXPERIMENT]`: the coverage matrix of each experiment, in a terminal.

use std::path::PathBuf;

use super::{EXIT_HARNESS, EXIT_INVALID, EXIT_OK};
use crate::dashboard::format;
use crate::report::model::plural;
use crate::store::Store;
use crate::store::query::{self, Counts, Matrix, NotFound};

/// Arguments of `atropos coverage`.
#[derive(Debug, clap::Args)]
pub struct CoverageArgs {
    /// Only this experiment.
    experiment: Option<String>,
    /// The results store.
    #[arg(long, value_name = "PATH", default_value = "atropos.db")]
    db: PathBuf,
}

pub(super) fn main(args: CoverageArgs) -> u8 {
    block_on(coverage(args))
}

/// Runs a store command on a small runtime; errors print with their causes.
pub(super) fn block_on(fut: impl Future<Output = anyhow::Result<u8>>) -> u8 {
    let runtime = match super::runtime(None) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(fut) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.to_string().starts_with("no results store") {
                EXIT_INVALID
            } else {
                EXIT_HARNESS
            }
        }
    }
}

/// One cell as text: `ok 3`, `FAIL 1/4`, `ERR 1/2`, or `-` when not covered.
fn cell(c: &Counts) -> String {
    if c.total() == 0 {
        "-".to_owned()
    } else if c.fail > 0 {
        format!("FAIL {}/{}", c.fail, c.total())
    } else if c.error > 0 {
        format!("ERR {}/{}", c.error, c.total())
    } else {
        format!("ok {}", c.total())
    }
}

/// The matrix of one experiment as a text table: phases down, kinds of fault across, as in
/// `atropos run`'s summary; then the faults whose first step never fired, and the gaps.
pub fn matrix_text(m: &Matrix) -> String {
    let cov = &m.coverage;
    let mut headers = vec!["PHASE \\ KIND"];
    headers.extend(cov.kinds.iter().map(|k| k.label()));
    let rows: Vec<Vec<String>> = cov
        .rows
        .iter()
        .map(|r| {
            let mut row = vec![if r.implicit {
                format!("({})", r.phase)
            } else {
                r.phase.clone()
            }];
            row.extend(r.cells.iter().map(|c| cell(&c.counts)));
            row
        })
        .collect();
    let mut out = format::table(&headers, &rows);
    for f in &m.not_injected {
        out.push_str(&format!(
            "not injected: {} ({} its first step never fired)\n",
            f.fault,
            cell(&f.counts)
        ));
    }
    for gap in &cov.gaps {
        out.push_str(&format!("gap {gap}\n"));
    }
    out
}

async fn coverage(args: CoverageArgs) -> anyhow::Result<u8> {
    let store = Store::open(&args.db, false).await?;
    let names: Vec<String> = match args.experiment {
        Some(name) => vec![name],
        None => query::overview(&store)
            .await?
            .experiments
            .into_iter()
            .map(|e| e.name)
            .collect(),
    };
    if names.is_empty() {
        println!("no runs in {} yet", args.db.display());
        return Ok(EXIT_OK);
    }
    for (i, name) in names.iter().enumerate() {
        let page = match query::experiment(&store, name, None).await {
            Ok(page) => page,
            Err(err) if err.is::<NotFound>() => {
                eprintln!("error: {err}\nhelp: `atropos history` lists the runs in the store");
                return Ok(EXIT_INVALID);
            }
            Err(err) => return Err(err),
        };
        if i > 0 {
            println!();
        }
        println!(
            "{}: {} of {} covered ({})",
            page.name,
            page.matrix.coverage.covered,
            plural(page.matrix.coverage.required as u64, "cell", "cells"),
            format::percent(page.matrix.percent())
        );
        print!("{}", matrix_text(&page.matrix));
    }
    println!(
        "\ncells: the trials that delivered a kind of fault (column) while the target was in a phase (row)\n\
         ok N = all N passed · FAIL f/N · ERR e/N (harness errors) · - = not covered · (start) and (exited) are not required"
    );
    Ok(EXIT_OK)
}
