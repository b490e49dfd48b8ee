//! A pre-scan of a YAML document's text for what the YAML library would pay for first:
//! nesting depth (its scanner is quadratic in the depth of flow brackets) and tags (which it
//! would silently drop: `trials: !!null 5` ran 5 trials).
//!
//! It is a small tokenizer that knows where a node may start, so brackets and `!` inside
//! quoted, plain and block scalars and comments are not counted. It measures depth as the
//! open flow brackets plus the block collections on the indentation stack (compact `- - x`
//! entries included), and counts the values written (a flat list of 500,000 took the
//! library a second before any check of ours). Where it is unsure, it errs towards counting: a misread can reject an
//! odd file, never let a deep one through to the library. The deserializer's own recursion
//! limit stays behind it.

use super::limits::{MAX_DEPTH, MAX_VALUES};

/// Something the pre-scan refuses: where (a byte offset into the document) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Byte offset into the document.
    pub offset: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

/// What the pre-scan saw in a document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scanned {
    /// What it refuses, in order.
    pub findings: Vec<Finding>,
    /// How many `*alias` uses it passed: with none, the document is as big as written.
    pub aliases: usize,
}

/// At most this many findings per document: the first few say enough.
const MAX_FINDINGS: usize = 10;

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    flow: usize,
    block: Vec<isize>,
    findings: Vec<Finding>,
    stopped: bool,
    values: usize,
    aliases: usize,
}

/// Scans `doc` for nesting deeper than [`MAX_DEPTH`], too many values, tags and look-alike
/// spaces and tabs where YAML needs a space.
pub fn scan(doc: &str) -> Scanned {
    let mut s = Scan {
        b: doc.as_bytes(),
        i: 0,
        flow: 0,
        block: Vec::new(),
        findings: Vec::new(),
        stopped: false,
        values: 0,
        aliases: 0,
    };
    s.run();
    Scanned {
        findings: s.findings,
        aliases: s.aliases,
    }
}

/// The findings of [`scan`] alone.
#[cfg(test)]
fn prescan(doc: &str) -> Vec<Finding> {
    scan(doc).findings
}

fn is_blank(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r')
}

fn is_flow_indicator(c: u8) -> bool {
    matches!(c, b',' | b'[' | b']' | b'{' | b'}')
}

