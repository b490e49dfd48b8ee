//! Shared helpers of the end-to-end tests: run the built `atropos` as CI would, read its
//! JSON, and look for leftover processes by a unique token in their argv (never by name).
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("controller/ has a parent")
        .to_owned()
}

/// The built `atropos` binary.
pub fn atropos() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atropos"));
    cmd.current_dir(root()).env_remove("ATROPOS_LOG");
    cmd
}

/// A fresh temporary folder.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temp dir can be made")
}

/// Runs `atropos run ARGS... --json FILE --db DIR/atropos.db` (the results store in `dir`,
/// never in the work tree) and returns its output and the parsed JSON.
pub fn run_json(args: &[&str], dir: &Path) -> (Output, serde_json::Value) {
    let json = dir.join("report.json");
    let output = atropos()
        .arg("run")
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--db")
        .arg(dir.join("atropos.db"))
        .output()
        .expect("atropos runs");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (
        output,
        serde_json::from_str(&text).expect("the JSON report parses"),
    )
}

/// The trials of one experiment and fault from a JSON report.
pub fn trials<'a>(
    report: &'a serde_json::Value,
    experiment: &str,
    fault: &str,
) -> Vec<&'a serde_json::Value> {
    report["trials"]
        .as_array()
        .expect("trials is an array")
        .iter()
        .filter(|t| t["experiment"] == experiment && t["fault"] == fault)
        .collect()
}

/// The trials of one experiment and fault, after asserting that there are exactly `n`: a
/// loop over them must not pass because a rename left none.
pub fn trials_n<'a>(
    report: &'a serde_json::Value,
    experiment: &str,
    fault: &str,
    n: usize,
) -> Vec<&'a serde_json::Value> {
    let found = trials(report, experiment, fault);
    assert_eq!(
        found.len(),
        n,
        "trials of {experiment}/{fault} in the report"
    );
    found
}

/// Pids of live processes whose command line or environment contains `token`.
pub fn processes_with(token: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .expect("/proc is readable")
        .flatten()
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmd.contains(token) || String::from_utf8_lossy(&environ).contains(token) {
            found.push((pid, cmd));
        }
    }
    found
}

/// A token unique to this test process and call.
pub fn token(label: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "atropos-e2e-{label}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A process group this test started (`process_group(0)`): its leader stays unreaped until
/// the whole group is killed, so the group's number cannot name anyone else's.
pub struct Group(pub Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap());
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// A number unique to this test process and moment, for argv that must stay a valid
/// number (`sleep 3000.TAG`): no other `sleep` on the machine has it.
pub fn numeric_tag() -> String {
    format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_micros()
    )
}

/// A child this test spawned, ended with SIGTERM (SIGKILL after 5 s) when dropped.
pub struct Owned(pub Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A trial's reasons in one line, for assertion messages.
pub fn reasons(t: &serde_json::Value) -> String {
    t["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The address `atropos serve` says it listens on, from the first line of its piped stdout.
pub fn served_address(child: &mut Child) -> String {
    use std::io::{BufRead, BufReader};
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("serve's stdout is piped"))
        .read_line(&mut line)
        .expect("serve prints its address");
    line.split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim()
        .to_owned()
}

/// An experiment aiming `SIGTERM` at the processes `attach` (a YAML flow map) selects, 10 ms
/// after selection; `rest` is appended to its `spec:`.
pub fn attach_experiment(attach: &str, rest: &str) -> String {
    format!(
        r#"apiVersion: atropos/v1
kind: Experiment
metadata: {{ name: attach-test }}
spec:
  target:
    attach: {attach}
  phases:
    - {{ name: up, marker: {{ delay: 10ms }} }}
  faults:
    - {{ name: term-up, signal: SIGTERM, at: {{ phase: up }} }}
{rest}"#
    )
}

/// `atropos run --dry-run --no-db` of `yaml` (written to `dir/attach.yaml`) with `extra`.
pub fn attach_dry_run(dir: &Path, yaml: &str, extra: &[&str]) -> Output {
    let path = dir.join("attach.yaml");
    std::fs::write(&path, yaml).unwrap();
    atropos()
        .args(["run", "--dry-run", "--no-db"])
        .arg(&path)
        .args(extra)
        .output()
        .unwrap()
}

/// A cgroup v2 folder of this test's own, at the hierarchy's root; removed when dropped
/// (once empty).
pub struct OwnCgroup {
    pub dir: std::path::PathBuf,
    pub path: String,
}

impl OwnCgroup {
    pub fn new(token: &str) -> OwnCgroup {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = mountinfo
            .lines()
            .find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                (right.split_whitespace().next()? == "cgroup2")
                    .then(|| left.split_whitespace().nth(4).map(std::path::PathBuf::from))?
            })
            .expect("a cgroup v2 hierarchy is mounted");
        let path = format!("/{token}");
        let dir = mount.join(token);
        std::fs::create_dir(&dir).unwrap();
        OwnCgroup { dir, path }
    }

    pub fn adopt(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    pub fn members(&self) -> Vec<i64> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }
}

impl Drop for OwnCgroup {
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
