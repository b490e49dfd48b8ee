//! Progress while a run goes: a bar on a terminal, plain lines without one (CI logs).
//! Either way every failed trial gets a line with its reason as soon as it ends.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};

use super::model::human_ns;
use crate::record::{TrialRecord, Verdict};

/// The progress display of one run.
pub struct Progress {
    bar: Option<ProgressBar>,
    done: usize,
    total: usize,
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn new(total: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} trials {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Progress {
            bar,
            done: 0,
            total,
        }
    }

    /// Announces one line outside the bar.
    pub fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{text}");
            }
        }
    }

    /// Counts a finished trial; prints a line when it did not pass.
    pub fn trial(&mut self, r: &TrialRecord) {
        self.done += 1;
        if r.verdict != Verdict::Pass {
            let tag = if r.verdict == Verdict::Fail {
                "FAIL"
            } else {
                "ERROR"
            };
            let at = match (&r.injected_phase, r.latency_ns, r.delivery) {
                (Some(p), Some(l), Some(d)) => {
                    format!(" [{} in {p}, {d}, latency {}]", signal_of(r), human_ns(l))
                }
                _ => String::new(),
            };
            self.line(&format!(
                "{tag} {}/{}#{}{at}: {}",
                r.experiment,
                r.fault,
                r.index,
                r.reasons.join("; ")
            ));
        }
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.done as u64);
                bar.set_message(format!("{}/{}", r.experiment, r.fault));
            }
            None => {
                if self.done.is_multiple_of(100) || self.done == self.total {
                    self.line(&format!("… {}/{} trials done", self.done, self.total));
                }
            }
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn signal_of(r: &TrialRecord) -> String {
    r.observation
        .deliveries
        .first()
        .map_or_else(String::new, |d| d.signal.to_string())
}
