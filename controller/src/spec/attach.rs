//! An `attach:` target lowered to the injector's [`Selector`], [`Guard`] and [`Count`].

use std::path::Path;

use atropos_injector::attach::{Count, Guard, Selector};
use regex::Regex;

use super::AttachSpec;

/// The uid `text` names: a number, or a user name looked up in the user database.
pub fn uid_of(text: &str) -> Result<u32, String> {
    if let Ok(uid) = text.parse::<u32>() {
        return Ok(uid);
    }
    match atropos_injector::attach::uid_by_name(text) {
        Ok(Some(uid)) => Ok(uid),
        Ok(None) => Err(format!(
            "no user `{text}` on this machine; expected a user name or a uid"
        )),
        Err(e) => Err(format!("cannot look users up: {e}")),
    }
}

/// `one`, `all`, a number above 0, or a share `1%`..`100%`.
pub fn count_of(text: &str) -> Result<Count, String> {
    let bad = || {
        format!(
            "`{text}` is not a count; expected one, all, a number such as 3, or a share such as 50%"
        )
    };
    match text {
        "one" => Ok(Count::One),
        "all" => Ok(Count::All),
        _ => {
            if let Some(p) = text.strip_suffix('%') {
                match p.parse::<u8>() {
                    Ok(p @ 1..=100) => Ok(Count::Percent(p)),
                    _ => Err(bad()),
                }
            } else {
                match text.parse::<usize>() {
                    Ok(n @ 1..) => Ok(Count::N(n)),
                    _ => Err(bad()),
                }
            }
        }
    }
}

/// What an `attach:` selects with, and how many it takes.
#[derive(Debug, Clone)]
pub struct Lowered {
    /// The criteria.
    pub selector: Selector,
    /// The refusals beyond the fixed ones.
    pub guard: Guard,
    /// How many of the matches to take.
    pub count: Count,
    /// The most that may match.
    pub max_targets: usize,
}

/// Lowers a validated `attach:`; paths are taken from `dir` (the experiment file's folder).
/// `protect`: pids the command line protects too.
pub fn lower(spec: &AttachSpec, dir: &Path, protect: &[i32]) -> Result<Lowered, String> {
    let mut guard = Guard {
        protected: spec.protect.clone(),
        ..Guard::default()
    };
    guard.protected.extend_from_slice(protect);
    for user in &spec.allow_users {
        guard.allowed_users.push(uid_of(&user.0)?);
    }
    Ok(Lowered {
        selector: selector(spec, dir)?,
        guard,
        count: spec
            .count
            .as_ref()
            .map_or(Ok(Count::One), |c| count_of(&c.0))?,
        max_targets: spec.max_targets.map_or(1, |n| n as usize),
    })
}

fn selector(spec: &AttachSpec, dir: &Path) -> Result<Selector, String> {
    let path = |p: &str| crate::plan::resolve(dir, p);
    Ok(Selector {
        pid: spec.pid,
        pidfile: spec.pidfile.as_deref().map(path),
        exe: spec.exe.as_deref().map(path),
        name: spec.name.clone(),
        cmdline: spec
            .cmdline
            .as_deref()
            .map(Regex::new)
            .transpose()
            .map_err(|e| e.to_string())?,
        cgroup: spec.cgroup.clone(),
        systemd_unit: spec.systemd_unit.clone(),
        user: spec.user.as_ref().map(|u| uid_of(&u.0)).transpose()?,
        parent: spec
            .parent
            .as_deref()
            .map(|p| selector(p, dir).map(Box::new))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn counts_are_one_all_a_number_or_a_share() {
        assert_eq!(count_of("one"), Ok(Count::One));
        assert_eq!(count_of("all"), Ok(Count::All));
        assert_eq!(count_of("3"), Ok(Count::N(3)));
        assert_eq!(count_of("50%"), Ok(Count::Percent(50)));
        for bad in ["0", "0%", "101%", "-1", "some", "", "1.5"] {
            assert!(count_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn users_are_uids_or_names_of_this_machine() {
        assert_eq!(uid_of("0"), Ok(0));
        assert_eq!(uid_of("root"), Ok(0));
        let err = uid_of("no-such-user-atropos").unwrap_err();
        assert!(err.contains("no user `no-such-user-atropos`"), "{err}");
    }
}
