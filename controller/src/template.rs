//! Per-trial values in experiment strings: `${trial.port}`, `${trial.dir}`, `${trial.id}`.
//!
//! They let parallel trials of one experiment run side by side without sharing a port or a
//! state file.

use std::path::Path;

/// The variables a template may use.
pub const VARIABLES: [&str; 3] = ["trial.port", "trial.dir", "trial.id"];

/// The values for one trial.
#[derive(Debug, Clone)]
pub struct Vars<'a> {
    /// A free loopback TCP port.
    pub port: u16,
    /// A fresh directory for the trial.
    pub dir: &'a Path,
    /// The trial id.
    pub id: &'a str,
}

/// Checks that every `${...}` in `text` names a known variable.
pub fn check(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("`{text}` has an unclosed `${{`"));
        };
        let name = &after[..end];
        if !VARIABLES.contains(&name) {
            let hint = crate::spec::suggest(name, VARIABLES)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(format!(
                "unknown variable `${{{name}}}`{hint}; expected one of ${{trial.port}}, ${{trial.dir}}, ${{trial.id}}"
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// Replaces every variable in `text` with its value for this trial.
pub fn expand(text: &str, vars: &Vars<'_>) -> String {
    if !text.contains("${") {
        return text.to_owned();
    }
    // Planned for an injector node, which gives the port and folder: their holes stay
    // for it to fill (`atropos_injector::wire`).
    let port = if vars.dir == Path::new(atropos_injector::wire::DIR_HOLE) {
        atropos_injector::wire::PORT_HOLE.to_owned()
    } else {
        vars.port.to_string()
    };
    text.replace("${trial.port}", &port)
        .replace("${trial.dir}", &vars.dir.to_string_lossy())
        .replace("${trial.id}", vars.id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn expands_every_variable() {
        let vars = Vars {
            port: 18080,
            dir: Path::new("/tmp/t1"),
            id: "r-1",
        };
        assert_eq!(
            expand("--port=${trial.port} ${trial.dir}/s ${trial.id}", &vars),
            "--port=18080 /tmp/t1/s r-1"
        );
    }

    #[test]
    fn rejects_unknown_variables_with_a_hint() {
        assert!(check("${trial.port} ${trial.dir}").is_ok());
        let err = check("${trial.prot}").unwrap_err();
        assert!(err.contains("did you mean `trial.port`"), "{err}");
        assert!(check("${trial.port").unwrap_err().contains("unclosed"));
    }
}
