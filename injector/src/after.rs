//! What runs after a target ended, on the node that ran it: the files it left, a running
//! service's recovery by its supervisor, the check command, and a spawned target's recovery
//! restart, in that order (files describe the state the fault left, before anything else
//! touches it; the user's "nothing lost" check runs once the service is back).
//!
//! The controller plans these ([`AfterPlan`]) and judges what they found ([`AfterSeen`]);
//! whether the trial ran in-process or on a remote injector, this module is what runs them.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::attach::service::{AfterTrial, Replacement, ServiceRecoveryPlan};
use crate::plan::TrialPlan;
use crate::record::Observation;

/// What to do once the target ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AfterPlan {
    /// Files that must exist, or must not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileProbe>,
    /// The check command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckPlan>,
    /// The recovery restart (a spawned target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryPlan>,
    /// A running service's recovery by a replacement process (an attached target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRecoveryPlan>,
}

impl AfterPlan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
            && self.check.is_none()
            && self.recovery.is_none()
            && self.service.is_none()
    }
}

/// A file expectation to look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileProbe {
    /// The path as the experiment wrote it, templates expanded (what reports show).
    pub path: String,
    /// Where it is looked for (`path` taken from the target's working directory).
    #[schema(value_type = String)]
    pub resolved: PathBuf,
    /// Whether it must exist (else: must not).
    pub must_exist: bool,
}

/// A check command to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckPlan {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Working directory.
    #[schema(value_type = String)]
    pub cwd: PathBuf,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Its time limit.
    #[serde(with = "crate::plan::nanos")]
    #[schema(value_type = u64)]
    pub limit: Duration,
}

/// The recovery restart: the target spawned again, until it reaches a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoveryPlan {
    /// The phase it must reach.
    pub phase: String,
    /// The restart, ending at that phase ([`crate::Finish::UntilPhase`]).
    pub plan: TrialPlan,
}

/// A file expectation and what was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileState {
    /// The path as checked.
    pub path: String,
    /// Whether it must exist (else: must not).
    pub must_exist: bool,
    /// Whether it existed.
    pub exists: bool,
}

/// What the check command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckRun {
    /// The command as run.
    pub command: Vec<String>,
    /// Its exit code (`None`: killed or timed out).
    pub code: Option<i32>,
    /// How long it took.
    pub duration_ns: u64,
    /// The last lines of its stdout and stderr.
    pub output: Vec<String>,
}

/// What the recovery did: a restart of a spawned target, or a running service's
/// replacement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverySeen {
    /// The phase it had to reach.
    pub phase: String,
    /// When it reached it: since the restart, or for a service since its exit was seen;
    /// `None` if it did not.
    pub reached_ns: Option<u64>,
    /// What the restarted target (or the replacement watched) did.
    pub observation: Observation,
    /// For a running service, the times of its replacement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<Replacement>,
}

/// Everything [`run`] found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AfterSeen {
    /// The files, in the plan's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileState>,
    /// The check command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckRun>,
    /// The recovery restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoverySeen>,
}

/// Runs `plan` on this thread: files, then a service's recovery (it needs `trial`, what the
/// trial against the service left), then the check, then a restart.
pub fn run(
    plan: &AfterPlan,
    trial: Option<AfterTrial<'_>>,
    cancel: &CancellationToken,
) -> AfterSeen {
    let files = plan
        .files
        .iter()
        .map(|f| FileState {
            path: f.path.clone(),
            must_exist: f.must_exist,
            exists: f.resolved.exists(),
        })
        .collect();
    let service = plan.service.as_ref().zip(trial).map(|(service, trial)| {
        let found = crate::attach::service::recover(service, trial, cancel);
        RecoverySeen {
            phase: service.phase.clone(),
            reached_ns: found.reached_ns,
            observation: found.observation,
            attached: Some(found.replacement),
        }
    });
    let check = plan.check.as_ref().map(|c| {
        let result = crate::command::run_command_blocking(&c.argv, &c.cwd, &c.env, c.limit, 20);
        let mut output = result.output;
        if let Some(error) = result.error {
            output.push(error);
        }
        CheckRun {
            command: c.argv.clone(),
            code: if result.timed_out {
                None
            } else {
                result.exit.and_then(|e| e.code)
            },
            duration_ns: result.duration_ns,
            output,
        }
    });
    let recovery = plan.recovery.as_ref().map(|r| {
        let observation = crate::trial::run_blocking(&r.plan, cancel);
        let reached_ns = match r.plan.finish {
            crate::Finish::UntilPhase(index) => {
                observation.phases.get(index).and_then(|p| p.entered_ns)
            }
            _ => None,
        };
        RecoverySeen {
            phase: r.phase.clone(),
            reached_ns,
            observation,
            attached: None,
        }
    });
    AfterSeen {
        files,
        check,
        recovery: recovery.or(service),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn files_are_looked_at_where_they_resolve_and_the_check_reports_its_code() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state"), "x").unwrap();
        let plan = AfterPlan {
            files: vec![
                FileProbe {
                    path: "state".into(),
                    resolved: dir.path().join("state"),
                    must_exist: true,
                },
                FileProbe {
                    path: "state.tmp".into(),
                    resolved: dir.path().join("state.tmp"),
                    must_exist: false,
                },
            ],
            check: Some(CheckPlan {
                argv: vec!["sh".into(), "-c".into(), "echo checked; exit 3".into()],
                cwd: dir.path().into(),
                env: Vec::new(),
                limit: Duration::from_secs(5),
            }),
            recovery: None,
            service: None,
        };
        let seen = run(&plan, None, &CancellationToken::new());
        assert_eq!(
            seen.files.iter().map(|f| f.exists).collect::<Vec<_>>(),
            [true, false]
        );
        let check = seen.check.clone().unwrap();
        assert_eq!(check.code, Some(3));
        assert!(
            check.output.iter().any(|l| l.contains("checked")),
            "{check:?}"
        );
        let json = serde_json::to_string(&seen).unwrap();
        assert_eq!(serde_json::from_str::<AfterSeen>(&json).unwrap(), seen);
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<AfterPlan>(&json).unwrap(), plan);
    }
}
