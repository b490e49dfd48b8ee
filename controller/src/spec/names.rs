//! The character set of names: experiment, phase and fault names appear in reports, file
//! names, URLs, `--filter` and `experiment/fault` paths, so they are kept to characters that
//! need no quoting anywhere and cannot look like another name.

/// The longest name.
pub const NAME_MAX: usize = 63;

/// What a name may be, for messages and docs.
pub const NAME_RULE: &str = "letters A-Z a-z, digits, `.`, `_` and `-`, starting with a letter \
                             or digit, at most 63 characters";

/// Checks `name` against [`NAME_RULE`].
pub fn check_name(name: &str) -> Result<(), String> {
    let shown = clip(name);
    let Some(first) = name.chars().next() else {
        return Err(format!("an empty name; expected {NAME_RULE}"));
    };
    if let Some((at, c)) = name
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{shown}`: character {} is {}; expected {NAME_RULE}",
            at + 1,
            describe(c)
        ));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "`{shown}` starts with `{first}`; expected {NAME_RULE}"
        ));
    }
    let len = name.chars().count();
    if len > NAME_MAX {
        return Err(format!(
            "`{shown}` is {len} characters long; expected {NAME_RULE}"
        ));
    }
    Ok(())
}

fn clip(name: &str) -> String {
    let mut out: String = name.chars().take(40).collect();
    if name.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// A character as a person can recognise it, naming the ones that look like others.
fn describe(c: char) -> String {
    let name = match c {
        ' ' => "a space",
        '\t' => "a tab",
        '\u{a0}' => "U+00A0 NO-BREAK SPACE",
        '\u{3000}' => "U+3000 IDEOGRAPHIC SPACE",
        '\u{202f}' => "U+202F NARROW NO-BREAK SPACE",
        '\u{2007}' => "U+2007 FIGURE SPACE",
        '\u{200b}' => "U+200B ZERO WIDTH SPACE",
        '\u{feff}' => "U+FEFF ZERO WIDTH NO-BREAK SPACE",
        '\u{2010}' => "U+2010 HYPHEN, which looks like `-`",
        '\u{2011}' => "U+2011 NON-BREAKING HYPHEN, which looks like `-`",
        '\u{2012}' => "U+2012 FIGURE DASH, which looks like `-`",
        '\u{2013}' => "U+2013 EN DASH, which looks like `-`",
        '\u{2014}' => "U+2014 EM DASH, which looks like `-`",
        '\u{2212}' => "U+2212 MINUS SIGN, which looks like `-`",
        c if c.is_control() => return format!("the control character U+{:04X}", u32::from(c)),
        c if c.is_ascii() => return format!("`{c}`"),
        c => return format!("`{c}` (U+{:04X})", u32::from(c)),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn names_of_the_examples_pass() {
        for name in ["kill-mid-init", "init.config", "a", "A_1", "9lives"] {
            check_name(name).unwrap();
        }
    }

    #[test]
    fn lookalike_spaces_and_dashes_are_named() {
        let err = check_name("ready\u{3000}now").unwrap_err();
        assert!(
            err.contains("character 6 is U+3000 IDEOGRAPHIC SPACE"),
            "{err}"
        );
        let err = check_name("ready\u{a0}").unwrap_err();
        assert!(err.contains("U+00A0 NO-BREAK SPACE"), "{err}");
        let err = check_name("kill\u{2013}init").unwrap_err();
        assert!(
            err.contains("U+2013 EN DASH, which looks like `-`"),
            "{err}"
        );
        let err = check_name("café").unwrap_err();
        assert!(err.contains("`é` (U+00E9)"), "{err}");
    }

    #[test]
    fn start_length_and_emptiness_are_checked() {
        assert!(check_name("-x").unwrap_err().contains("starts with `-`"));
        assert!(check_name("").unwrap_err().contains("an empty name"));
        check_name(&"a".repeat(63)).unwrap();
        let err = check_name(&"a".repeat(64)).unwrap_err();
        assert!(
            err.contains("64 characters long") && err.contains('…'),
            "{err}"
        );
    }
}
