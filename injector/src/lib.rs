//! The injector of atropos: the fault vocabulary and its execution on one Linux node.
//!
//! # Theory of operation
//! A [`TrialPlan`] says what to spawn, which phases to watch for, which fault steps to fire
//! and when, and how the trial ends. [`run_trial`] executes it:
//!
//! 1. The target is spawned in its own process group, with `ATROPOS_TRIAL=<trial id>` in its
//!    environment and a pidfd opened at once (the child is unreaped, so its pid is ours).
//! 2. One thread per trial waits in `ppoll` on the target's stdout, stderr and pidfd. Lines
//!    are stamped with `CLOCK_MONOTONIC` as their read returns; markers (output regexes,
//!    listening ports, HTTP endpoints, files, log lines, a unit's journal, delays) mark phase entries.
//! 3. The driver fires each step when it is due: at a phase plus an offset, after the previous
//!    step, or after the target exited (while it is a zombie, or once reaped). Signals go
//!    through pidfds; process groups only while their leader is held unreaped. Every delivery
//!    records its outcome: delivered, already_finished, zombie, denied or no_target.
//! 4. The end: the target exits, or hangs past its grace period and is killed, or the trial
//!    times out or is interrupted. atropos is a child subreaper, so descendants that outlive the
//!    main process are re-parented to it; every one still alive is reported as an orphan,
//!    killed, and reaped.
//!
//! The injector knows nothing of experiment files, schedules, SQL or HTML.

pub mod after;
pub mod agent;
pub mod attach;
pub mod cgroup;
pub mod clock;
pub mod command;
pub mod duration;
pub mod journal;
pub mod journald;
pub mod logfollow;
pub mod markers;
pub mod orphans;
pub mod output;
pub mod plan;
pub mod process;
pub mod procfs;
pub mod record;
pub mod safety;
pub mod signal;
pub mod sockets;
pub mod trial;
mod unix;
pub mod wire;
pub mod workdir;

pub use plan::{
    Action, Aim, AttachTarget, ExitedState, Finish, Identity, Marker, PLAN_FORMAT, PhasePlan,
    RunTarget, StepPlan, Stream, Target, TrialPlan, Watch, When,
};
pub use record::{
    Delivery, DeliveryOutcome, Exit, MissedPhase, Observation, Orphan, PhaseEntry, Progress,
    StopReason,
};
pub use signal::Signal;
pub use tokio_util::sync::CancellationToken;
pub use trial::run as run_trial;
pub use unix::{background_thread, default_sigpipe};

/// Makes the child `command` spawns receive SIGHUP when its spawner is gone (a
/// controller's runs end, as on Ctrl-C, when the controller is killed; the kernel may send
/// it once per thread of the dead spawner, so the child must take it as idempotent).
pub fn hang_up_at_spawner_death(command: &mut std::process::Command) {
    unix::signal_at_spawner_death(command, libc::SIGHUP);
}

/// Prepares this process to run trials: becomes a child subreaper (so orphans of targets come
/// back to it), starts the guardian that kills every target group should atropos die, and
/// resumes any process a crashed injector left paused. Returns how many were resumed.
pub fn init() -> std::io::Result<usize> {
    unix::become_child_subreaper()?;
    process::start_guardian();
    Ok(journal::resume_leftovers())
}

pub use cgroup::{Containment, containment};
pub use process::shutdown;
