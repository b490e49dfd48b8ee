//! The promises the engine makes, kept against hostile circumstances: a PID reused under a
//! pending group step, atropos SIGKILLed mid-run with a target that escaped its session, and
//! atropos started with signals ignored and blocked.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{atropos, processes_with, tempdir, token};

/// An experiment of two trials that take a few milliseconds.
const QUICK: &str = r#"apiVersion: atropos/v1
kind: Experiment
metadata: { name: quick }
spec:
  target:
    run: { command: ["sh", "-c", "echo up"] }
  phases:
    - { name: up, marker: { stdout: "^up$" } }
  faults:
    - { name: after, signal: SIGTERM, at: { exited: reaped } }
  trials: 1
"#;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// In a private PID namespace, the target writes its pid and exits; once it is reaped, the
/// test steers the namespace's next pid (`ns_last_pid`) so that a victim it starts in a new
/// session gets the very same number, which is also the number of the target's old process
/// group. The fault's second step, a SIGTERM to the group 2 s later, must find the leader
/// gone and signal nothing.
#[test]
fn a_group_step_after_the_leader_is_reaped_never_hits_the_process_that_reused_its_number() {
    if Command::new("unshare").arg("--help").output().is_err() {
        panic!("unshare (util-linux) is needed for this test");
    }
    let dir = tempdir();
    let tok = token("pid-reuse");
    let victim_tok = token("pid-reuse-victim");
    let pids = dir.path().join("pids");
    let exp = write(
        dir.path(),
        "reuse.yaml",
        &format!(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: pid-reuse }}
spec:
  target:
    run: {{ command: ["sh", "-c", "echo $$ >> {pids}; echo up", "{tok}"] }}
  phases:
    - {{ name: up, marker: {{ stdout: "^up$" }} }}
  faults:
    - name: late-group-term
      steps:
        - {{ signal: SIGTERM, to: group, at: {{ exited: reaped }} }}
        - {{ signal: SIGTERM, to: group, after: 2s }}
  trials: 1
"#,
            pids = pids.display()
        ),
    );
    let json = dir.path().join("report.json");
    let victim_pid = dir.path().join("victim.pid");
    // The namespace's init runs atropos, waits for the fault trial's target (the second pid
    // written) to be reaped, then starts the victim on the same number.
    let script = format!(
        r#"
"$ATROPOS" run --no-db --jobs 1 --json "{json}" "{exp}" >"{dir}/out" 2>&1 &
a=$!
while [ "$(wc -l < "{pids}" 2>/dev/null || echo 0)" -lt 2 ]; do sleep 0.005; done
t=$(sed -n 2p "{pids}")
while [ -e /proc/$t ]; do sleep 0.001; done
echo $((t - 1)) > /proc/sys/kernel/ns_last_pid
setsid sh -c 'echo $$ > "{victim_pid}"; exec sleep 30' {victim_tok} &
wait $a
echo "target $t"
if kill -0 "$(cat "{victim_pid}")" 2>/dev/null; then echo victim-alive; else echo victim-dead; fi
kill -9 "$(cat "{victim_pid}")" 2>/dev/null
"#,
        json = json.display(),
        exp = exp.display(),
        dir = dir.path().display(),
        pids = pids.display(),
        victim_pid = victim_pid.display(),
    );
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script])
        .env("ATROPOS", env!("CARGO_BIN_EXE_atropos"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = std::fs::read_to_string(dir.path().join("out")).unwrap_or_default();
    let target: i32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("target "))
        .unwrap_or_else(|| panic!("no target pid: {stdout}\n{log}"))
        .trim()
        .parse()
        .unwrap();
    let victim: i32 = std::fs::read_to_string(&victim_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(victim, target, "the victim did not get the reused number");
    assert!(
        stdout.contains("victim-alive"),
        "the process that reused the number was signalled: {stdout}\n{log}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let trials = common::trials(&report, "pid-reuse", "late-group-term");
    assert_eq!(trials.len(), 1);
    let deliveries = trials[0]["observation"]["deliveries"]
        .as_array()
        .or_else(|| trials[0]["deliveries"].as_array())
        .unwrap_or_else(|| panic!("no deliveries in {}", trials[0]));
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    for d in deliveries {
        assert_eq!(d["outcome"], "already_finished", "{d}");
    }
    assert!(processes_with(&victim_tok).is_empty());
}

fn cgroup_v2_root() -> Option<std::path::PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        right
            .starts_with("cgroup2 ")
            .then(|| left.split_whitespace().nth(4).map(Into::into))?
    })
}

