//! How a duration is written, everywhere: the terminal summary, progress lines, JUnit, the
//! dashboard, the CLI, failure reasons, and the injector's own skipped-step lines. Defined
//! once in the injector, the crate every other one depends on.

pub use atropos_injector::duration::{human_ns, round3};
