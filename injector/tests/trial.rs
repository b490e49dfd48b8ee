//! The trial driver against real processes: `sh` scripts spawned by these tests only.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::Duration;

use atropos_injector::{
    Action, Aim, CancellationToken, DeliveryOutcome, ExitedState, Finish, Marker, PhasePlan,
    RunTarget, Signal, StepPlan, StopReason, Stream, Target, TrialPlan, Watch, When, run_trial,
};

fn plan(
    script: &str,
    phases: Vec<(&str, Marker)>,
    steps: Vec<StepPlan>,
    finish: Finish,
) -> TrialPlan {
    let token = format!("atropos-injector-test-{}", rand_token());
    TrialPlan {
        format: atropos_injector::plan::PLAN_FORMAT,
        id: token.clone(),
        target: Target::Run(RunTarget {
            argv: vec!["sh".into(), "-c".into(), script.into(), token],
            env: vec![],
            cwd: std::env::temp_dir(),
        }),
        phases: phases
            .into_iter()
            .map(|(n, m)| PhasePlan {
                name: n.into(),
                marker: m,
                within: None,
            })
            .collect(),
        steps,
        watches: vec![Watch {
            stream: Stream::Stdout,
            regex: "^cleanup done$".into(),
        }],
        finish,
        hold: Duration::from_millis(30),
        grace: Duration::from_millis(500),
        timeout: Duration::from_secs(10),
        sample_resources: true,
        tail_lines: 10,
        kill_orphans: true,
    }
}

fn rand_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        atropos_injector::clock::now_ns()
    )
}

