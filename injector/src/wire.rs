//! What a controller and an `atropos-injector` say to each other: a [`TrialRequest`] in, a
//! stream of [`Event`]s out (one JSON object per line), the last one [`Event::Done`].
//!
//! Both carry [`PLAN_FORMAT`] and the node's name; every time in them counts from the
//! trial's start (the [`Observation`]'s `started_ns` alone is the node's own clock).
//!
//! A trial's port and folder are the node's: the controller plans with two holes in their
//! place ([`PORT_HOLE`] in strings, `listen: 0` for a listening marker, [`DIR_HOLE`] at the
//! start of a path), and the node fills them ([`TrialRequest::fill`]) with a port free there
//! and a folder it made.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::after::{AfterPlan, AfterSeen};
use crate::plan::{PLAN_FORMAT, TrialPlan};
use crate::record::{Delivery, Observation, PhaseSeen, Progress};

/// Where the trial's port goes in a string the node fills.
pub const PORT_HOLE: &str = "${trial.port}";

/// Where the trial's folder goes: a path that begins with it is the node's trial folder.
pub const DIR_HOLE: &str = "/@atropos-trial-dir@";

/// A trial sent to a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialRequest {
    /// [`PLAN_FORMAT`] of the sender.
    pub format: u32,
    /// The node the controller meant (the injector refuses a plan for another).
    pub node: String,
    /// The run it belongs to (named in the injector's log).
    pub run: String,
    /// The trial.
    pub trial: TrialPlan,
    /// What runs once its target ended.
    #[serde(default)]
    pub after: AfterPlan,
    /// Whether the node gives the trial a port ([`PORT_HOLE`]) and a folder ([`DIR_HOLE`]).
    #[serde(default)]
    pub bind: Bind,
    /// For a trial against running processes: how the node selects them from its own
    /// `/proc` before the trial (the trial's target is then an attach target it fills).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<SelectPlan>,
}

/// How a node selects the running processes a trial attaches to.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectPlan {
    /// The criteria.
    pub selector: crate::attach::Selector,
    /// The refusals beyond the fixed ones.
    pub guard: crate::attach::Guard,
    /// How many of the matches to take.
    pub count: crate::attach::Count,
    /// The most that may match.
    pub max_targets: usize,
    /// The seed of the draw among the matches (the run's, for this trial and node).
    pub seed: u64,
    /// How long to wait while nothing matches, ns.
    pub wait_ns: u64,
}

impl PartialEq for SelectPlan {
    fn eq(&self, other: &SelectPlan) -> bool {
        // Regexes have no equality; their JSON forms do.
        serde_json::to_value(self).ok() == serde_json::to_value(other).ok()
    }
}

/// What the node must provide for a trial.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    /// A free loopback port for `${trial.port}`.
    pub port: bool,
    /// A fresh folder for `${trial.dir}`.
    pub dir: bool,
}

/// One line of the stream a node answers a trial with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// The node took the trial and starts it now.
    Started {
        /// [`PLAN_FORMAT`] of the node.
        format: u32,
        /// The node's name.
        node: String,
        /// The port it gave the trial (0: none).
        port: u16,
        /// The folder it gave the trial.
        dir: Option<String>,
    },
    /// A phase was entered.
    Phase(PhaseSeen),
    /// A step's signal went out.
    Delivery(Delivery),
    /// Nothing new: the trial runs on (sent every [`crate::agent::BEAT`] of quiet, so that
    /// either side notices a connection gone).
    Beat,
    /// The trial ended: everything observed.
    Done(Box<Done>),
    /// The node could not run the trial, or lost it.
    Failed {
        /// Why.
        message: String,
    },
}

impl From<Progress> for Event {
    fn from(p: Progress) -> Event {
        match p {
            Progress::Phase(seen) => Event::Phase(seen),
            Progress::Delivery(d) => Event::Delivery(d),
        }
    }
}

/// Everything a node observed of one trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Done {
    /// [`PLAN_FORMAT`] of the node.
    pub format: u32,
    /// The node's name.
    pub node: String,
    /// The trial itself.
    pub observation: Observation,
    /// The files, check and recovery after it.
    pub after: AfterSeen,
}

/// Why a request cannot run, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    /// What went wrong, plainly.
    pub error: String,
}

/// What `GET /v1/info` says about a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Info {
    /// The node's name.
    pub node: String,
    /// Its labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The injector's version.
    pub version: String,
    /// The [`PLAN_FORMAT`] it runs.
    pub format: u32,
    /// Trials it runs at once at most.
    pub capacity: usize,
    /// Trials running now.
    pub running: usize,
}

