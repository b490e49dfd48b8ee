//! Before any trial: can every target's command start at all (and `journalctl`, for a
//! `journald` marker)?
//!
//! A program that is missing, not executable, or a `cwd` that does not exist made every
//! trial an error (162 of them for an unbuilt Go suite, exit 3) and the dry run said
//! nothing. `atropos run` and `--dry-run` check each planned experiment's command here, as
//! the spawn will resolve it ([`crate::plan::argv`]: a program with a `/` from the target's
//! cwd, a bare name on the PATH the target gets), and refuse with the place of `command`
//! and what to do. `atropos validate` does not: it checks the files, and a file may be
//! valid before its program is built.

use std::fmt;
use std::path::{Path, PathBuf};

use super::locate::locate;
use super::problem::Problem;
use crate::plan::{ExperimentPlan, RunPlan};

/// A command that cannot start, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unstartable {
    /// Where and why.
    pub problem: Problem,
    /// What the user can do.
    pub help: String,
}

/// Every command of a run that cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unstartables(pub Vec<Unstartable>);

impl fmt::Display for Unstartables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for u in &self.0 {
            writeln!(f, "{}", u.problem)?;
            writeln!(f, "help: {}", u.help)?;
        }
        let n = self.0.len();
        let noun = if n == 1 { "command" } else { "commands" };
        write!(f, "error: {n} {noun} cannot start; nothing was run")
    }
}

/// Checks the target command (and check commands) of every experiment in `plan`.
pub fn check_targets(plan: &RunPlan) -> Result<(), Unstartables> {
    let found: Vec<Unstartable> = plan.experiments.iter().flat_map(check_experiment).collect();
    if found.is_empty() {
        Ok(())
    } else {
        Err(Unstartables(found))
    }
}

fn check_experiment(exp: &ExperimentPlan) -> Vec<Unstartable> {
    let loaded = &exp.loaded;
    let spec = &loaded.experiment.spec;
    // A command for an injector node starts there, not here: the node checks it.
    if spec.target.node.is_some() || spec.target.nodes.is_some() {
        return Vec::new();
    }
    let at = |field: String, anchor: Option<&str>, key: &str, message: String, help: &str| {
        let spot = locate(&loaded.source, anchor, key, None);
        Unstartable {
            problem: Problem {
                file: loaded.file.clone(),
                line: spot.line + loaded.first_line - 1,
                column: spot.column,
                field,
                message,
            },
            help: help.to_owned(),
        }
    };
    let run = spec.target.run.as_ref();
    if !exp.cwd.is_dir() {
        let written = run.and_then(|r| r.cwd.as_deref()).unwrap_or(".");
        let what = if exp.cwd.exists() {
            "is not a folder"
        } else {
            "does not exist"
        };
        return vec![at(
            "spec.target.run.cwd".into(),
            None,
            "cwd",
            format!(
                "the working directory `{written}` ({}) {what}",
                exp.cwd.display()
            ),
            "check `cwd`: it is taken from the experiment file's folder; create the folder \
             or correct the path",
        )];
    }
    let path_var = run
        .and_then(|r| r.env.get("PATH"))
        .map(|p| p.as_str().into())
        .or_else(|| std::env::var_os("PATH"));
    let mut found = Vec::new();
    let mut command = |field: &str, anchor: Option<&str>, key: &str, argv: &[String]| {
        if let Some(program) = argv.first()
            && let Err((message, help)) = startable(program, &exp.cwd, path_var.as_deref())
        {
            found.push(at(format!("{field}[0]"), anchor, key, message, help));
        }
    };
    if let Some(run) = run {
        command("spec.target.run.command", None, "command", &run.command);
    }
    if let Some(check) = &spec.expect.check {
        command("spec.expect.check.command", None, "check", &check.command);
    }
    for (fault, over) in &spec.overrides {
        if let Some(check) = &over.check {
            command(
                &format!("spec.overrides.{fault}.check.command"),
                None,
                fault,
                &check.command,
            );
        }
    }
    // A journald marker reads the journal with journalctl, spawned by atropos itself.
    for (i, phase) in spec.phases.iter().enumerate() {
        if let super::Marker::Journald(_) = &phase.marker
            && let Err((message, _)) = startable(
                atropos_injector::journald::JOURNALCTL,
                &exp.cwd,
                std::env::var_os("PATH").as_deref(),
            )
        {
            found.push(at(
                format!("spec.phases[{i}].marker.journald"),
                Some(&phase.name),
                "journald",
                format!("a journald marker needs journalctl: {message}"),
                "install systemd's journalctl where the trial runs (Debian: package \
                 `systemd`), or use a `log:` marker on the service's log file",
            ));
        }
    }
    found
}

