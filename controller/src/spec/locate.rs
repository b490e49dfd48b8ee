//! Finding the line and column of a field in a YAML document after parsing.
//!
//! The YAML library reports locations for syntax and shape errors only. Semantic problems
//! (an unknown phase name, a bad regex) are located by searching the document text for the
//! key, starting at an anchor that identifies the enclosing item (`name: kill-mid-init`).

use regex::Regex;

/// Where in a document a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spot {
    /// 1-based line within the document.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// How much of a value is searched for: enough to find it, and the search stays cheap
/// however long the value is (a regex built from a 250 KB value took over half a second).
const MAX_SEARCHED: usize = 64;

/// The start of `text`, at most [`MAX_SEARCHED`] characters, and whether it was cut.
fn prefix(text: &str) -> (&str, bool) {
    match text.char_indices().nth(MAX_SEARCHED) {
        Some((at, _)) => (&text[..at], true),
        None => (text, false),
    }
}

/// Locates `key:` (preferably followed by `value`) at or after the anchor line in `doc`.
pub fn locate(doc: &str, anchor: Option<&str>, key: &str, value: Option<&str>) -> Spot {
    let start = anchor.and_then(|a| find_name(doc, a)).unwrap_or(0);
    let tail = &doc[start..];
    let key_re = format!(r"(?m)(?:^|[\s{{,\-])({})\s*:", regex::escape(key));
    let found = value
        .and_then(|v| {
            let (v, _) = prefix(v);
            let re = Regex::new(&format!(r#"{key_re}\s*["']?({})"#, regex::escape(v))).ok()?;
            re.captures(tail).and_then(|c| c.get(2)).map(|m| m.start())
        })
        .or_else(|| {
            Regex::new(&key_re)
                .ok()?
                .captures(tail)
                .and_then(|c| c.get(1))
                .map(|m| m.start())
        });
    spot(doc, start + found.unwrap_or(0))
}

/// The byte offset of `name: <name>` in `doc`.
pub fn find_name(doc: &str, name: &str) -> Option<usize> {
    let (name, cut) = prefix(name);
    let end = if cut { "" } else { r#"["']?\s*[,}\n]"# };
    let re = Regex::new(&format!(r#"name\s*:\s*["']?{}{end}"#, regex::escape(name))).ok()?;
    re.find(doc).map(|m| m.start())
}

fn spot(doc: &str, offset: usize) -> Spot {
    let before = &doc[..offset.min(doc.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    Spot { line, column }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    const DOC: &str = "spec:
  faults:
    - { name: a, signal: SIGTERM, at: { phase: ready } }
    - name: b
      signal: SIGKILL
      at: { phase: init.dbb, offset: random }
";

    #[test]
    fn finds_the_value_after_the_anchor() {
        assert_eq!(
            locate(DOC, Some("b"), "phase", Some("init.dbb")),
            Spot {
                line: 6,
                column: 20
            }
        );
        assert_eq!(
            locate(DOC, Some("a"), "phase", Some("ready")),
            Spot {
                line: 3,
                column: 48
            }
        );
    }

    #[test]
    fn finds_a_long_value_by_its_start() {
        let long = "x".repeat(300_000);
        let doc = format!("a: 1\nkind: {long}\n- name: {long}\n  signal: TERM\n");
        let start = std::time::Instant::now();
        assert_eq!(
            locate(&doc, None, "kind", Some(&long)),
            Spot { line: 2, column: 7 }
        );
        assert_eq!(
            locate(&doc, Some(&long), "signal", None),
            Spot { line: 4, column: 3 }
        );
        assert!(start.elapsed() < std::time::Duration::from_millis(100));
    }

    #[test]
    fn falls_back_to_the_key_then_the_anchor() {
        assert_eq!(
            locate(DOC, Some("b"), "signal", None),
            Spot { line: 5, column: 7 }
        );
        assert_eq!(
            locate(DOC, None, "faults", None),
            Spot { line: 2, column: 3 }
        );
    }
}
