//! Reading experiment files: folders recursively, several documents per file (`---`, with
//! `%YAML` directives), errors with file, line, column, the field, and a suggestion for
//! misspelt keys. Every bound on a hostile file is checked before the work it guards: see
//! [`super::limits`].

use std::path::{Path, PathBuf};

use regex::Regex;

use super::expansion::check_expansion;
use super::experiment::Experiment;
use super::limits::read_bounded;
use super::prescan::scan;
use super::problem::{Invalid, Problem, suggest};

/// One experiment and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The file it was read from.
    pub file: PathBuf,
    /// The folder relative paths in it are taken from.
    pub dir: PathBuf,
    /// The text of its YAML document.
    pub source: String,
    /// The line of the file its document starts on (1-based).
    pub first_line: usize,
    /// The parsed experiment.
    pub experiment: Experiment,
}

/// Every `.yaml`/`.yml` file under `paths` (folders recursively, sorted).
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Invalid> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut files);
        } else if path.is_file() {
            if !is_injectors_file(path) {
                files.push(path.clone());
            }
        } else {
            problems.push(Problem {
                file: path.clone(),
                line: 0,
                column: 0,
                field: String::new(),
                message: "no such file or folder; expected an experiment file (.yaml) or a folder of them".into(),
            });
        }
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(Invalid(problems))
    }
}

/// Whether `path` is the `atropos.yaml` that declares injectors, not an experiment.
pub fn is_injectors_file(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n == crate::dispatch::FILE_NAME || n == "atropos.yml")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
            && !is_injectors_file(&path)
        {
            out.push(path);
        }
    }
}

/// Parses every experiment in `file`; problems carry file:line:col. A file with no
/// document in it (empty, or only comments) gives no experiment and no problem: the caller
/// decides whether that is an error.
pub fn load_file(file: &Path) -> Result<Vec<Loaded>, Invalid> {
    let text = read_bounded(file).map_err(|p| Invalid(vec![p]))?;
    let dir = file
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let mut loaded = Vec::new();
    let mut problems = Vec::new();
    for Document {
        first_line,
        text: doc,
        has_content,
    } in split_documents(&text)
    {
        if !has_content {
            continue;
        }
        let scanned = scan(&doc);
        if !scanned.findings.is_empty() {
            problems.extend(scanned.findings.into_iter().map(|f| {
                let (line, column) = line_column(&doc, f.offset);
                Problem {
                    file: file.to_owned(),
                    line: line + first_line - 1,
                    column,
                    field: String::new(),
                    message: f.message,
                }
            }));
            continue;
        }
        // With aliases, counted first, so that they cannot make the real parse expensive;
        // without, the pre-scan has bounded the document as written.
        let expanded = if scanned.aliases > 0 {
            check_expansion(&doc)
        } else {
            Ok(())
        };
        let parsed = expanded.and_then(|()| {
            serde_yaml::from_str::<Experiment>(&doc).map_err(|err| {
                // The library reports a syntax error only once the experiment's shape is
                // complete, so a broken indentation showed as "missing field"; the walk
                // goes to the end and finds it. Only for documents small enough that a
                // second parse stays cheap (with aliases, the walk has run already).
                let unwalked = scanned.aliases == 0 && doc.len() <= MAX_REWALKED;
                match unwalked.then(|| check_expansion(&doc)) {
                    Some(Err(syntax)) => syntax,
                    _ => err,
                }
            })
        });
        match parsed {
            Ok(experiment) => loaded.push(Loaded {
                file: file.to_owned(),
                dir: dir.clone(),
                source: doc,
                first_line,
                experiment,
            }),
            Err(err) => problems.push(problem_from_yaml(file, first_line, &doc, &err)),
        }
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(Invalid(problems))
    }
}

/// The largest document walked again to find a syntax error behind a shape error.
const MAX_REWALKED: usize = 64 << 10;

/// One document of a file.
struct Document {
    /// The 1-based line of the file it starts on.
    first_line: usize,
    /// Its text.
    text: String,
    /// Whether it holds a YAML node (not only blank lines, comments, directives, markers).
    has_content: bool,
}

/// Whether `line` holds something other than blanks and a comment.
fn has_node(line: &[u8]) -> bool {
    let first = line.iter().find(|b| !matches!(b, b' ' | b'\t'));
    !matches!(first, None | Some(b'\n' | b'\r' | b'#'))
}

/// Whether `line` is the document marker `marker` (`---` or `...`), alone or before a comment.
fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker).is_some_and(|rest| {
        let rest = rest.trim_start();
        rest.is_empty() || (rest.starts_with('#') && rest.len() < line.len() - marker.len())
    })
}

/// The 1-based line and column (in characters) of byte `offset` in `doc`.
fn line_column(doc: &str, offset: usize) -> (usize, usize) {
    let mut at = offset.min(doc.len());
    while !doc.is_char_boundary(at) {
        at -= 1;
    }
    let before = &doc[..at];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, column)
}