/// Whether `program` would start from `cwd` with `path_var`: why not, and what to do.
fn startable(
    program: &str,
    cwd: &Path,
    path_var: Option<&std::ffi::OsStr>,
) -> Result<(), (String, &'static str)> {
    if program.is_empty() || program.contains("${") {
        // Known only once the trial has its values (`${trial.dir}/app`); the spawn will say.
        return Ok(());
    }
    if !program.contains('/') && path_var.is_some_and(|p| p.to_string_lossy().contains("${")) {
        // A PATH made per trial (`${trial.dir}/bin:...`) is known only then, too.
        return Ok(());
    }
    use atropos_injector::process::{Unstartable, resolve_program};
    let why = match resolve_program(program, path_var, cwd) {
        Ok(_) => return Ok(()),
        Err(why) => why,
    };
    let build = "build it first, or correct the path: a relative path is taken from the \
                 target's cwd";
    let chmod = "make it executable (chmod +x), or run it through its interpreter, \
                 e.g. [\"sh\", \"script.sh\"]";
    Err(match why {
        Unstartable::Empty => return Ok(()),
        Unstartable::Missing(path) => (
            format!("`{program}` ({}) does not exist", shown(&path).display()),
            build,
        ),
        Unstartable::NotAFile(path) => (
            format!("`{program}` ({}) is not a file", shown(&path).display()),
            chmod,
        ),
        Unstartable::NotExecutable(path) => (
            format!("`{program}` ({}) is not executable", shown(&path).display()),
            chmod,
        ),
        Unstartable::NotOnPath { not_executable, .. } => (
            match not_executable {
                Some(path) => format!(
                    "`{program}` is on the PATH as {} but not executable",
                    path.display()
                ),
                None => format!("`{program}` is not found on the PATH"),
            },
            if cwd.join(program).is_file() {
                "a program in the target's cwd needs a path: write `./NAME`"
            } else {
                "install it or build it first, or give its path (relative to the target's cwd)"
            },
        ),
    })
}

/// `path` without its `.` and `..` steps, for reading (the check used the path as is).
fn shown(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_bare_name_is_looked_up_on_the_path() {
        let cwd = Path::new("/");
        startable("sh", cwd, Some("/usr/bin:/bin".as_ref())).unwrap();
        let (message, help) =
            startable("no-such-program-x", cwd, Some("/bin".as_ref())).unwrap_err();
        assert!(message.contains("not found on the PATH"), "{message}");
        assert!(help.contains("install it or build it"), "{help}");
    }

    #[test]
    fn a_program_beside_the_target_gets_the_dot_slash_hint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app"), "").unwrap();
        let (_, help) = startable("app", dir.path(), Some("/bin".as_ref())).unwrap_err();
        assert!(help.contains("./NAME"), "{help}");
    }

    #[test]
    fn a_path_is_taken_from_cwd_and_must_be_an_executable_file() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("run.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let (message, help) = startable("./run.sh", dir.path(), None).unwrap_err();
        assert!(message.contains("is not executable"), "{message}");
        assert!(help.contains("chmod +x"), "{help}");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        startable("./run.sh", dir.path(), None).unwrap();
        let (message, help) = startable("./bin/none", dir.path(), None).unwrap_err();
        let shown = dir.path().join("bin/none");
        assert!(
            message.contains(&format!("({}) does not exist", shown.display())),
            "{message}"
        );
        assert!(help.contains("build it first"), "{help}");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let (message, _) = startable("./sub", dir.path(), None).unwrap_err();
        assert!(message.contains("is not a file"), "{message}");
    }

    #[test]
    fn a_path_is_shown_without_dot_steps() {
        assert_eq!(
            shown(Path::new("/a/b/./../bin/./app")),
            PathBuf::from("/a/bin/app")
        );
    }

    #[test]
    fn a_templated_program_or_path_is_left_to_the_spawn() {
        startable("${trial.dir}/app", Path::new("/nonexistent"), None).unwrap();
        startable(
            "app",
            Path::new("/"),
            Some("${trial.dir}/bin:/bin".as_ref()),
        )
        .unwrap();
        assert!(startable("app", Path::new("/"), Some("/bin".as_ref())).is_err());
    }
}
