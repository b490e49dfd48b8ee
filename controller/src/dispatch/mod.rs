//! Where a trial runs: in-process (the embedded default), or on an `atropos-injector` node
//! ([`remote`]). One interface for both: the runner asks [`Places::run`] and judges what
//! comes back, whichever it was.
//!
//! In-process, the controller gives the trial its port and folder; on a node, the plan
//! carries holes for them that the node fills ([`atropos_injector::wire`]). Either way the
//! whole trial runs in one place: the target, its faults, then the files, a service's
//! recovery, the check command and a recovery restart ([`atropos_injector::after`]).

pub mod remote;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use atropos_injector::{self as inj, CancellationToken};

use crate::plan::{self, ExperimentPlan, PhaseLengths, PlannedTrial, TrialEnv};
use crate::template;

pub use remote::{FILE_NAME, Failure, Fleet, InjectorSpec, declared, resolve};

/// Default check command limit.
pub const DEFAULT_CHECK_LIMIT: Duration = Duration::from_secs(10);

/// What came back from a trial, wherever it ran.
pub struct Ran {
    /// What the target did.
    pub observation: inj::Observation,
    /// The files, check and recovery after it.
    pub after: inj::after::AfterSeen,
    /// The plan's grace period (the judge reads exits against it).
    pub grace: Duration,
    /// The first step's offset as planned, ns.
    pub first_offset: Option<u64>,
    /// The node it ran on; `None`: in-process.
    pub node: Option<String>,
}

/// The places a run's trials may go.
pub struct Places {
    cancel: CancellationToken,
    run_dir: PathBuf,
    /// Ports handed to in-process trials still running (given back when each ends).
    ports: inj::sockets::PortPool,
    fleet: Option<Arc<Fleet>>,
    handle: tokio::runtime::Handle,
    run_id: String,
}

impl Places {
    /// In-process under `run_dir`, and on `fleet`'s nodes; call from within the runtime the
    /// remote clients use.
    pub fn new(
        cancel: CancellationToken,
        run_dir: PathBuf,
        fleet: Option<Arc<Fleet>>,
        run_id: String,
    ) -> Places {
        Places {
            cancel,
            run_dir,
            ports: inj::sockets::PortPool::default(),
            fleet,
            handle: tokio::runtime::Handle::current(),
            run_id,
        }
    }

    /// Runs `trial` of `exp` where the experiment says, on this (blocking) thread; `None`
    /// if it never started (the run was cancelled first).
    pub fn run(
        &self,
        exp: &ExperimentPlan,
        trial: &PlannedTrial,
        lengths: &PhaseLengths,
    ) -> Option<Ran> {
        if self.cancel.is_cancelled() {
            return None;
        }
        match &self.fleet {
            Some(fleet) if !exp.nodes.is_empty() => self.on_node(fleet, exp, trial, lengths),
            _ => Some(self.here(exp, trial, lengths)),
        }
    }

    /// Sends `request` to node `node` of the fleet and waits for its end (a place there
    /// first); `None` if there is no fleet or the run was cancelled before a place was free.
    pub fn run_at(
        &self,
        node: usize,
        request: &inj::wire::TrialRequest,
        limit: Duration,
    ) -> Option<Result<inj::wire::Done, Failure>> {
        let fleet = self.fleet.as_ref()?;
        let slot = match fleet.acquire(&[node], &self.cancel) {
            Ok(slot) => slot,
            Err(None) => return None,
            Err(Some(why)) => return Some(Err(Failure::Refused(why))),
        };
        let done = fleet.nodes[node].run(request, limit, &self.cancel, &self.handle);
        if let Err(Failure::Lost(_)) = &done {
            slot.lost();
        }
        Some(done)
    }

