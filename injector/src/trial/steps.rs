//! Deciding what is due and carrying it out: steps, pauses, the stop, the end.

use regex::Regex;

use super::driver::*;
use crate::clock::now_ns;
use crate::plan::{Action, Aim, ExitedState, Finish, When};
use crate::record::{Delivery, DeliveryOutcome, Skipped, StopReason, StopSignal};
use crate::signal::Signal;
use crate::{journal, orphans, process, procfs, safety};

impl Driver<'_> {
    /// Fires whatever is due and says when to look again; `Err` ends the trial.
    pub(super) fn advance(&mut self) -> Result<Wake, StopReason> {
        let now = now_ns();
        let mut wake: Option<u64> = None;
        let mut soonest = |at: u64| wake = Some(wake.map_or(at, |w| w.min(at)));

        if let Some(paused) = &self.paused {
            if now >= paused.resume_at {
                if let Some(paused) = self.paused.take() {
                    self.resume(paused);
                    self.last_step_at = Some(now_ns());
                }
            } else {
                soonest(paused.resume_at);
            }
        }

        // A phase that must be entered within a deadline and was not: the trial fails now,
        // not at its timeout.
        if self.exited_at.is_none() && self.missed.is_none() {
            for (index, phase) in self.plan.phases.iter().enumerate() {
                let Some(within) = phase.within else { continue };
                if self.entered[index].is_some() {
                    continue;
                }
                let due = self.t0 + ns(within);
                if now >= due {
                    // The phase it was in is taken now, before the kill ends it.
                    self.missed = Some(index);
                    self.kill(StopReason::PhaseDeadline);
                    return Err(StopReason::PhaseDeadline);
                }
                soonest(due);
            }
        }

        while self.paused.is_none() && self.next_step < self.plan.steps.len() {
            let step = &self.plan.steps[self.next_step];
            let (trigger, offset) = match &step.when {
                When::Phase { index, offset } => match &self.entered[*index] {
                    Some((at, _)) => (*at, ns(*offset)),
                    None if self.exited_at.is_some() => {
                        let reason = format!(
                            "phase `{}` never reached: the target ended first ({})",
                            self.plan.phases[*index].name,
                            self.exit
                                .as_ref()
                                .map_or_else(|| "exited".to_owned(), ToString::to_string)
                        );
                        self.skip_rest(reason);
                        break;
                    }
                    None => break,
                },
                When::After(d) => (self.last_step_at.unwrap_or(self.t0), ns(*d)),
                When::Exited(state) => match self.exited_at {
                    Some(at) => {
                        if *state == ExitedState::Reaped && !self.child.is_reaped() {
                            let _ = self.child.reap();
                        }
                        (at, 0)
                    }
                    None if !self.child.is_child() => {
                        // Never stopped by atropos: the step waits `grace` after the last one
                        // (or the start) for the process to exit, then is skipped.
                        let limit = self.last_step_at.unwrap_or(self.t0) + ns(self.plan.grace);
                        if now >= limit {
                            self.skip_rest(format!(
                                "the attached process did not exit within {} (atropos does \
                                 not stop a process it did not start)",
                                crate::duration::human_ns(ns(self.plan.grace))
                            ));
                        } else {
                            soonest(limit);
                        }
                        break;
                    }
                    None => {
                        // The target must end before this step: end it as a baseline would.
                        self.stop_when_done(now, &mut soonest);
                        break;
                    }
                },
            };
            let due = trigger + offset;
            if due > now_ns() {
                soonest(due);
                break;
            }
            self.fire(self.next_step, trigger, offset);
            self.next_step += 1;
        }

        if let Some(paused) = &self.paused {
            soonest(paused.resume_at);
        }

        // Reap as soon as no pending step needs the zombie.
        let next_needs_zombie = self
            .plan
            .steps
            .get(self.next_step)
            .is_some_and(|s| s.when == When::Exited(ExitedState::Zombie));
        if self.exited_at.is_some() && !next_needs_zombie && !self.child.is_reaped() {
            let _ = self.child.reap();
        }

        if self.paused.is_some() || self.next_step < self.plan.steps.len() {
            return Ok(wake.map_or(Wake::Event, Wake::At));
        }

        // Every step is done (or skipped): how does the trial end?
        if self.exited_at.is_some() {
            return Err(StopReason::Exited);
        }
        match &self.plan.finish {
            Finish::AwaitExit => {
                let since = self.stop_sent_at.or(self.last_step_at);
                match since {
                    Some(since) => {
                        let limit = since + ns(self.plan.grace);
                        if now_ns() >= limit {
                            self.kill(StopReason::Hung);
                            return Err(StopReason::Hung);
                        }
                        soonest(limit);
                    }
                    None => self.stop_when_done(now, &mut soonest),
                }
            }
            Finish::Stop => self.stop_when_done(now, &mut soonest),
            Finish::UntilPhase(index) => {
                if self.entered[*index].is_some() {
                    self.kill(StopReason::Reached);
                    return Err(StopReason::Reached);
                }
            }
            Finish::Observe => {
                let since = self.last_step_at.unwrap_or(self.t0);
                let limit = since + ns(self.plan.grace);
                if now_ns() >= limit {
                    return Err(StopReason::Observed);
                }
                soonest(limit);
            }
        }
        if let Some(reason) = self.kill_reason {
            return Err(reason);
        }
        Ok(wake.map_or(Wake::Event, Wake::At))
    }

    /// Once every phase is entered and `hold` has passed, stop the target with SIGTERM; if it
    /// is still there `grace` later, it hung.
    pub(super) fn stop_when_done(&mut self, now: u64, soonest: &mut impl FnMut(u64)) {
        if !self.child.is_child() {
            // Never for a process atropos did not start (no plan asks it: defence in depth).
            return;
        }
        if let Some(sent) = self.stop_sent_at {
            let limit = sent + ns(self.plan.grace);
            if now >= limit {
                self.kill(StopReason::Hung);
            } else {
                soonest(limit);
            }
            return;
        }
        let hold = ns(self.plan.hold);
        let all_entered = self.entered.iter().all(Option::is_some);
        if !all_entered {
            return;
        }
        let last = self
            .entered
            .iter()
            .flatten()
            .map(|(at, _)| *at)
            .max()
            .unwrap_or(self.t0);
        let base = last.max(self.last_step_at.unwrap_or(0));
        if now >= base + hold {
            let outcome = self.child.signal(Signal::TERM);
            let at = now_ns();
            self.stop_sent_at = Some(at);
            self.stop_signal = Some(StopSignal {
                signal: Signal::TERM,
                at_ns: at - self.t0,
                outcome,
            });
            soonest(at + ns(self.plan.grace));
        } else {
            soonest(base + hold);
        }
    }

    pub(super) fn skip_rest(&mut self, reason: String) {
        for step in self.next_step..self.plan.steps.len() {
            let reason = if step == self.next_step {
                reason.clone()
            } else {
                format!("an earlier step was skipped ({reason})")
            };
            self.skipped.push(Skipped { step, reason });
        }
        self.next_step = self.plan.steps.len();
    }

    /// Every step that did not fire by the end, with why: nothing vanishes from the record.
    pub(super) fn skip_unfired(&mut self, stop: StopReason) {
        if self.next_step >= self.plan.steps.len() {
            return;
        }
        let now = self.exited_at.unwrap_or_else(now_ns);
        let in_phase = self.phase_name_at(now.saturating_sub(1));
        let step = &self.plan.steps[self.next_step];
        let waiting = match &step.when {
            When::Phase { index, offset } => match self.entered[*index] {
                None => format!("waiting for phase `{}`", self.plan.phases[*index].name),
                Some(_) => format!(
                    "{} after phase `{}` was entered, before it was due",
                    crate::duration::human_ns(ns(*offset)),
                    self.plan.phases[*index].name
                ),
            },
            When::After(d) => format!(
                "{} after the previous step, before it was due",
                crate::duration::human_ns(ns(*d))
            ),
            When::Exited(state) => format!(
                "waiting for the target to exit ({})",
                match state {
                    ExitedState::Zombie => "zombie",
                    ExitedState::Reaped => "reaped",
                }
            ),
        };
        let why = match stop {
            StopReason::Timeout => format!(
                "the trial timed out after {} in phase `{in_phase}`, {waiting}",
                crate::duration::human_ns(ns(self.plan.timeout))
            ),
            StopReason::PhaseDeadline => {
                let missed = self
                    .missed
                    .map_or("?", |i| self.plan.phases[i].name.as_str());
                format!("phase `{missed}` missed its deadline in phase `{in_phase}`, {waiting}")
            }
            StopReason::Hung => match &self.stop_signal {
                Some(sent) => format!(
                    "the target ignored atropos's {} for {} and was killed (hung), {waiting}",
                    sent.signal,
                    crate::duration::human_ns(ns(self.plan.grace))
                ),
                None => format!("the target hung and was killed, {waiting}"),
            },
            StopReason::Interrupted => format!("atropos was interrupted, {waiting}"),
            other => format!("the trial ended ({}), {waiting}", other.as_str()),
        };
        self.skip_rest(why);
    }

    pub(super) fn record_delivery(
        &mut self,
        index: usize,
        trigger: u64,
        offset: u64,
        delivered: u64,
        outcome: DeliveryOutcome,
        pids: Vec<i32>,
    ) {
        let step = &self.plan.steps[index];
        let signal = match &step.action {
            Action::Signal(sig) => *sig,
            Action::Pause(_) => Signal::STOP,
        };
        let phase = self.phase_name_at(delivered);
        self.deliveries.push(Delivery {
            step: index,
            signal,
            aim: step.aim.clone(),
            pids,
            phase,
            trigger_ns: trigger.saturating_sub(self.t0),
            offset_ns: offset,
            delivered_ns: delivered - self.t0,
            latency_ns: delivered.saturating_sub(trigger + offset),
            outcome,
            resumed_ns: None,
        });
        self.last_step_at = Some(delivered);
    }

    /// Carries out step `index` now.
    pub(super) fn fire(&mut self, index: usize, trigger: u64, offset: u64) {
        let step = &self.plan.steps[index];
        let (signal, pause) = match &step.action {
            Action::Signal(sig) => (*sig, None),
            Action::Pause(d) => (Signal::STOP, Some(*d)),
        };
        let mut pinned = Vec::new();
        let mut pids = Vec::new();
        let (outcome, delivered) = match &step.aim {
            Aim::Main => {
                pids.extend(self.child.pids());
                if pause.is_some() {
                    for (pin, start) in self.child.pin_main() {
                        let _ = journal::record(pin.pid, start);
                        pinned.push((pin, start));
                    }
                }
                let outcome = self.child.signal(signal);
                (outcome, now_ns())
            }
            Aim::Group => {
                pids.push(self.child.pid());
                let outcome = if self.child.is_reaped() {
                    // The leader is gone, so its number is free: nothing may be signalled.
                    DeliveryOutcome::AlreadyFinished
                } else if self.exited_at.is_some() && self.group_is_empty() {
                    if self.child.is_reaped() {
                        DeliveryOutcome::AlreadyFinished
                    } else {
                        DeliveryOutcome::Zombie
                    }
                } else {
                    if pause.is_some() {
                        for stat in self.group_members() {
                            let _ = journal::record(stat.pid, stat.starttime);
                            if let Some(pin) = process::pin(stat.pid, stat.starttime) {
                                pinned.push((pin, stat.starttime));
                            }
                        }
                    }
                    self.child.signal_group(signal)
                };
                (outcome, now_ns())
            }
            Aim::Descendant(pattern) => {
                let re = Regex::new(pattern).ok();
                let matches: Vec<_> = self
                    .trial_processes()
                    .into_iter()
                    .filter(|p| {
                        re.as_ref().is_some_and(|re| {
                            re.is_match(&p.comm) || re.is_match(&procfs::cmdline(p.pid))
                        })
                    })
                    .collect();
                let mut best = DeliveryOutcome::NoTarget;
                for stat in matches {
                    if !safety::may_signal(stat.pid) {
                        best = rank(best, DeliveryOutcome::Denied);
                        continue;
                    }
                    let Some(pin) = process::pin(stat.pid, stat.starttime) else {
                        best = rank(best, DeliveryOutcome::AlreadyFinished);
                        continue;
                    };
                    if pause.is_some() {
                        let _ = journal::record(stat.pid, stat.starttime);
                    }
                    let outcome = if stat.is_zombie() {
                        DeliveryOutcome::Zombie
                    } else {
                        process::send_pidfd(&pin.pidfd, signal)
                    };
                    pids.push(stat.pid);
                    best = rank(best, outcome);
                    if pause.is_some() {
                        pinned.push((pin, stat.starttime));
                    }
                }
                (best, now_ns())
            }
        };
        self.record_delivery(index, trigger, offset, delivered, outcome, pids);
        if !self.child.is_child() {
            // After the signal, not before: the walk would delay it by tens of µs. What the
            // process had before is known from the last look (see `drive`).
            self.note_descendants();
        }
        if let Some(d) = pause {
            if outcome == DeliveryOutcome::Delivered {
                let group = matches!(step.aim, Aim::Group);
                self.paused = Some(Paused {
                    resume_at: delivered + ns(d),
                    delivery: self.deliveries.len() - 1,
                    pinned,
                    group,
                });
            } else {
                for (pin, start) in &pinned {
                    journal::clear(pin.pid, *start);
                }
            }
        }
    }

    pub(super) fn resume(&mut self, paused: Paused) {
        let at = now_ns();
        if paused.group {
            // Members that joined the group during the pause; never once the leader is
            // reaped (signal_group refuses then), the pinned ones below are resumed anyway.
            let _ = self.child.signal_group(Signal::CONT);
        }
        for (pin, start) in &paused.pinned {
            let _ = process::send_pidfd(&pin.pidfd, Signal::CONT);
            journal::clear(pin.pid, *start);
        }
        if let Some(d) = self.deliveries.get_mut(paused.delivery) {
            d.resumed_ns = Some(at - self.t0);
        }
    }

    pub(super) fn phase_name_at(&self, at: u64) -> String {
        if self.exited_at.is_some_and(|e| e <= at) {
            return "exited".to_owned();
        }
        self.entered
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|(t, _)| (i, *t)))
            .filter(|(_, t)| *t <= at)
            .max_by_key(|(i, t)| (*t, *i))
            .map_or_else(
                || "start".to_owned(),
                |(i, _)| self.plan.phases[i].name.clone(),
            )
    }

    /// Live processes of this trial other than the main one.
    pub(super) fn trial_processes(&self) -> Vec<procfs::ProcStat> {
        let main = self.child.pid();
        if !self.child.is_child() {
            let mut found = self.child.descendants();
            found.sort_by_key(|p| p.pid);
            found.dedup_by_key(|p| p.pid);
            return found;
        }
        let mut found = procfs::descendants_of(main);
        found.extend(orphans::find(
            &self.plan.id,
            main,
            self.child.lane().map(|l| &**l),
        ));
        found.sort_by_key(|p| p.pid);
        found.dedup_by_key(|p| p.pid);
        found
    }

    pub(super) fn group_members(&self) -> Vec<procfs::ProcStat> {
        let main = self.child.pid();
        let mut members: Vec<_> = self
            .trial_processes()
            .into_iter()
            .filter(|p| p.pgid == main)
            .collect();
        if let Some(stat) = procfs::ProcStat::read(main) {
            members.push(stat);
        }
        members
    }

    pub(super) fn group_is_empty(&self) -> bool {
        self.group_members().iter().all(procfs::ProcStat::is_zombie)
    }
}

/// Of two outcomes for the processes a step hit, the one that says most.
pub(crate) fn rank(a: DeliveryOutcome, b: DeliveryOutcome) -> DeliveryOutcome {
    let score = |o| match o {
        DeliveryOutcome::Delivered => 4,
        DeliveryOutcome::Zombie => 3,
        DeliveryOutcome::AlreadyFinished => 2,
        DeliveryOutcome::Denied => 1,
        DeliveryOutcome::NoTarget => 0,
    };
    if score(b) > score(a) { b } else { a }
}
