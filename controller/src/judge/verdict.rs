//! From expectation results to a verdict.

use crate::record::ExpectationResult;

/// One expectation's result.
pub(super) fn result(
    name: impl Into<String>,
    passed: bool,
    expected: impl Into<String>,
    actual: impl Into<String>,
) -> ExpectationResult {
    ExpectationResult {
        name: name.into(),
        passed,
        expected: expected.into(),
        actual: actual.into(),
    }
}
