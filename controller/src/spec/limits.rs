//! Bounds on an experiment file, checked before the work they guard.
//!
//! An experiment file is a few kilobytes written by a person. Anything far outside that is a
//! mistake or an attack, and the YAML library would spend time and memory on it before any
//! check of ours runs: nested brackets make its scanner quadratic, and aliases replay an
//! anchored value once per use. So, in order:
//! 1. the file's size is checked from its metadata and the read is capped ([`MAX_FILE_BYTES`]);
//! 2. the bytes must be UTF-8 (the first invalid byte is reported with line, column, offset);
//! 3. each document is pre-scanned for nesting depth ([`MAX_DEPTH`]), values written
//!    ([`MAX_VALUES`]) and tags (rejected), see [`super::prescan`];
//! 4. a walk over the parsed events counts the document as aliases expand it
//!    ([`MAX_EXPANDED_BYTES`], [`MAX_VALUES`]), see [`super::expansion`], before anything is
//!    copied into the experiment's types.

use std::io::Read;
use std::path::Path;

use super::problem::Problem;

/// The largest experiment file read: far above any real one (they are a few KiB; 256 KiB
/// holds some 170 experiments), and small enough that the library parses it in well under
/// 100 ms.
pub const MAX_FILE_BYTES: u64 = 256 << 10;
/// The deepest nesting of mappings and sequences; the format itself needs 8.
pub const MAX_DEPTH: usize = 32;
/// The most text (bytes of scalars) a document may hold once its aliases are expanded.
pub const MAX_EXPANDED_BYTES: usize = 1 << 20;
/// The most values (scalars, sequences, mappings) one document may hold: as written (counted
/// by the pre-scan before the library parses it) and once its aliases are expanded. An
/// experiment holds a few hundred.
pub const MAX_VALUES: usize = 10_000;

/// Reads `file` as UTF-8 text of at most [`MAX_FILE_BYTES`].
pub fn read_bounded(file: &Path) -> Result<String, Problem> {
    let whole = |message: String| Problem {
        file: file.to_owned(),
        line: 0,
        column: 0,
        field: String::new(),
        message,
    };
    let handle =
        std::fs::File::open(file).map_err(|e| whole(format!("cannot read the file: {e}")))?;
    let too_big = |size: u64| {
        whole(format!(
            "the file is {size} bytes; expected an experiment file of at most {MAX_FILE_BYTES} \
             bytes (256 KiB)"
        ))
    };
    if let Ok(meta) = handle.metadata()
        && meta.len() > MAX_FILE_BYTES
    {
        return Err(too_big(meta.len()));
    }
    // The cap holds also for a file that grows, or one whose size the metadata does not say.
    let mut bytes = Vec::new();
    handle
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| whole(format!("cannot read the file: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    let text = String::from_utf8(bytes).map_err(|err| {
        let bytes = err.as_bytes();
        let at = err.utf8_error().valid_up_to();
        let valid = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
        let line = valid.matches('\n').count() + 1;
        let column = valid
            .rsplit('\n')
            .next()
            .unwrap_or_default()
            .chars()
            .count()
            + 1;
        let utf16 = if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
            " (it looks like UTF-16: save it as UTF-8)"
        } else {
            ""
        };
        Problem {
            file: file.to_owned(),
            line,
            column,
            field: String::new(),
            message: format!(
                "invalid UTF-8 at byte offset {at} (byte 0x{:02x}){utf16}; expected UTF-8 text",
                bytes[at]
            ),
        }
    })?;
    check_printable(file, &text)?;
    Ok(text)
}

/// Refuses the characters YAML does not allow in a stream (C0 and C1 controls other than
/// tab, line breaks and U+0085; DEL; U+FFFE and U+FFFF) with their place: the library says
/// only "at position N" of the document.
fn check_printable(file: &Path, text: &str) -> Result<(), Problem> {
    let allowed = |c: char| {
        matches!(c, '\t' | '\n' | '\r' | '\u{85}')
            || !(c.is_control() || c == '\u{fffe}' || c == '\u{ffff}')
    };
    let Some((at, c)) = text.char_indices().find(|&(_, c)| !allowed(c)) else {
        return Ok(());
    };
    let before = &text[..at];
    Err(Problem {
        file: file.to_owned(),
        line: before.matches('\n').count() + 1,
        column: before
            .rsplit('\n')
            .next()
            .unwrap_or_default()
            .chars()
            .count()
            + 1,
        field: String::new(),
        message: format!(
            "the control character U+{:04X} at byte offset {at}; expected printable text \
             (write it as an escape such as \\x{:02x} inside double quotes)",
            u32::from(c),
            u32::from(c)
        ),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn write(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.yaml");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn invalid_utf8_names_line_column_and_byte_offset() {
        let (_d, path) = write(b"kind: Experiment\nmetadata: { name: \"caf\xe9\" }\n");
        let p = read_bounded(&path).unwrap_err();
        assert_eq!((p.line, p.column), (2, 23), "{p}");
        assert!(
            p.message.contains("byte offset 39") && p.message.contains("0xe9"),
            "{p}"
        );
    }

    #[test]
    fn a_control_character_is_named_with_its_place() {
        let (_d, path) = write(b"a: 1\nb: x\x07y\n");
        let p = read_bounded(&path).unwrap_err();
        assert_eq!((p.line, p.column), (2, 5), "{p}");
        assert!(p.message.contains("U+0007 at byte offset 9"), "{p}");
        let (_d, path) = write(b"a: 1\r\n\tb: \"\xc2\x85\"\n");
        read_bounded(&path).unwrap();
    }

    #[test]
    fn utf16_gets_a_hint() {
        let (_d, path) = write(b"\xff\xfek\x00");
        let p = read_bounded(&path).unwrap_err();
        assert_eq!((p.line, p.column), (1, 1), "{p}");
        assert!(p.message.contains("UTF-16"), "{p}");
    }

    #[test]
    fn a_file_over_the_limit_is_refused_by_its_size() {
        let (_d, path) = write(&vec![b'#'; MAX_FILE_BYTES as usize + 1]);
        let p = read_bounded(&path).unwrap_err();
        assert!(p.message.contains("262145 bytes"), "{p}");
        let (_d, path) = write(&vec![b'#'; MAX_FILE_BYTES as usize]);
        assert!(read_bounded(&path).is_ok());
    }
}