/// A Unicode space other than U+0020 that starts at `b[i..]`: its name and length.
fn lookalike_space(b: &[u8], i: usize) -> Option<(&'static str, usize)> {
    let rest = &b[i..];
    let named: [(&[u8], &str); 5] = [
        ("\u{a0}".as_bytes(), "U+00A0 NO-BREAK SPACE"),
        ("\u{3000}".as_bytes(), "U+3000 IDEOGRAPHIC SPACE"),
        ("\u{202f}".as_bytes(), "U+202F NARROW NO-BREAK SPACE"),
        ("\u{2007}".as_bytes(), "U+2007 FIGURE SPACE"),
        ("\u{feff}".as_bytes(), "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
    ];
    named
        .iter()
        .find(|(bytes, _)| rest.starts_with(bytes))
        .map(|(bytes, name)| (*name, bytes.len()))
}

impl Scan<'_> {
    fn peek(&self, at: usize) -> Option<u8> {
        self.b.get(at).copied()
    }

    fn find(&mut self, offset: usize, message: String) {
        let repeated = self.findings.last().is_some_and(|f| f.offset == offset);
        if self.findings.len() < MAX_FINDINGS && !repeated {
            self.findings.push(Finding { offset, message });
        }
    }

    fn depth_check(&mut self) {
        let depth = self.block.len() + self.flow;
        if depth > MAX_DEPTH && !self.stopped {
            self.stopped = true;
            self.find(
                self.i,
                format!(
                    "nesting deeper than {MAX_DEPTH} levels; expected at most {MAX_DEPTH} \
                     (an experiment needs about 8)"
                ),
            );
        }
    }

    /// One more value (scalar, collection or alias) written in the document.
    fn value(&mut self) {
        self.values += 1;
        if self.values > MAX_VALUES && !self.stopped {
            self.stopped = true;
            self.find(
                self.i,
                format!(
                    "more than {MAX_VALUES} values in one document; expected an \
                     experiment of a few hundred"
                ),
            );
        }
    }

    fn skip_to_eol(&mut self) {
        while self.i < self.b.len() && self.b[self.i] != b'\n' {
            self.i += 1;
        }
    }

    fn run(&mut self) {
        // Whether the last token before a line break was a plain scalar, which a more
        // indented line continues.
        let mut in_plain = false;
        let mut node_start = true;
        // A byte order mark may open the stream; it is not indentation.
        if self.b.starts_with("\u{feff}".as_bytes()) {
            self.i = 3;
        }
        while self.i < self.b.len() && !self.stopped {
            // At the start of a line.
            let line_start = self.i;
            if self.b[self.i..].starts_with(b"%TAG") {
                self.find(
                    self.i,
                    "a %TAG directive; tags are not part of the experiment format".into(),
                );
            }
            while self.peek(self.i) == Some(b' ') {
                self.i += 1;
            }
            let indent = (self.i - line_start) as isize;
            let tab = (self.peek(self.i) == Some(b'\t')).then_some(self.i);
            if let Some((name, _)) = lookalike_space(self.b, self.i) {
                self.find(
                    self.i,
                    format!("{name} in the indentation; YAML indents with plain spaces (U+0020)"),
                );
            }
            while self.peek(self.i).is_some_and(is_blank) {
                self.i += 1;
            }
            match self.peek(self.i) {
                None => break,
                Some(b'\n') => {
                    self.i += 1;
                    continue;
                }
                Some(b'#') => {
                    self.skip_to_eol();
                    continue;
                }
                Some(_) => {}
            }
            if self.flow == 0 {
                let continues = in_plain && self.block.last().is_some_and(|top| indent > *top);
                if continues {
                    node_start = false;
                } else {
                    if let Some(at) = tab {
                        self.find(
                            at,
                            "a tab in the indentation; YAML indents with spaces only".into(),
                        );
                    }
                    self.open_block(indent);
                    node_start = true;
                }
            }
            in_plain = false;
            self.line(line_start, &mut node_start, &mut in_plain);
            if self.peek(self.i) == Some(b'\n') {
                self.i += 1;
            }
        }
    }

    /// A block collection entry at `column`: closes deeper ones, opens one there.
    fn open_block(&mut self, column: isize) {
        while self.block.last().is_some_and(|top| *top > column) {
            self.block.pop();
        }
        if self.block.last() != Some(&column) {
            self.block.push(column);
            self.value();
            self.depth_check();
        }
    }

    /// The rest of one line (a quoted scalar may carry it over several).
    fn line(&mut self, mut line_start: usize, node_start: &mut bool, in_plain: &mut bool) {
        while let Some(c) = self.peek(self.i) {
            if self.stopped {
                return;
            }
            match c {
                b'\n' => {
                    // Inside brackets a line break is only white space.
                    if self.flow > 0 {
                        self.i += 1;
                        line_start = self.i;
                        continue;
                    }
                    return;
                }
                b' ' | b'\t' | b'\r' => {
                    self.i += 1;
                    continue;
                }
                _ => *in_plain = false,
            }
            match c {
                b'\n' | b' ' | b'\t' | b'\r' => {}
                b'#' if self.i == line_start || self.b[self.i - 1].is_ascii_whitespace() => {
                    self.skip_to_eol();
                }
                b'[' | b'{' if *node_start || self.flow > 0 => {
                    self.value();
                    self.flow += 1;
                    self.depth_check();
                    self.i += 1;
                    *node_start = true;
                }
                b']' | b'}' if self.flow > 0 => {
                    self.flow -= 1;
                    self.i += 1;
                    *node_start = false;
                }
                b',' if self.flow > 0 => {
                    self.i += 1;
                    *node_start = true;
                }
                b'"' if *node_start => {
                    self.value();
                    self.skip_double();
                    *node_start = false;
                }
                b'\'' if *node_start => {
                    self.value();
                    self.skip_single();
                    *node_start = false;
                }
                b'!' if *node_start => {
                    let at = self.i;
                    self.skip_name();
                    let tag = String::from_utf8_lossy(&self.b[at..self.i]).into_owned();
                    self.find(
                        at,
                        format!(
                            "the tag `{tag}`; tags are not part of the experiment format \
                             (remove it: every field already has a type)"
                        ),
                    );
                    *node_start = true;
                }
                b'&' | b'*' if *node_start => {
                    if c == b'*' {
                        self.value();
                        self.aliases += 1;
                    }
                    self.skip_name();
                    *node_start = c == b'&';
                }
                b'|' | b'>' if *node_start && self.flow == 0 => {
                    self.value();
                    self.skip_block_scalar();
                    *node_start = true;
                    return;
                }
                b'-' | b'?' | b':' if self.indicator_at(self.i) => {
                    if self.flow == 0 && c != b':' {
                        self.open_block((self.i - line_start) as isize);
                    }
                    self.i += 1;
                    if let Some((name, _)) = lookalike_space(self.b, self.i) {
                        self.find(
                            self.i,
                            format!(
                                "{name} after `{}`; YAML needs a plain space (U+0020) there",
                                c as char
                            ),
                        );
                    }
                    *node_start = true;
                }
                _ => {
                    if let Some((name, _)) = lookalike_space(self.b, self.i)
                        && *node_start
                    {
                        self.find(
                            self.i,
                            format!("{name} where YAML needs a plain space (U+0020)"),
                        );
                    }
                    self.value();
                    self.skip_plain();
                    *node_start = false;
                    *in_plain = true;
                }
            }
        }
    }

    /// Whether `- `, `? ` or `: ` (an indicator, not part of a scalar) starts at `at`.
    fn indicator_at(&self, at: usize) -> bool {
        let next = self.peek(at + 1);
        let spaced = next.is_none_or(|n| n.is_ascii_whitespace())
            || lookalike_space(self.b, at + 1).is_some();
        spaced || (self.flow > 0 && self.b[at] == b':' && next.is_some_and(is_flow_indicator))
    }

    fn skip_plain(&mut self) {
        while let Some(c) = self.peek(self.i) {
            let stop = match c {
                b'\n' => true,
                b':' => self.indicator_at(self.i),
                b'#' => self.b[self.i - 1].is_ascii_whitespace(),
                _ => self.flow > 0 && is_flow_indicator(c),
            };
            if stop {
                return;
            }
            self.i += 1;
        }
    }

    /// An anchor, alias or tag name: up to white space or (inside brackets) an indicator.
    fn skip_name(&mut self) {
        self.i += 1;
        while let Some(c) = self.peek(self.i) {
            if c.is_ascii_whitespace() || (self.flow > 0 && is_flow_indicator(c)) {
                return;
            }
            self.i += 1;
        }
    }

    fn skip_double(&mut self) {
        self.i += 1;
        while let Some(c) = self.peek(self.i) {
            self.i += 1;
            match c {
                b'\\' => self.i += 1,
                b'"' => return,
                _ => {}
            }
        }
    }

    fn skip_single(&mut self) {
        self.i += 1;
        while let Some(c) = self.peek(self.i) {
            self.i += 1;
            if c == b'\'' {
                if self.peek(self.i) == Some(b'\'') {
                    self.i += 1;
                } else {
                    return;
                }
            }
        }
    }

    /// `|` or `>` and its content: the lines indented more than the collection it is in.
    /// Leaves `i` at the start of the first line after it.
    fn skip_block_scalar(&mut self) {
        let parent = self.block.last().copied().unwrap_or(-1);
        self.i += 1;
        let mut explicit = None;
        while let Some(c) = self.peek(self.i) {
            match c {
                b'1'..=b'9' => explicit = Some(isize::from(c - b'0')),
                b'+' | b'-' => {}
                _ => break,
            }
            self.i += 1;
        }
        self.skip_to_eol();
        let mut content = explicit.map(|m| parent.max(0) + m);
        while self.i < self.b.len() {
            // At a line start (after the header's line break).
            let start = self.i + 1;
            let mut j = start;
            while self.peek(j) == Some(b' ') {
                j += 1;
            }
            let indent = (j - start) as isize;
            let empty = self.peek(j).is_none_or(|c| c == b'\n' || c == b'\r');
            if !empty {
                let needed = *content.get_or_insert(indent);
                // Counting errs towards ending early: the rest is then scanned as YAML.
                if indent < needed.max(parent + 1) {
                    self.i = start;
                    return;
                }
            }
            self.i = start;
            self.skip_to_eol();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn deep(doc: &str) -> bool {
        prescan(doc)
            .iter()
            .any(|f| f.message.contains("nesting deeper"))
    }

    #[test]
    fn deep_flow_brackets_are_found_early() {
        let doc = format!("a: {}", "[".repeat(150_000));
        let findings = prescan(&doc);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].offset, 3 + MAX_DEPTH - 1, "{findings:?}");
        assert!(!deep(&format!("a: {}x{}", "[".repeat(30), "]".repeat(30))));
        assert!(deep(&format!(
            "a: {}x{}",
            "{a: ".repeat(33),
            "}".repeat(33)
        )));
    }

    #[test]
    fn deep_block_nesting_is_found_by_indentation_and_compact_entries() {
        let indented: String = (0..40)
            .map(|d| format!("{}k{d}:\n", " ".repeat(d)))
            .collect();
        assert!(deep(&indented));
        assert!(deep(&format!("{}x\n", "- ".repeat(40))));
        assert!(!deep(&format!("{}x\n", "- ".repeat(20))));
    }

    #[test]
    fn brackets_in_scalars_and_comments_are_not_nesting() {
        let many = "[".repeat(100);
        for doc in [
            format!("a: \"{many}\"\n"),
            format!("a: '{many}'\n"),
            format!("a: x{many}\n"),
            format!("a: 1 # {many}\n"),
            format!("a: |\n  {many}\n  more\nb: 1\n"),
            format!("a: >-\n    {many}\n\n    {many}\nb: 1\n"),
            format!("a: [ \"{many}\", '{many}' ]\n"),
        ] {
            assert!(prescan(&doc).is_empty(), "{doc}: {:?}", prescan(&doc));
        }
    }

    #[test]
    fn a_flat_list_of_too_many_values_is_found_early() {
        let doc = format!("a: [{}]\n", "a,".repeat(500_000));
        let f = prescan(&doc);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].message.contains("more than 10000 values"), "{f:?}");
        assert!(f[0].offset < 50_000, "{f:?}");
        assert!(prescan(&format!("a: [{}]\n", "a,".repeat(9_000))).is_empty());
    }

    #[test]
    fn a_block_scalar_ends_where_its_indentation_does() {
        let doc = format!("a: |\n  text\n{}x\n", "- ".repeat(40));
        assert!(deep(&doc));
    }

    #[test]
    fn tags_are_found_wherever_a_node_starts() {
        for (doc, tag) in [
            ("trials: !!null 5\n", "!!null"),
            ("a: [ !x 1 ]\n", "!x"),
            ("- !<tag:yaml.org,2002:str> a\n", "!<tag:yaml.org,2002:str>"),
            ("a: &x !!str b\n", "!!str"),
            ("!!map\na: 1\n", "!!map"),
        ] {
            let f = prescan(doc);
            assert_eq!(f.len(), 1, "{doc}: {f:?}");
            assert!(f[0].message.contains(&format!("`{tag}`")), "{doc}: {f:?}");
        }
        assert!(!prescan("%TAG ! tag:x,2000:\n---\na: 1\n").is_empty());
        for doc in [
            "a: hello!\n",
            "a: \"!x\"\n",
            "a: '!x'\n",
            "a: b !x\n",
            "a: |\n  !x\n",
            "# !x\n",
        ] {
            assert!(prescan(doc).is_empty(), "{doc}: {:?}", prescan(doc));
        }
    }

    #[test]
    fn lookalike_spaces_where_yaml_needs_a_space_are_named() {
        let f = prescan("spec:\n\u{3000}\u{3000}trials: 5\n");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].offset, 6);
        assert!(f[0].message.contains("U+3000 IDEOGRAPHIC SPACE"), "{f:?}");
        let f = prescan("trials:\u{a0}5\n");
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].message.contains("U+00A0 NO-BREAK SPACE after `:`"),
            "{f:?}"
        );
        assert!(prescan("a: \"x\u{a0}y\"\n").is_empty());
    }

    #[test]
    fn a_byte_order_mark_is_not_indentation_but_a_tab_is_named() {
        assert!(prescan("\u{feff}a: 1\n").is_empty());
        let f = prescan("a:\n\tb: 1\n");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].offset, 3);
        assert!(f[0].message.contains("a tab in the indentation"), "{f:?}");
        assert!(prescan("a: 1\t# tabs between are fine\n\t\n").is_empty());
    }

    #[test]
    fn a_plain_scalar_continued_on_the_next_line_is_not_read_as_a_quote() {
        let doc = format!("a: hello\n  'world\nb: {}\n", "[".repeat(40));
        assert!(deep(&doc));
    }

    #[test]
    fn aliases_are_counted_and_stars_in_scalars_are_not() {
        assert_eq!(scan("a: &x 1\nb: *x\nc: [*x, *x]\n").aliases, 3);
        assert_eq!(scan("a: \"*x\"\nb: 2*3\nc: |\n  *x\n").aliases, 0);
    }

    #[test]
    fn the_examples_pass() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
        let mut seen = 0;
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "yaml") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    assert!(prescan(&text).is_empty(), "{}", path.display());
                    seen += 1;
                }
            }
        }
        assert!(seen >= 3, "{seen} example files");
    }
}
