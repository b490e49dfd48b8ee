//! Experiment files: the format, loading with located errors, and meaning checks.
//!
//! A file goes through the limits (`limits.rs`: size, UTF-8, printable), then each document
//! through the pre-scan (depth, values, tags, look-alike spaces) and, when it uses aliases,
//! the expansion walk, before the YAML library builds the experiment; then [`validate`]
//! checks meaning, and `atropos run` checks that every target can start
//! ([`check_targets`]).

pub mod attach;
mod expansion;
mod experiment;
mod limits;
mod load;
#[cfg(test)]
mod loader_properties;
mod locate;
mod lowered;
mod names;
mod offset;
mod preflight;
mod prescan;
mod problem;
mod size;
mod timing;
mod validate;

pub use experiment::*;
pub use limits::{MAX_DEPTH, MAX_EXPANDED_BYTES, MAX_FILE_BYTES, MAX_VALUES};
pub(crate) use load::problem_from_yaml;
pub use load::{Loaded, collect_files, is_injectors_file, load_file};
pub use lowered::{LoweredFault, LoweredStep, Valid, When};
pub use names::{NAME_MAX, NAME_RULE, check_name};
pub use offset::Offset;
pub use preflight::{Unstartable, Unstartables, check_targets};
pub use problem::{Invalid, Problem, clip, suggest};
pub use size::ByteSize;
pub use validate::{IMPLICIT_PHASES, check, validate};

/// Loads and validates every experiment under `paths`; all problems at once, or none.
pub fn load_all(paths: &[std::path::PathBuf]) -> Result<Vec<Valid>, Invalid> {
    let files = collect_files(paths)?;
    let mut loaded = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        match load_file(file) {
            Ok(l) if l.is_empty() => problems.push(Problem {
                file: file.clone(),
                line: 0,
                column: 0,
                field: String::new(),
                message: "no experiment in this file; expected a YAML document with \
                          `apiVersion: atropos/v1` and `kind: Experiment` (the file is empty or \
                          holds only comments)"
                    .into(),
            }),
            Ok(mut l) => loaded.append(&mut l),
            Err(Invalid(mut p)) => problems.append(&mut p),
        }
    }
    if files.is_empty() && problems.is_empty() {
        problems.push(Problem {
            file: paths.first().cloned().unwrap_or_default(),
            line: 0,
            column: 0,
            field: String::new(),
            message: "no experiment files found; expected .yaml or .yml files".into(),
        });
    }
    match check(loaded) {
        Ok(valid) if problems.is_empty() => Ok(valid),
        Ok(_) => Err(Invalid(problems)),
        Err(mut more) => {
            problems.append(&mut more);
            Err(Invalid(problems))
        }
    }
}

/// The JSON Schema of one experiment document.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Experiment);
    serde_json::to_value(schema).expect("a schema always serializes")
}