impl TrialRequest {
    /// Fills the holes of the trial and its after-plan with `port` and `dir`.
    pub fn fill(&mut self, port: u16, dir: Option<&Path>) -> Result<(), String> {
        let dir = dir.map(|d| d.to_string_lossy().into_owned());
        let port_text = port.to_string();
        let fill_str = |s: &mut String| {
            if let Some(dir) = &dir
                && let Some(rest) = s.strip_prefix(DIR_HOLE)
            {
                *s = format!("{dir}{rest}");
            }
            if let Some(dir) = &dir
                && s.contains(DIR_HOLE)
            {
                *s = s.replace(DIR_HOLE, dir);
            }
            if port != 0 && s.contains(PORT_HOLE) {
                *s = s.replace(PORT_HOLE, &port_text);
            }
        };
        let trial = fill_value(serde_json::to_value(&self.trial), port, &fill_str)?;
        let after = fill_value(serde_json::to_value(&self.after), port, &fill_str)?;
        self.trial = serde_json::from_value(trial).map_err(|e| e.to_string())?;
        self.after = serde_json::from_value(after).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Whether the sender's format is this node's.
    pub fn compatible(&self) -> bool {
        self.format == PLAN_FORMAT && self.trial.format == PLAN_FORMAT
    }
}

fn fill_value(
    value: serde_json::Result<serde_json::Value>,
    port: u16,
    fill_str: &dyn Fn(&mut String),
) -> Result<serde_json::Value, String> {
    fn walk(v: &mut serde_json::Value, port: u16, fill_str: &dyn Fn(&mut String)) {
        use serde_json::Value;
        match v {
            Value::String(s) => fill_str(s),
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, port, fill_str)),
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    // A listening marker on the trial's port is planned as `listen: 0`.
                    if key == "listen" && item.as_u64() == Some(0) && port != 0 {
                        *item = Value::from(port);
                    } else {
                        walk(item, port, fill_str);
                    }
                }
            }
            _ => {}
        }
    }
    let mut value = value.map_err(|e| e.to_string())?;
    walk(&mut value, port, fill_str);
    Ok(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::time::Duration;

    use super::*;
    use crate::after::{CheckPlan, FileProbe};
    use crate::plan::{Finish, Marker, PhasePlan, RunTarget, Target};
    use crate::record::{DeliveryOutcome, StopReason};
    use crate::{Aim, Signal};

    fn request() -> TrialRequest {
        TrialRequest {
            format: PLAN_FORMAT,
            node: "cache-1".into(),
            run: "r1".into(),
            trial: TrialPlan {
                format: PLAN_FORMAT,
                id: "r1-0-0".into(),
                target: Target::Run(RunTarget {
                    argv: vec![
                        "./api".into(),
                        "--port=${trial.port}".into(),
                        format!("{DIR_HOLE}/state"),
                    ],
                    env: vec![("STATE".into(), format!("{DIR_HOLE}/s"))],
                    cwd: "/srv".into(),
                }),
                phases: vec![
                    PhasePlan {
                        name: "listening".into(),
                        marker: Marker::Listen(0),
                        within: None,
                    },
                    PhasePlan {
                        name: "ready".into(),
                        marker: Marker::Http("http://127.0.0.1:${trial.port}/healthz".into()),
                        within: Some(Duration::from_secs(2)),
                    },
                ],
                steps: Vec::new(),
                watches: Vec::new(),
                finish: Finish::Stop,
                hold: Duration::from_millis(5),
                grace: Duration::from_secs(1),
                timeout: Duration::from_secs(10),
                sample_resources: false,
                tail_lines: 10,
                kill_orphans: true,
            },
            after: AfterPlan {
                files: vec![FileProbe {
                    path: format!("{DIR_HOLE}/state.tmp"),
                    resolved: format!("{DIR_HOLE}/state.tmp").into(),
                    must_exist: false,
                }],
                check: Some(CheckPlan {
                    argv: vec!["./check".into(), "${trial.port}".into()],
                    cwd: "/srv".into(),
                    env: Vec::new(),
                    limit: Duration::from_secs(3),
                }),
                recovery: None,
                service: None,
            },
            bind: Bind {
                port: true,
                dir: true,
            },
            select: None,
        }
    }

    #[test]
    fn the_node_fills_every_hole_with_its_port_and_folder() {
        let mut req = request();
        req.fill(18123, Some(Path::new("/tmp/atropos-x/r1-0-0")))
            .unwrap();
        let Target::Run(run) = &req.trial.target else {
            panic!()
        };
        assert_eq!(
            run.argv,
            ["./api", "--port=18123", "/tmp/atropos-x/r1-0-0/state"]
        );
        assert_eq!(run.env[0].1, "/tmp/atropos-x/r1-0-0/s");
        assert_eq!(req.trial.phases[0].marker, Marker::Listen(18123));
        assert_eq!(
            req.trial.phases[1].marker,
            Marker::Http("http://127.0.0.1:18123/healthz".into())
        );
        assert_eq!(
            req.after.files[0].resolved,
            Path::new("/tmp/atropos-x/r1-0-0/state.tmp")
        );
        assert_eq!(req.after.files[0].path, "/tmp/atropos-x/r1-0-0/state.tmp");
        assert_eq!(req.after.check.as_ref().unwrap().argv[1], "18123");
    }

    #[test]
    fn every_event_comes_back_from_its_line_as_it_went() {
        let mut obs = Observation::unstarted("r1-0-0", &["ready".to_owned()]);
        obs.stop = StopReason::Exited;
        let delivery = Delivery {
            step: 0,
            signal: Signal::TERM,
            aim: Aim::Main,
            pids: vec![42],
            phase: "ready".into(),
            trigger_ns: 1,
            offset_ns: 2,
            delivered_ns: 3,
            latency_ns: 4,
            outcome: DeliveryOutcome::Delivered,
            resumed_ns: None,
        };
        let events = vec![
            Event::Started {
                format: PLAN_FORMAT,
                node: "n".into(),
                port: 18123,
                dir: Some("/tmp/d".into()),
            },
            Event::Phase(PhaseSeen {
                index: 0,
                name: "ready".into(),
                entered_ns: 5,
                evidence: "stdout: ready".into(),
            }),
            Event::Delivery(delivery),
            Event::Done(Box::new(Done {
                format: PLAN_FORMAT,
                node: "n".into(),
                observation: obs,
                after: AfterSeen::default(),
            })),
            Event::Failed {
                message: "injector lost".into(),
            },
            Event::Beat,
        ];
        for event in events {
            let line = serde_json::to_string(&event).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), event);
        }
        let req = request();
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(serde_json::from_str::<TrialRequest>(&json).unwrap(), req);
        let mut extra: serde_json::Value = serde_json::from_str(&json).unwrap();
        extra["surprise"] = serde_json::Value::Bool(true);
        assert!(serde_json::from_value::<TrialRequest>(extra).is_err());
        let info = Info {
            node: "n".into(),
            labels: [("role".to_owned(), "cache".to_owned())].into(),
            version: "0.1.0".into(),
            format: PLAN_FORMAT,
            capacity: 4,
            running: 1,
        };
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(serde_json::from_str::<Info>(&json).unwrap(), info);
    }

    #[test]
    fn a_service_trial_and_its_recovery_come_back_from_json_as_they_went() {
        use crate::after::RecoverySeen;
        use crate::attach::service::{Replacement, ServiceRecoveryPlan};
        use crate::attach::{Count, Guard, Selector};
        use crate::plan::{AttachTarget, Identity};
        let selector = Selector {
            cmdline: Some(regex::Regex::new("^redis-server 127.0.0.1:6379$").unwrap()),
            ..Selector::default()
        };
        let guard = Guard {
            allowed_users: vec![100],
            protected: vec![4242],
        };
        let mut req = request();
        req.bind = Bind::default();
        req.trial.target = Target::Attach(AttachTarget {
            processes: vec![Identity {
                pid: 7,
                starttime: 99,
            }],
            boot_id: "b".into(),
            cwd: "/srv".into(),
            cgroup: Some("/system.slice/redis.service".into()),
            spare: vec![Identity {
                pid: 8,
                starttime: 100,
            }],
        });
        req.select = Some(SelectPlan {
            selector: selector.clone(),
            guard: guard.clone(),
            count: Count::Percent(50),
            max_targets: 2,
            seed: 3,
            wait_ns: 5,
        });
        req.after.service = Some(ServiceRecoveryPlan {
            phase: "ready".into(),
            index: 1,
            within_ns: 10_000_000_000,
            selector,
            guard,
            seed: 11,
        });
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(serde_json::from_str::<TrialRequest>(&json).unwrap(), req);
        let recovered = Event::Done(Box::new(Done {
            format: PLAN_FORMAT,
            node: "cache-1".into(),
            observation: Observation::unstarted("r1-0-0", &["ready".to_owned()]),
            after: AfterSeen {
                recovery: Some(RecoverySeen {
                    phase: "ready".into(),
                    reached_ns: Some(1_400_000_000),
                    observation: Observation::unstarted("r1-0-0-r", &["ready".to_owned()]),
                    attached: Some(Replacement {
                        detected_ns: Some(42_000_000),
                        replaced_ns: Some(1_000_000_000),
                        pid: Some(9),
                        survived: false,
                    }),
                }),
                ..AfterSeen::default()
            },
        }));
        let line = serde_json::to_string(&recovered).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), recovered);
    }
}