    /// The fleet's node names, by index.
    pub fn node_name(&self, node: usize) -> Option<&str> {
        self.fleet
            .as_ref()?
            .nodes
            .get(node)
            .map(|n| n.name.as_str())
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    fn here(&self, exp: &ExperimentPlan, trial: &PlannedTrial, lengths: &PhaseLengths) -> Ran {
        let dir = self.run_dir.join(&trial.id);
        if exp.needs_dir {
            let _ = std::fs::create_dir_all(&dir);
        }
        let port = if exp.needs_port { self.ports.take() } else { 0 };
        let env = TrialEnv { port, dir };
        let (iplan, first_offset) = plan::injector_plan(exp, trial, &env, lengths, None);
        let observation = inj::trial::run_blocking(&iplan, &self.cancel);
        let after =
            if observation.error.is_none() && observation.stop != inj::StopReason::Interrupted {
                inj::after::run(&after_plan(exp, trial, &env), None, &self.cancel)
            } else {
                inj::after::AfterSeen::default()
            };
        if port != 0 {
            self.ports.give_back(port);
        }
        Ran {
            observation,
            after,
            grace: iplan.grace,
            first_offset,
            node: None,
        }
    }

    /// On the least busy of the experiment's nodes, once one has room; a trial the node
    /// lost comes back as an observation with the reason as its error.
    fn on_node(
        &self,
        fleet: &Fleet,
        exp: &ExperimentPlan,
        trial: &PlannedTrial,
        lengths: &PhaseLengths,
    ) -> Option<Ran> {
        let env = TrialEnv::on_node();
        let (iplan, first_offset) = plan::injector_plan(exp, trial, &env, lengths, None);
        let after = after_plan(exp, trial, &env);
        // The whole exchange is bounded by what the node may take: the trial, its check
        // and its recovery, and a margin for the stream.
        let limit = iplan.timeout
            + after.check.as_ref().map_or(Duration::ZERO, |c| c.limit)
            + after
                .recovery
                .as_ref()
                .map_or(Duration::ZERO, |r| r.plan.timeout)
            + Duration::from_secs(5);
        let grace = iplan.grace;
        let failed = |why: String, node: Option<String>| {
            let mut observation = inj::Observation::unstarted(&trial.id, &exp.info.phases);
            observation.error = Some(why);
            Ran {
                observation,
                after: inj::after::AfterSeen::default(),
                grace,
                first_offset,
                node,
            }
        };
        let slot = match fleet.acquire(&exp.nodes, &self.cancel) {
            Ok(slot) => slot,
            Err(None) => return None,
            Err(Some(why)) => return Some(failed(why, None)),
        };
        let node = &fleet.nodes[slot.node];
        let request = inj::wire::TrialRequest {
            format: inj::PLAN_FORMAT,
            node: node.name.clone(),
            run: self.run_id.clone(),
            trial: iplan,
            after,
            bind: inj::wire::Bind {
                port: exp.needs_port,
                dir: exp.needs_dir,
            },
            select: None,
        };
        let ran = match node.run(&request, limit, &self.cancel, &self.handle) {
            Ok(done) => Ran {
                observation: done.observation,
                after: done.after,
                grace,
                first_offset,
                node: Some(node.name.clone()),
            },
            Err(failure) => {
                if let Failure::Lost(_) = &failure {
                    slot.lost();
                }
                failed(failure.to_string(), Some(node.name.clone()))
            }
        };
        Some(ran)
    }
}

/// What runs on the node once the target ended: the files it left, a running service's
/// recovery, the check command and a spawned target's recovery restart ([`inj::after`]
/// runs them, in that order).
pub(crate) fn after_plan(
    exp: &ExperimentPlan,
    trial: &PlannedTrial,
    env: &TrialEnv,
) -> inj::after::AfterPlan {
    let expect = &trial.expect;
    let vars = env.vars(trial);
    let cwd = exp.cwd.clone();
    let files = expect.files.as_ref().map_or_else(Vec::new, |files| {
        let probe = |p: &String, must_exist: bool| {
            let expanded = template::expand(p, &vars);
            inj::after::FileProbe {
                resolved: plan::resolve(&cwd, &expanded),
                path: expanded,
                must_exist,
            }
        };
        let present = files.present.iter().map(|p| probe(p, true));
        present
            .chain(files.absent.iter().map(|p| probe(p, false)))
            .collect()
    });
    let check = expect.check.as_ref().map(|check| inj::after::CheckPlan {
        argv: plan::argv(&check.command, &cwd, &vars),
        cwd: cwd.clone(),
        env: vec![("ATROPOS_TRIAL".to_owned(), format!("{}-check", trial.id))],
        limit: check.within.unwrap_or(DEFAULT_CHECK_LIMIT),
    });
    // An attached target's recovery is its supervisor's: a replacement process the same
    // selector matches, watched where the trial runs; a spawned one's is a restart.
    let service = exp.attach.as_ref().and_then(|attach| {
        let recover = expect.recover.as_ref()?;
        let index = exp.info.phases.iter().position(|p| *p == recover.reaches)?;
        Some(inj::attach::service::ServiceRecoveryPlan {
            phase: recover.reaches.clone(),
            index,
            within_ns: u64::try_from(recover.within.as_nanos()).unwrap_or(u64::MAX),
            selector: attach.lowered.selector.clone(),
            guard: attach.lowered.guard.clone(),
            seed: crate::runner::attach::recovery_seed(exp.info.seed, trial),
        })
    });
    let restart = expect.recover.as_ref().filter(|_| exp.attach.is_none());
    let recovery = restart.and_then(|recover| {
        let index = exp.info.phases.iter().position(|p| *p == recover.reaches)?;
        let target = plan::command(&exp.loaded, &cwd, &vars);
        let plan = inj::TrialPlan {
            format: inj::PLAN_FORMAT,
            id: format!("{}-r", trial.id),
            target: inj::Target::Run(target),
            phases: plan::phase_plans(&exp.loaded.experiment.spec, &vars, &cwd),
            steps: Vec::new(),
            watches: Vec::new(),
            finish: inj::Finish::UntilPhase(index),
            hold: Duration::ZERO,
            grace: Duration::from_millis(100),
            timeout: recover.within + Duration::from_millis(50),
            sample_resources: false,
            tail_lines: 10,
            kill_orphans: true,
        };
        Some(inj::after::RecoveryPlan {
            phase: recover.reaches.clone(),
            plan,
        })
    });
    inj::after::AfterPlan {
        files,
        check,
        recovery,
        service,
    }
}