fn at_phase(index: usize, signal: Signal) -> StepPlan {
    StepPlan {
        action: Action::Signal(signal),
        aim: Aim::Main,
        when: When::Phase {
            index,
            offset: Duration::ZERO,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_at_ready_is_delivered_and_trapped_cleanup_runs() {
    atropos_injector::init().unwrap();
    let script = "trap 'echo cleanup done; exit 0' TERM; echo booting; echo ready; while :; do sleep 0.01; done";
    let p = plan(
        script,
        vec![("ready", Marker::Stdout("^ready$".into()))],
        vec![at_phase(0, Signal::TERM)],
        Finish::AwaitExit,
    );
    let obs = run_trial(&p, &CancellationToken::new()).await;
    assert_eq!(obs.error, None);
    assert_eq!(obs.deliveries.len(), 1, "{obs:#?}");
    let d = &obs.deliveries[0];
    assert_eq!(d.outcome, DeliveryOutcome::Delivered);
    assert_eq!(d.phase, "ready");
    assert!(d.delivered_ns >= d.trigger_ns);
    assert_eq!(obs.exit.as_ref().and_then(|e| e.code), Some(0), "{obs:#?}");
    assert_eq!(obs.stop, StopReason::Exited);
    assert_eq!(obs.watches[0].count, 1);
    assert!(obs.stdout_tail.iter().any(|l| l.text == "booting"));
    assert!(obs.resources.unwrap().samples >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_sigterm_is_hung_and_killed_after_grace() {
    atropos_injector::init().unwrap();
    let script = "trap '' TERM; echo ready; while :; do sleep 0.01; done";
    let p = plan(
        script,
        vec![("ready", Marker::Stdout("^ready$".into()))],
        vec![at_phase(0, Signal::TERM)],
        Finish::AwaitExit,
    );
    let obs = run_trial(&p, &CancellationToken::new()).await;
    assert_eq!(obs.stop, StopReason::Hung, "{obs:#?}");
    assert_eq!(obs.exit.as_ref().and_then(|e| e.signal), Some(Signal::KILL));
    let after = obs.exit.unwrap().at_ns - obs.deliveries[0].delivered_ns;
    assert!(
        after >= 500_000_000,
        "killed {after} ns after the step, before the grace ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_after_exit_are_zombie_then_already_finished() {
    atropos_injector::init().unwrap();
    let steps = vec![
        StepPlan {
            action: Action::Signal(Signal::TERM),
            aim: Aim::Main,
            when: When::Exited(ExitedState::Zombie),
        },
        StepPlan {
            action: Action::Signal(Signal::TERM),
            aim: Aim::Main,
            when: When::Exited(ExitedState::Reaped),
        },
        StepPlan {
            action: Action::Signal(Signal::KILL),
            aim: Aim::Group,
            when: When::After(Duration::from_millis(5)),
        },
    ];
    let p = plan(
        "echo done; exit 3",
        vec![("done", Marker::Stdout("done".into()))],
        steps,
        Finish::AwaitExit,
    );
    let obs = run_trial(&p, &CancellationToken::new()).await;
    let outcomes: Vec<_> = obs.deliveries.iter().map(|d| d.outcome).collect();
    assert_eq!(
        outcomes,
        [
            DeliveryOutcome::Zombie,
            DeliveryOutcome::AlreadyFinished,
            DeliveryOutcome::AlreadyFinished
        ],
        "{obs:#?}"
    );
    assert_eq!(obs.exit.unwrap().code, Some(3));
    assert!(obs.deliveries.iter().all(|d| d.phase == "exited"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_left_the_session_is_reported_and_killed() {
    atropos_injector::init().unwrap();
    let script = "setsid sh -c 'echo detached; exec sleep 30' & sleep 0.3; exit 0";
    let mut p = plan(
        script,
        vec![("detached", Marker::Stdout("^detached$".into()))],
        vec![],
        Finish::Stop,
    );
    p.hold = Duration::from_secs(5); // let the shell exit by itself
    let obs = run_trial(&p, &CancellationToken::new()).await;
    assert_eq!(obs.exit.as_ref().and_then(|e| e.code), Some(0), "{obs:#?}");
    assert_eq!(obs.orphans.len(), 1, "{obs:#?}");
    let orphan = &obs.orphans[0];
    assert!(orphan.left_group && orphan.killed, "{orphan:?}");
    assert!(orphan.cmdline.contains("sleep 30"));
    assert!(
        atropos_injector::procfs::ProcStat::read(orphan.pid)
            .is_none_or(|s| s.is_zombie() || s.starttime == 0),
        "orphan survived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descendant_aim_hits_only_the_matching_child() {
    atropos_injector::init().unwrap();
    let script = "sleep 31 & sleep 32 & echo ready; wait; echo children gone";
    let steps = vec![StepPlan {
        action: Action::Signal(Signal::KILL),
        aim: Aim::Descendant("^sleep 31$".into()),
        when: When::Phase {
            index: 0,
            offset: Duration::from_millis(20),
        },
    }];
    let p = plan(
        script,
        vec![("ready", Marker::Stdout("^ready$".into()))],
        steps,
        Finish::AwaitExit,
    );
    let obs = run_trial(&p, &CancellationToken::new()).await;
    let d = &obs.deliveries[0];
    assert_eq!(d.outcome, DeliveryOutcome::Delivered, "{obs:#?}");
    assert_eq!(d.pids.len(), 1);
    assert!(d.offset_ns == 20_000_000 && d.delivered_ns >= d.trigger_ns + 20_000_000);
    // The shell still waits for `sleep 32`: it hangs past the grace and is killed.
    assert_eq!(obs.stop, StopReason::Hung);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_stops_a_server_after_its_last_phase() {
    atropos_injector::init().unwrap();
    let script = "trap 'echo cleanup done; exit 0' TERM; echo a; sleep 0.02; echo b; while :; do sleep 0.01; done";
    let phases = vec![
        ("a", Marker::Stdout("^a$".into())),
        ("b", Marker::Stdout("^b$".into())),
        ("d", Marker::Delay(Duration::from_millis(5))),
    ];
    let p = plan(script, phases, vec![], Finish::Stop);
    let obs = run_trial(&p, &CancellationToken::new()).await;
    assert_eq!(obs.stop, StopReason::Exited, "{obs:#?}");
    assert!(obs.phases.iter().all(|p| p.entered_ns.is_some()));
    let b = obs.phases[1].entered_ns.unwrap() - obs.phases[0].entered_ns.unwrap();
    assert!(b >= 20_000_000, "phase a lasted {b} ns");
    assert_eq!(obs.stop_signal.as_ref().unwrap().signal, Signal::TERM);
    assert_eq!(obs.watches[0].count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_then_resumes_the_target() {
    atropos_injector::init().unwrap();
    let script = "echo ready; sleep 0.1; echo after";
    let steps = vec![StepPlan {
        action: Action::Pause(Duration::from_millis(150)),
        aim: Aim::Group,
        when: When::Phase {
            index: 0,
            offset: Duration::ZERO,
        },
    }];
    let mut p = plan(
        script,
        vec![("ready", Marker::Stdout("^ready$".into()))],
        steps,
        Finish::AwaitExit,
    );
    p.grace = Duration::from_secs(2);
    let obs = run_trial(&p, &CancellationToken::new()).await;
    let d = &obs.deliveries[0];
    assert_eq!(
        (d.signal, d.outcome),
        (Signal::STOP, DeliveryOutcome::Delivered),
        "{obs:#?}"
    );
    let resumed = d.resumed_ns.unwrap();
    assert!(resumed - d.delivered_ns >= 150_000_000);
    let after = obs.stdout_tail.iter().find(|l| l.text == "after").unwrap();
    assert!(
        after.at_ns >= resumed,
        "output continued while paused: {obs:#?}"
    );
    assert_eq!(obs.exit.unwrap().code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreached_phase_skips_the_step_with_what_happened_instead() {
    atropos_injector::init().unwrap();
    let p = plan(
        "echo 'panic: boom' >&2; exit 2",
        vec![("ready", Marker::Stdout("^ready$".into()))],
        vec![at_phase(0, Signal::TERM)],
        Finish::AwaitExit,
    );
    let obs = run_trial(&p, &CancellationToken::new()).await;
    assert!(obs.deliveries.is_empty());
    assert!(
        obs.skipped[0].reason.contains("never reached")
            && obs.skipped[0].reason.contains("exit code 2"),
        "{obs:#?}"
    );
    assert_eq!(obs.stderr_tail[0].text, "panic: boom");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descendant_that_listens_opens_the_listen_phase() {
    atropos_injector::init().unwrap();
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v python3"])
        .output()
        .unwrap();
    if !found.status.success() {
        eprintln!("skipped: no python3 to play the listening descendant");
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // python3 runs as a child of the shell, not in its place: a descendant's socket counts.
    let script = format!(
        "python3 -c \"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); \
         s.listen(); time.sleep(0.3)\"; true"
    );
    let p = plan(
        &script,
        vec![("ready", Marker::Listen(port))],
        vec![],
        Finish::AwaitExit,
    );
    let obs = run_trial(&p, &CancellationToken::new()).await;
    assert_eq!(obs.error, None);
    let evidence = obs.phases[0].evidence.as_deref().unwrap_or_default();
    assert!(
        evidence.starts_with(&format!("port {port} listening (127.0.0.1, pid ")),
        "{obs:#?}"
    );
    assert_ne!(
        evidence,
        format!(
            "port {port} listening (127.0.0.1, pid {})",
            obs.pid.unwrap()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_held_by_another_process_is_not_the_target_listening_and_is_reported() {
    atropos_injector::init().unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let p = plan(
        "sleep 0.2",
        vec![("ready", Marker::Listen(port))],
        vec![at_phase(0, Signal::TERM)],
        Finish::AwaitExit,
    );
    let obs = run_trial(&p, &CancellationToken::new()).await;
    assert_eq!(obs.phases[0].entered_ns, None, "{obs:#?}");
    assert!(obs.deliveries.is_empty());
    let error = obs.error.unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "port {port} was already in use before the trial started"
        )),
        "{error}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_kills_the_target_at_once() {
    atropos_injector::init().unwrap();
    let phases = vec![
        ("ready", Marker::Stdout("^ready$".into())),
        ("never", Marker::Stdout("^never$".into())),
    ];
    let p = plan(
        "echo ready; exec sleep 30",
        phases,
        vec![],
        Finish::AwaitExit,
    );
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c2.cancel();
    });
    let obs = run_trial(&p, &cancel).await;
    assert_eq!(obs.stop, StopReason::Interrupted);
    assert_eq!(obs.exit.unwrap().signal, Some(Signal::KILL));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_matching_no_descendant_is_no_target() {
    atropos_injector::init().unwrap();
    let steps = vec![StepPlan {
        action: Action::Signal(Signal::KILL),
        aim: Aim::Descendant("no-such-worker".into()),
        when: When::Phase {
            index: 0,
            offset: Duration::ZERO,
        },
    }];
    let p = plan(
        "echo ready; sleep 0.05",
        vec![("ready", Marker::Stdout("^ready$".into()))],
        steps,
        Finish::AwaitExit,
    );
    let obs = run_trial(&p, &CancellationToken::new()).await;
    assert_eq!(
        obs.deliveries[0].outcome,
        DeliveryOutcome::NoTarget,
        "{obs:#?}"
    );
    assert!(obs.deliveries[0].pids.is_empty());
    assert_eq!(obs.exit.unwrap().code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_file_markers_open_their_phases() {
    atropos_injector::init().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The "health endpoint" answers 503 twice, then 200.
    let server = std::thread::spawn(move || {
        for status in [
            "503 Service Unavailable",
            "503 Service Unavailable",
            "200 OK",
        ] {
            let (mut sock, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = std::io::Read::read(&mut sock, &mut buf);
            std::io::Write::write_all(&mut sock, format!("HTTP/1.1 {status}\r\n\r\n").as_bytes())
                .unwrap();
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready.flag");
    let script = format!("sleep 0.05; touch {}; sleep 0.3", flag.display());
    let phases = vec![
        ("healthy", Marker::Http(format!("http://{addr}/healthz"))),
        ("flag", Marker::File(flag)),
    ];
    let steps = vec![StepPlan {
        action: Action::Signal(Signal::TERM),
        aim: Aim::Main,
        when: When::Phase {
            index: 1,
            offset: Duration::ZERO,
        },
    }];
    let obs = run_trial(
        &plan(&script, phases, steps, Finish::AwaitExit),
        &CancellationToken::new(),
    )
    .await;
    server.join().unwrap();
    assert!(
        obs.phases[0]
            .evidence
            .as_deref()
            .unwrap()
            .ends_with("answered 200"),
        "{obs:#?}"
    );
    let flag_at = obs.phases[1].entered_ns.unwrap();
    assert!(
        flag_at >= 50_000_000,
        "the file marker waited for the file: {flag_at}"
    );
    assert_eq!(obs.deliveries[0].phase, "flag");
    assert_eq!(obs.exit.unwrap().signal, Some(Signal::TERM));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_are_sampled_while_the_target_runs() {
    atropos_injector::init().unwrap();
    let mut p = plan(
        "echo ready; sleep 0.1",
        vec![("ready", Marker::Stdout("^ready$".into()))],
        vec![],
        Finish::AwaitExit,
    );
    p.sample_resources = true;
    p.hold = Duration::from_secs(1);
    let obs = run_trial(&p, &CancellationToken::new()).await;
    let r = obs.resources.unwrap();
    assert!(r.samples >= 5, "sampled every 10ms for 100ms: {r:?}");
    assert_eq!(r.max_threads, 1);
    assert!(r.max_rss_bytes > 100 * 1024, "{r:?}");
}

/// atropos tunes its trial threads (1 µs timer slack, a short scheduler slice); a target
/// must start with what the process that runs atropos has, as it would without atropos.
#[test]
fn a_target_inherits_neither_timer_slack_nor_slice_of_the_trial_thread() {
    atropos_injector::init().unwrap();
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let line = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
    };
    let slack = nix::sys::prctl::get_timerslack().unwrap().to_string();
    let slice = line(&read("/proc/thread-self/sched"), "se.slice");
    let script = "echo slack $(cat /proc/self/timerslack_ns); \
                  echo slice $(grep '^se.slice' /proc/self/sched | cut -d: -f2); echo ready";
    let p = plan(
        script,
        vec![("ready", Marker::Stdout("^ready$".into()))],
        vec![],
        Finish::AwaitExit,
    );
    // On this thread, as a lane runs trials.
    let obs = atropos_injector::trial::run_blocking(&p, &CancellationToken::new());
    let said = |key: &str| {
        obs.stdout_tail
            .iter()
            .find_map(|l| l.text.strip_prefix(key).map(|v| v.trim().to_owned()))
    };
    assert_eq!(said("slack "), Some(slack), "{obs:#?}");
    // The trial thread itself now has the short slice; the target has what we had before.
    let now = line(&read("/proc/thread-self/sched"), "se.slice");
    // What can be known on any kernel: the target runs with the slice the thread had
    // before. Whether the thread got its short slice depends on the kernel (6.12 and later
    // honour `sched_runtime`; others accept and ignore it), so it is checked only where the
    // thread's slice changed at all.
    if let (Some(before), Some(now)) = (slice, now) {
        assert_eq!(said("slice "), Some(before.clone()), "{obs:#?}");
        if now != before {
            assert_eq!(now, "100000", "the trial thread asked for a 100 µs slice");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_step_after_the_leader_is_reaped_signals_nothing_and_is_already_finished() {
    atropos_injector::init().unwrap();
    let steps = vec![
        StepPlan {
            action: Action::Signal(Signal::TERM),
            aim: Aim::Group,
            when: When::Exited(ExitedState::Reaped),
        },
        StepPlan {
            action: Action::Signal(Signal::TERM),
            aim: Aim::Group,
            when: When::After(Duration::from_millis(50)),
        },
    ];
    let p = plan("echo ready", vec![], steps, Finish::AwaitExit);
    let obs = run_trial(&p, &CancellationToken::new()).await;
    assert_eq!(obs.deliveries.len(), 2, "{obs:#?}");
    for d in &obs.deliveries {
        assert_eq!(d.outcome, DeliveryOutcome::AlreadyFinished, "{obs:#?}");
    }
}

/// A target that enters `init` and never `ready`, with a SIGTERM due at `ready`.
fn stuck_in_init() -> TrialPlan {
    plan(
        "echo init; while :; do sleep 0.01; done",
        vec![
            ("init", Marker::Stdout("^init$".into())),
            ("ready", Marker::Stdout("^ready$".into())),
        ],
        vec![at_phase(1, Signal::TERM)],
        Finish::AwaitExit,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phase_missing_its_deadline_ends_the_trial_at_once_naming_both_phases() {
    atropos_injector::init().unwrap();
    let mut p = stuck_in_init();
    p.phases[1].within = Some(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let obs = run_trial(&p, &CancellationToken::new()).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited for the timeout"
    );
    assert_eq!(obs.stop, StopReason::PhaseDeadline, "{obs:#?}");
    let missed = obs.missed.as_ref().unwrap();
    assert_eq!(
        (missed.phase.as_str(), missed.in_phase.as_str()),
        ("ready", "init")
    );
    assert_eq!(missed.within_ns, 300_000_000);
    assert_eq!(obs.skipped.len(), 1, "{obs:#?}");
    assert!(
        obs.skipped[0].reason.contains("waiting for phase `ready`"),
        "{}",
        obs.skipped[0].reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_left_waiting_at_the_timeout_is_skipped_with_the_phase_it_waited_for() {
    atropos_injector::init().unwrap();
    let mut p = stuck_in_init();
    p.timeout = Duration::from_millis(300);
    let obs = run_trial(&p, &CancellationToken::new()).await;
    assert_eq!(obs.stop, StopReason::Timeout, "{obs:#?}");
    assert_eq!(obs.skipped.len(), 1, "{obs:#?}");
    let reason = &obs.skipped[0].reason;
    assert!(
        reason.contains("timed out after 300ms in phase `init`, waiting for phase `ready`"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_after_exit_step_against_a_target_that_ignores_the_stop_is_skipped_with_why() {
    atropos_injector::init().unwrap();
    let steps = vec![StepPlan {
        action: Action::Signal(Signal::TERM),
        aim: Aim::Main,
        when: When::Exited(ExitedState::Zombie),
    }];
    let p = plan(
        "trap '' TERM; echo ready; while :; do sleep 0.01; done",
        vec![("ready", Marker::Stdout("^ready$".into()))],
        steps,
        Finish::AwaitExit,
    );
    let obs = run_trial(&p, &CancellationToken::new()).await;
    assert_eq!(obs.stop, StopReason::Hung, "{obs:#?}");
    assert!(obs.deliveries.is_empty());
    assert_eq!(obs.skipped.len(), 1, "{obs:#?}");
    assert!(
        obs.skipped[0]
            .reason
            .contains("ignored atropos's SIGTERM for 500ms and was killed (hung)"),
        "{}",
        obs.skipped[0].reason
    );
}

/// The signal state of the calling thread and process, changed for one test and put back.
struct InheritedSignals {
    old_mask: nix::sys::signal::SigSet,
}

impl InheritedSignals {
    fn hostile() -> InheritedSignals {
        use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal as S, signal};
        // SAFETY-free: nix's `signal` is unsafe only for handlers; SIG_IGN installs none.
        #[allow(unsafe_code)]
        unsafe {
            signal(S::SIGHUP, SigHandler::SigIgn).unwrap();
            signal(S::SIGUSR2, SigHandler::SigIgn).unwrap();
        }
        let mut block = SigSet::empty();
        block.add(S::SIGINT);
        block.add(S::SIGQUIT);
        let mut old_mask = SigSet::empty();
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&block), Some(&mut old_mask))
            .unwrap();
        InheritedSignals { old_mask }
    }
}

impl Drop for InheritedSignals {
    fn drop(&mut self) {
        use nix::sys::signal::{SigHandler, SigmaskHow, Signal as S, signal};
        #[allow(unsafe_code)]
        unsafe {
            signal(S::SIGHUP, SigHandler::SigDfl).unwrap();
            signal(S::SIGUSR2, SigHandler::SigDfl).unwrap();
        }
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old_mask), None)
            .unwrap();
    }
}

#[test]
fn a_target_starts_with_every_signal_default_and_none_blocked_whatever_atropos_inherited() {
    atropos_injector::init().unwrap();
    let token = format!("atropos-sigs-{}", rand_token());
    let mut p = plan("", vec![], vec![], Finish::AwaitExit);
    let Target::Run(run) = &mut p.target else {
        unreachable!("plan() makes a run target")
    };
    run.argv = vec![
        "grep".into(),
        "-E".into(),
        "-e".into(),
        "^Sig(Ign|Blk):".into(),
        "-e".into(),
        token,
        "/proc/self/status".into(),
    ];
    let obs = {
        let _hostile = InheritedSignals::hostile();
        atropos_injector::trial::run_blocking(&p, &CancellationToken::new())
    };
    let lines: Vec<&str> = obs.stdout_tail.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(lines.len(), 2, "{obs:#?}");
    for line in lines {
        let (name, mask) = line.split_once(':').unwrap();
        assert_eq!(
            mask.trim(),
            "0000000000000000",
            "{name} of the target: {line}"
        );
    }
}