/// atropos SIGKILLed at random moments, 20 times, while its target has started a worker in
/// a session of its own (out of reach of the process group) and trial folders exist: no
/// process is left once the guardian has done its work, and the next atropos removes the
/// folders of the dead runs.
#[test]
fn sigkill_of_atropos_at_random_moments_leaves_no_process_and_no_folder() {
    sigkill_rounds(false);
}

/// The same where no cgroup is used: the guardian's groups and its sweep by the owner mark
/// in the environment find the escapee.
#[test]
fn sigkill_of_atropos_without_cgroups_leaves_no_process_and_no_folder() {
    sigkill_rounds(true);
}

fn sigkill_rounds(no_cgroup: bool) {
    let dir = tempdir();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let tok = token("sigkill-leak");
    let exp = write(
        dir.path(),
        "escapee.yaml",
        &format!(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: escapee }}
spec:
  target:
    run:
      command:
        - sh
        - -c
        - "setsid sh -c 'exec sleep 30' {tok}-worker & mkdir -p ${{trial.dir}}/state; echo ready; exec sleep 30"
        - "{tok}"
  phases:
    - {{ name: ready, marker: {{ stdout: "^ready$" }} }}
  faults:
    - {{ name: term-ready, signal: SIGTERM, at: {{ phase: ready, offset: "random(0ms..100ms)" }} }}
  expect:
    orphans: none
  trials: 40
"#
        ),
    );
    let mut killed_pids = Vec::new();
    let mut rng = 0x9e37_79b9_u32 ^ std::process::id();
    for round in 0..20 {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let wait = Duration::from_millis(30 + u64::from(rng % 400));
        let mut child = atropos()
            .args(["run", "--no-db", "--jobs", "2"])
            .arg(&exp)
            .env("TMPDIR", &tmp)
            .env("ATROPOS_NO_CGROUP", if no_cgroup { "1" } else { "" })
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(wait);
        killed_pids.push(child.id());
        child.kill().unwrap(); // SIGKILL, of the atropos this test started
        child.wait().unwrap();
        // The guardian kills the run's cgroup; give it a moment, bounded.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut left = processes_with(&tok);
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            left = processes_with(&tok);
        }
        assert!(
            left.is_empty(),
            "round {round} (killed after {wait:?}): left behind {left:?}"
        );
    }
    // The next atropos start removes the folders of the dead runs.
    let quick = write(dir.path(), "quick.yaml", QUICK);
    let out = atropos()
        .args(["run", "--no-db"])
        .arg(&quick)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let folders: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let listing: Vec<String> = folders
        .iter()
        .map(|f| {
            let inner: Vec<_> = std::fs::read_dir(tmp.join(f))
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            format!("{f:?}: {inner:?}")
        })
        .collect();
    assert!(folders.is_empty(), "left in TMPDIR: {listing:?}");
    if let Some(root) = cgroup_v2_root() {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let parent = root.join(own.trim_start_matches('/'));
        for pid in killed_pids {
            let stale: Vec<_> = std::fs::read_dir(&parent)
                .unwrap()
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("atropos-{pid}."))
                })
                .collect();
            assert!(stale.is_empty(), "cgroup of killed atropos {pid} left");
        }
    }
}

/// atropos under `nohup`, with SIGINT and SIGQUIT ignored and blocked: its target still
/// starts with every signal at its default action and none blocked.
#[test]
fn a_target_has_default_signals_however_atropos_was_started() {
    use std::os::unix::process::CommandExt;
    let dir = tempdir();
    let tok = token("signals");
    let exp = write(
        dir.path(),
        "signals.yaml",
        &format!(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: signals }}
spec:
  target:
    run: {{ command: ["grep", "-E", "-e", "^Sig(Ign|Blk):", "-e", "{tok}", "/proc/self/status"] }}
  phases:
    - {{ name: read, marker: {{ stdout: "^SigIgn:" }} }}
  faults:
    - {{ name: after, signal: SIGTERM, at: {{ exited: reaped }} }}
  expect:
    exit: {{ codes: [0] }}
    stdout: {{ contains: ["^SigIgn:\\s+0+$", "^SigBlk:\\s+0+$"] }}
  trials: 1
"#
        ),
    );
    let json = dir.path().join("report.json");
    let mut cmd = Command::new("nohup");
    cmd.arg(env!("CARGO_BIN_EXE_atropos"))
        .args(["run", "--no-db", "--json"])
        .arg(&json)
        .arg(&exp)
        .current_dir(dir.path());
    // SAFETY: between fork and exec only sigprocmask and signal, both async-signal-safe.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};
            let mut set = SigSet::empty();
            set.add(Signal::SIGINT);
            set.add(Signal::SIGQUIT);
            sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
            signal(Signal::SIGINT, SigHandler::SigIgn)?;
            signal(Signal::SIGQUIT, SigHandler::SigIgn)?;
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        }))
        .unwrap();
    let trials = report["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2, "baseline and one fault trial");
    for t in trials {
        assert_eq!(t["verdict"], "pass", "{}", common::reasons(t));
    }
    assert_eq!(out.status.code(), Some(0));
}