/// Splits a YAML stream at `---` lines (and after `...` lines). Directives (`%YAML 1.1`)
/// belong to the document after them, which then keeps its `---` line, as YAML requires
/// after a directive.
///
/// One pass over the bytes, the documents sliced out at the end: the first version asked of
/// the whole document so far, for every line, whether it held anything, and a file of
/// 260,000 blank lines never finished.
fn split_documents(text: &str) -> Vec<Document> {
    let bytes = text.as_bytes();
    let mut docs = Vec::new();
    let mut doc = |first_line, from: usize, to: usize, has_content| {
        docs.push(Document {
            first_line,
            text: text[from..to].to_owned(),
            has_content,
        });
    };
    let (mut from, mut at, mut line_no) = (0, 0, 1);
    let mut start = 1;
    let mut directives = false;
    let mut has_content = false;
    while at < bytes.len() {
        // `str::find` of a char searches with memchr (it is at a line start: a boundary).
        let end = text[at..].find('\n').map_or(bytes.len(), |nl| at + nl + 1);
        let line = || text[at..end].trim_end_matches(['\n', '\r']);
        match bytes[at] {
            b'-' if is_marker(line(), "---") => {
                if directives && !has_content {
                    // The `---` after directives stays in their document.
                    directives = false;
                } else {
                    doc(start, from, at, has_content);
                    (from, start, has_content) = (end, line_no + 1, false);
                }
            }
            b'.' if is_marker(line(), "...") => {
                doc(start, from, at, has_content);
                (from, start, has_content, directives) = (end, line_no + 1, false, false);
            }
            // Comments before a directive stay with it; their lines still count.
            b'%' if !has_content => directives = true,
            _ => has_content = has_content || has_node(&bytes[at..end]),
        }
        at = end;
        line_no += 1;
    }
    doc(start, from, bytes.len(), has_content);
    docs
}

pub(crate) fn problem_from_yaml(
    file: &Path,
    first_line: usize,
    doc: &str,
    err: &serde_yaml::Error,
) -> Problem {
    // The reader's errors ("at position N", no line) cannot happen: read_bounded refused
    // what they are about (invalid UTF-8, control characters) with its place already.
    let (mut line, mut column) = err.location().map_or((1, 1), |l| (l.line(), l.column()));
    // The library puts a duplicate key at its mapping's start; point at the second one.
    if let Some(key) = Regex::new(r"duplicate field `([^`]+)`")
        .ok()
        .and_then(|re| Some(re.captures(&err.to_string())?.get(1)?.as_str().to_owned()))
        && let Some(at) = second_key(doc, line, &key)
    {
        (line, column) = line_column(doc, at);
    }
    let line = line + first_line - 1;
    // The location goes in front, once: the library also writes it (and that of the
    // enclosing collection) into the message, counted from the document, not the file.
    let message = Regex::new(r" at line \d+ column \d+")
        .map(|re| re.replace_all(&err.to_string(), "").into_owned())
        .unwrap_or_else(|_| err.to_string());
    let (field, mut message) = match message.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') && !path.is_empty() => {
            (path.to_owned(), rest.to_owned())
        }
        _ => (String::new(), message),
    };
    if let Some(hint) = typo_hint(&message) {
        message.push_str(&hint);
    }
    Problem {
        file: file.to_owned(),
        line,
        column,
        field,
        message,
    }
}

/// The byte offset of the second `key:` at or after 1-based `line` of `doc`.
fn second_key(doc: &str, line: usize, key: &str) -> Option<usize> {
    let start: usize = doc.split_inclusive('\n').take(line - 1).map(str::len).sum();
    let re = Regex::new(&format!(
        r#"(?m)(?:^|[\s{{,])["']?({})["']?\s*:"#,
        regex::escape(key)
    ))
    .ok()?;
    re.captures_iter(&doc[start..])
        .nth(1)
        .and_then(|c| c.get(1))
        .map(|m| start + m.start())
}

