//! `atropos validate PATH...`: check experiment files, run nothing.

use std::path::PathBuf;

use super::{EXIT_INVALID, EXIT_OK};

/// Arguments of `atropos validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Experiment files or folders (searched recursively for .yaml/.yml).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub(super) fn main(args: &ValidateArgs) -> u8 {
    match crate::spec::load_all(&args.paths) {
        Ok(loaded) => {
            let files: std::collections::BTreeSet<_> =
                loaded.iter().map(|l| &l.loaded.file).collect();
            println!(
                "ok: {} in {}",
                crate::report::model::plural(loaded.len() as u64, "experiment", "experiments"),
                crate::report::model::plural(files.len() as u64, "file", "files")
            );
            EXIT_OK
        }
        Err(invalid) => {
            eprintln!("{invalid}");
            eprintln!("{}", invalid.summary());
            EXIT_INVALID
        }
    }
}
