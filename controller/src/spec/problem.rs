//! Problems found in experiment files, each with its file, line, column and field.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// 1-based line; 0 when the whole file is at fault.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub column: usize,
    /// The field path, like `spec.faults[1].at.phase`; empty when not known.
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column.max(1))?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", clip(&self.field, MAX_SHOWN))?;
        }
        write!(f, ": {}", clip_values(&self.message))
    }
}

/// The most characters of one value (or field path) shown in a message.
pub const MAX_SHOWN: usize = 80;
/// The most characters of a whole message shown.
const MAX_MESSAGE: usize = 1000;

/// `text` cut to `max` characters, with `…` where it was cut.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// `message` with every value quoted in it (between backticks or double quotes) cut to
/// [`MAX_SHOWN`] characters: a 1 MB value echoed whole helps nobody read the error.
fn clip_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE + 8));
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = &rest[open..=open];
        out.push_str(&rest[..=open]);
        let inner = &rest[open + 1..];
        let Some(close) = inner.find(quote) else {
            rest = inner;
            break;
        };
        out.push_str(&clip(&inner[..close], MAX_SHOWN));
        out.push_str(quote);
        rest = &inner[close + 1..];
    }
    out.push_str(&clip(rest, MAX_MESSAGE));
    clip(&out, MAX_MESSAGE)
}

/// Every problem found in the inputs; nothing was run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid(pub Vec<Problem>);

impl Invalid {
    /// The closing line after the problems: `error: 1 problem found; nothing was run`.
    pub fn summary(&self) -> String {
        format!(
            "error: {} found; nothing was run",
            crate::report::model::plural(self.0.len() as u64, "problem", "problems")
        )
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn long_values_are_cut_where_they_are_shown() {
        let big = "x".repeat(1_000_000);
        let p = Problem {
            file: PathBuf::from("f.yaml"),
            line: 3,
            column: 4,
            field: format!("spec.target.run.env.{big}"),
            message: format!("invalid type: string \"{big}\", expected `{big}` or `a`"),
        };
        let shown = p.to_string();
        assert!(shown.len() < 600, "{} characters", shown.len());
        let cut = format!("{}…", "x".repeat(MAX_SHOWN));
        assert_eq!(shown.matches(&cut).count(), 2, "{shown}");
        assert!(shown.ends_with("…` or `a`"), "{shown}");
        assert!(
            shown.starts_with("f.yaml:3:4: spec.target.run.env.xxx"),
            "{shown}"
        );
    }

    #[test]
    fn short_values_are_shown_whole() {
        let p = Problem {
            file: PathBuf::from("f.yaml"),
            line: 1,
            column: 1,
            field: String::new(),
            message: "unknown phase `redy`; expected \"ready\"".into(),
        };
        assert_eq!(
            p.to_string(),
            "f.yaml:1:1: unknown phase `redy`; expected \"ready\""
        );
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            suggest("sigal", ["name", "signal", "pause"]),
            Some("signal")
        );
        assert_eq!(suggest("expcet", ["expect", "faults"]), Some("expect"));
        assert_eq!(suggest("zzz", ["name", "signal"]), None);
    }
}
