//! The command line: `atropos run`, `validate`, `schema`, `serve`, `history`, `coverage`.
//!
//! Each subcommand lives in its own file; this one parses arguments, sets up logging and
//! maps results to exit codes: 0 all held, 1 an expectation failed, 2 invalid input,
//! 3 the harness could not run a trial.

mod coverage;
mod history;
mod run;
mod schema;
mod serve;
mod trigger;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code: every expectation held.
pub const EXIT_OK: u8 = 0;
/// Exit code: an expectation failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: invalid input or configuration.
pub const EXIT_INVALID: u8 = 2;
/// Exit code: the harness could not run a trial.
pub const EXIT_HARNESS: u8 = 3;

/// Fault injection at the edges of a process's life.
#[derive(Debug, Parser)]
#[command(name = "atropos", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run experiments: spawn targets, inject faults at their phases, judge what they did.
    Run(run::RunArgs),
    /// Check experiment files without running anything.
    Validate(validate::ValidateArgs),
    /// Print the JSON Schema of the experiment format (for editors).
    Schema,
    /// Serve the dashboard over a results store.
    Serve(serve::ServeArgs),
    /// Show recent runs from a results store.
    History(history::HistoryArgs),
    /// Show the coverage matrix (phases × faults) of each experiment in a results store.
    Coverage(coverage::CoverageArgs),
    /// Ask a controller (`atropos serve --experiments`) to run an experiment now.
    Trigger(trigger::TriggerArgs),
    /// Ask a controller to abort a run it started.
    Abort(trigger::AbortArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ATROPOS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if matches!(
        cli.command,
        Command::Validate(_) | Command::Schema | Command::History(_) | Command::Coverage(_)
    ) {
        atropos_injector::default_sigpipe();
    }
    let code = match cli.command {
        Command::Run(args) => run::main(args),
        Command::Validate(args) => validate::main(&args),
        Command::Schema => schema::main(),
        Command::Serve(args) => serve::main(args),
        Command::History(args) => history::main(args),
        Command::Coverage(args) => coverage::main(args),
        Command::Trigger(args) => trigger::trigger(args),
        Command::Abort(args) => trigger::abort(args),
    };
    ExitCode::from(code)
}

/// A tokio runtime: on this thread alone with `workers` unset, else with that many worker
/// threads. When none can be started, says so and gives the exit code.
fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, u8> {
    let mut builder = match workers {
        None => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    builder.enable_all().build().map_err(|err| {
        eprintln!("error: failed to start the async runtime: {err}");
        EXIT_HARNESS
    })
}