/// `; did you mean `signal`?` for serde's unknown field/variant errors.
fn typo_hint(message: &str) -> Option<String> {
    let re = Regex::new(r"unknown (?:field|variant) `([^`]*)`, expected (?:one of )?(.*)").ok()?;
    let caps = re.captures(message)?;
    let word = caps.get(1)?.as_str();
    let expected: Vec<&str> = caps
        .get(2)?
        .as_str()
        .split('`')
        .skip(1)
        .step_by(2)
        .collect();
    suggest(word, expected.iter().copied()).map(|s| format!("; did you mean `{s}`?"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.yaml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    const GOOD: &str = "apiVersion: atropos/v1
kind: Experiment
metadata: { name: a }
spec:
  target: { run: { command: [\"true\"] } }
  faults:
    - { name: f, signal: SIGTERM, at: { phase: ready } }
";

    #[test]
    fn misspelt_key_names_line_column_field_and_suggestion() {
        let text = GOOD.replace("signal: SIGTERM", "sigal: SIGTERM");
        let (_d, path) = write(&text);
        let err = load_file(&path).unwrap_err();
        let p = &err.0[0];
        assert_eq!((p.line, p.column), (7, 18), "{p}");
        assert!(p.message.contains("unknown field `sigal`"), "{p}");
        assert!(p.message.ends_with("did you mean `signal`?"), "{p}");
        assert!(p.field.starts_with("spec.faults[0]"), "{p}");
    }

    #[test]
    fn a_syntax_error_says_its_place_once_counted_from_the_file_start() {
        let text = format!("{GOOD}---\n{}", GOOD.replace("  faults:", " faults:"));
        let (_d, path) = write(&text);
        let err = load_file(&path).unwrap_err();
        let p = &err.0[0];
        assert_eq!(p.line, 14, "{p}");
        assert!(!p.message.contains(" at line "), "{p}");
        assert!(p.message.contains("while parsing a block mapping"), "{p}");
    }

    #[test]
    fn a_duplicate_key_is_shown_where_it_repeats() {
        let text = format!("{GOOD}---\n{GOOD}  trials: 2\n  seed: 1\n  trials: 3\n");
        let (_d, path) = write(&text);
        let err = load_file(&path).unwrap_err();
        let p = &err.0[0];
        assert_eq!((p.line, p.column), (18, 3), "{p}");
        assert!(p.message.contains("duplicate field `trials`"), "{p}");
    }

    #[test]
    fn second_document_errors_count_lines_from_the_file_start() {
        let text = format!("{GOOD}---\n{}", GOOD.replace("SIGTERM", "SIGTREM"));
        let (_d, path) = write(&text);
        let err = load_file(&path).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].line, 15, "{}", err.0[0]);
        assert!(err.0[0].message.contains("SIGTREM"), "{}", err.0[0]);
    }

    #[test]
    fn loads_several_documents() {
        let text = format!("{GOOD}---\n{}", GOOD.replace("name: a", "name: b"));
        let (_d, path) = write(&text);
        let loaded = load_file(&path).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[1].first_line, 9);
        assert_eq!(loaded[1].experiment.metadata.name, "b");
    }

    #[test]
    fn a_yaml_directive_header_is_accepted() {
        let (_d, path) = write(&format!("# an experiment\n%YAML 1.1\n---\n{GOOD}"));
        let loaded = load_file(&path).unwrap();
        assert_eq!(loaded.len(), 1);
        let text = format!("%YAML 1.1\n---\n{GOOD}---\n{}", GOOD.replace("sigal", "x"));
        let (_d, path) = write(&text.replace("SIGTERM", "SIGTREM"));
        let err = load_file(&path).unwrap_err();
        assert_eq!(
            err.0[0].line, 9,
            "lines still count from the file start: {}",
            err.0[0]
        );
    }

    #[test]
    fn a_tag_is_an_error_at_its_line_and_column() {
        let (_d, path) = write(&format!("{GOOD}  trials: !!null 5\n"));
        let err = load_file(&path).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        let p = &err.0[0];
        assert_eq!((p.line, p.column), (8, 11), "{p}");
        assert!(p.message.contains("the tag `!!null`"), "{p}");
    }

    #[test]
    fn an_empty_or_comment_only_file_holds_no_experiment() {
        for text in [
            "",
            "\n\n",
            "# nothing yet\n---\n# still nothing\n",
            "---\n...\n",
        ] {
            let (_d, path) = write(text);
            assert!(load_file(&path).unwrap().is_empty(), "{text:?}");
        }
    }

    #[test]
    fn a_lookalike_space_in_a_name_is_named() {
        let (_d, path) = write(&GOOD.replace("name: f,", "name: \"f\u{3000}g\","));
        let loaded = load_file(&path).unwrap();
        let problems = crate::spec::validate(&loaded);
        let named: Vec<_> = problems
            .iter()
            .filter(|p| p.field == "spec.faults[0].name")
            .collect();
        assert_eq!(named.len(), 1, "{problems:?}");
        assert!(
            named[0]
                .message
                .contains("character 2 is U+3000 IDEOGRAPHIC SPACE"),
            "{}",
            named[0]
        );
        assert_eq!((named[0].line, named[0].column), (7, 16), "{}", named[0]);
    }

    #[test]
    fn aliases_that_expand_past_the_budget_are_refused_before_the_parse() {
        // The key is unknown too, but the budget is checked before the parse would say so.
        let big = "x".repeat(100_000);
        let text = format!("{GOOD}x: [&big {big}, {}]\n", "*big, ".repeat(20));
        let (_d, path) = write(&text);
        let err = load_file(&path).unwrap_err();
        assert!(err.0[0].message.contains("KiB of text"), "{}", err.0[0]);
    }
}
