//! The `atropos` command: parses arguments and hands over to the library.

fn main() -> std::process::ExitCode {
    atropos::cli::main()
}
