//! The terminal summary of one experiment: verdict counts, the baseline's phases, the
//! coverage matrix (phases × kinds of fault), its percentage and gaps, injection latency.

use std::fmt::Write;

use super::model::{Counts, human_ns, plural};
use super::tally::ExperimentTally;

/// One cell as the terminal shows it: `·` when empty, `3/3 ok`, `2/3 ✗`.
fn cell_text(c: &Counts) -> String {
    match c.total() {
        0 => "·".to_owned(),
        total if c.fail + c.error == 0 => format!("{}/{total} ok", c.pass),
        total => format!("{}/{total} ✗", c.pass),
    }
}

/// `3 passed, 1 failed, 0 errors`.
pub fn verdicts(c: &Counts) -> String {
    format!(
        "{} passed, {} failed, {}",
        c.pass,
        c.fail,
        plural(c.error, "error", "errors")
    )
}

/// The text summary of one experiment.
pub fn summary(t: &ExperimentTally) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} (seed {}): {}",
        t.info.name,
        t.info.seed,
        verdicts(&t.counts)
    );
    if let Some(b) = &t.baseline {
        let phases: Vec<String> = b
            .observation
            .phases
            .iter()
            .map(|p| match p.entered_ns {
                Some(at) => format!("{} @{}", p.name, human_ns(at)),
                None => format!("{} never", p.name),
            })
            .collect();
        let _ = writeln!(
            out,
            "  baseline: {} — {}",
            b.verdict,
            if phases.is_empty() {
                "no phases".to_owned()
            } else {
                phases.join(", ")
            }
        );
    }
    let cov = t.coverage();
    let row_w = cov
        .rows
        .iter()
        .map(|r| r.phase.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    let col_w: Vec<usize> = cov.kinds.iter().map(|k| k.label().len().max(7)).collect();
    if !cov.kinds.is_empty() {
        let _ = write!(out, "  {:row_w$}", "phase");
        for (k, w) in cov.kinds.iter().zip(&col_w) {
            let _ = write!(out, "  {:>w$}", k.label());
        }
        let _ = writeln!(out);
        for row in &cov.rows {
            if row.implicit && row.cells.iter().all(|c| c.counts.total() == 0) {
                continue;
            }
            let _ = write!(out, "  {:row_w$}", row.phase);
            for (c, w) in row.cells.iter().zip(&col_w) {
                let _ = write!(out, "  {:>w$}", cell_text(&c.counts));
            }
            let _ = writeln!(out);
        }
    }
    for (fault, c) in &t.not_injected {
        let _ = writeln!(
            out,
            "  {fault}: {} not injected (the first step never fired): {}",
            plural(c.total(), "trial", "trials"),
            cell_text(c)
        );
    }
    let percent = match cov.percent() {
        Some(p) => format!(
            "coverage {p}% ({} of {})",
            cov.covered,
            plural(cov.required as u64, "cell", "cells")
        ),
        None => "coverage – (no phase × fault kind to cover)".to_owned(),
    };
    match t.latency.summary() {
        Some(l) => {
            let _ = writeln!(
                out,
                "  {percent} · injection latency p50 {} p99 {} max {} over {}",
                human_ns(l.p50_ns),
                human_ns(l.p99_ns),
                human_ns(l.max_ns),
                plural(l.count, "delivery", "deliveries")
            );
        }
        None => {
            let _ = writeln!(out, "  {percent} · no deliveries");
        }
    }
    for gap in &cov.gaps {
        let _ = writeln!(out, "  gap {gap}");
    }
    out
}