/// The run says how it contained its trials: in the first line and in the JSON report.
#[test]
fn a_run_records_which_containment_it_used() {
    let dir = tempdir();
    let exp = write(dir.path(), "quick.yaml", QUICK);
    let expected = if cgroup_v2_root().is_some() {
        ["cgroup", "process_group"]
    } else {
        ["process_group", "process_group"]
    };
    for (no_cgroup, mechanism) in ["", "1"].into_iter().zip(expected) {
        let json = dir.path().join(format!("report{no_cgroup}.json"));
        let out = atropos()
            .args(["run", "--no-db", "--json"])
            .arg(&json)
            .arg(&exp)
            .env("ATROPOS_NO_CGROUP", no_cgroup)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(
            report["run"]["containment"]["mechanism"], mechanism,
            "{}",
            report["run"]
        );
        let first = said
            .lines()
            .find(|l| l.starts_with("atropos ") && l.contains(": run "))
            .unwrap_or_else(|| panic!("no run line in {said}"));
        let shown = if mechanism == "cgroup" {
            "contained by cgroup v2"
        } else {
            "contained by process groups"
        };
        assert!(first.contains(shown), "{first}");
    }
}

/// An atropos in another PID namespace (a container, `unshare --pid`) shares the cgroup tree,
/// `/tmp` and the state folder with this one, but its numbers name other processes: its
/// start-up sweeps must not judge this run dead and kill its cgroup, remove its folder or
/// resume its pauses. (Found when the PID-reuse test's run, started beside this one, killed
/// a host run's cgroup.)
#[test]
fn an_atropos_in_another_pid_namespace_leaves_this_ones_run_alone() {
    let dir = tempdir();
    let tok = token("pidns-neighbour");
    let exp = write(
        dir.path(),
        "slow.yaml",
        &format!(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: slow }}
spec:
  target:
    run: {{ command: ["sh", "-c", "echo up; sleep 3; echo done", "{tok}"] }}
  phases:
    - {{ name: up, marker: {{ stdout: "^up$" }} }}
  faults:
    - name: pause-then-resume
      steps:
        - {{ signal: SIGSTOP, at: {{ phase: up }} }}
        - {{ signal: SIGCONT, after: 3s }}
  trials: 1
"#
        ),
    );
    let quick = write(dir.path(), "quick.yaml", QUICK);
    let json = dir.path().join("report.json");
    let mut host = atropos()
        .args(["run", "--no-db", "--json"])
        .arg(&json)
        .arg(&exp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until a host target is up, then start neighbours until the host run ends: each
    // sweeps at start-up while a host trial is running or paused.
    let deadline = Instant::now() + Duration::from_secs(20);
    while processes_with(&tok).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the host run's targets never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut rounds = 0;
    while host.try_wait().unwrap().is_none() {
        let out = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(env!("CARGO_BIN_EXE_atropos"))
            .args(["run", "--no-db"])
            .arg(&quick)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "round {rounds}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        rounds += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = host.wait_with_output().unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        }))
        .unwrap();
    if cgroup_v2_root().is_some() {
        assert_eq!(report["run"]["containment"]["mechanism"], "cgroup");
    }
    let trials = report["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2, "baseline and one fault trial");
    for t in trials {
        assert_eq!(t["verdict"], "pass", "{}", common::reasons(t));
    }
    assert_eq!(out.status.code(), Some(0));
    assert!(processes_with(&tok).is_empty());
    assert!(
        rounds >= 5,
        "only {rounds} neighbours ran beside the host run"
    );
}
