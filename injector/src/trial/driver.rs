//! The state one trial's thread keeps about its target.

use std::time::Duration;

use crate::markers::Polled;
use crate::output::StreamState;
use crate::plan::TrialPlan;
use crate::process;
use crate::record::{Delivery, Exit, Resources, Skipped, StopReason, StopSignal};

/// The longest the loop sleeps without looking at cancellation.
pub(super) const CANCEL_CHECK: u64 = 10_000_000;
/// How often resources are sampled when asked for.
pub(super) const SAMPLE_EVERY: u64 = 10_000_000;
/// How long after a step's signal a follower is told of it (and of what else happened).
pub(super) const TELL_AFTER: u64 = 2_000_000;
/// How long the streams may take to end once the target and its orphans are gone.
pub(super) const DRAIN: u64 = 200_000_000;

/// Processes stopped by a pause step, waiting for their SIGCONT.
pub(super) struct Paused {
    pub(super) resume_at: u64,
    pub(super) delivery: usize,
    pub(super) pinned: Vec<(process::Found, u64)>,
    /// Whether the step was aimed at the group (then also SIGCONT to the group).
    pub(super) group: bool,
}

pub(super) struct Driver<'a> {
    pub(super) plan: &'a TrialPlan,
    pub(super) child: Box<dyn super::subject::Subject>,
    pub(super) t0: u64,
    pub(super) entered: Vec<Option<(u64, String)>>,
    pub(super) exited_at: Option<u64>,
    pub(super) exit: Option<Exit>,
    pub(super) next_step: usize,
    pub(super) last_step_at: Option<u64>,
    pub(super) deliveries: Vec<Delivery>,
    pub(super) skipped: Vec<Skipped>,
    pub(super) paused: Option<Paused>,
    pub(super) stop_signal: Option<StopSignal>,
    pub(super) stop_sent_at: Option<u64>,
    pub(super) kill_reason: Option<StopReason>,
    /// The phase whose deadline passed, by index.
    pub(super) missed: Option<usize>,
    pub(super) streams: [StreamState; 2],
    pub(super) polled: Vec<(usize, Polled)>,
    pub(super) resources: Option<Resources>,
    pub(super) next_sample: u64,
    pub(super) buf: Vec<u8>,
    /// An attached target's descendants seen so far, by pid and start time (they are
    /// orphans if they outlive it).
    pub(super) descendants: Vec<(i32, u64)>,
    /// When an attached target's descendants are next looked at.
    pub(super) next_look: u64,
    /// Who follows the trial live, if anyone, and how much of it they were told.
    pub(super) follower: Option<&'a dyn Fn(crate::record::Progress)>,
    pub(super) told: (Vec<bool>, usize),
}

/// What the driver waits for next.
pub(super) enum Wake {
    At(u64),
    Event,
}

/// A duration in nanoseconds, saturating.
pub(super) fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2)
}
