//! A `journald` marker: the lines a systemd unit logs to the journal, followed through
//! `journalctl --follow`.
//!
//! The journal's files are systemd's own format, read by systemd's own tool: atropos spawns
//! `journalctl --unit UNIT --follow --since @T --output json` and reads one entry per line
//! from its pipe, which the trial loop waits on like a log file's inotify descriptor. `T` is
//! the wall-clock time the marker was made (or, for a recovery, when its trial began), so an
//! entry written while `journalctl` starts is not missed and one from before is not taken.
//! `--merge` keeps `--follow` from limiting itself to the current boot's files (a journal
//! copied from elsewhere, or just rotated, may not have one yet); `--directory` reads a
//! journal kept elsewhere (a container's, or a test's).
//!
//! `journalctl` is a child of this thread, killed and reaped when the follower is dropped,
//! and killed by the kernel should atropos itself be killed ([`crate::unix`]'s
//! `die_with_spawner`): nothing of a marker outlives its trial.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

/// How many of a unit's last entries are searched for a phase already reached when a trial
/// attaches to a running service.
pub const LOOKBACK_ENTRIES: usize = 1000;

/// The most of one entry line kept while waiting for its end (longer lines are cut).
const MAX_LINE: usize = 64 * 1024;

/// The program that reads the journal.
pub const JOURNALCTL: &str = "journalctl";

/// Wall-clock time now, in microseconds since the epoch (the journal's own clock).
pub fn realtime_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Whether `journalctl` can be run here.
pub fn available() -> bool {
    Command::new(JOURNALCTL)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The arguments common to every read of `unit`'s entries.
fn base_args(unit: &str, directory: Option<&Path>) -> Vec<String> {
    let mut args = vec![
        format!("--unit={unit}"),
        "--output=json".to_owned(),
        "--output-fields=MESSAGE,_PID".to_owned(),
        "--no-pager".to_owned(),
        "--quiet".to_owned(),
    ];
    if let Some(dir) = directory {
        args.push(format!("--directory={}", dir.display()));
    }
    args
}

/// One journal entry's message, as the marker's regex sees it.
fn message(line: &[u8]) -> Option<String> {
    let entry: serde_json::Value = serde_json::from_slice(line).ok()?;
    match entry.get("MESSAGE")? {
        serde_json::Value::String(text) => Some(text.clone()),
        // Messages that are not UTF-8 come as arrays of bytes.
        serde_json::Value::Array(bytes) => {
            let bytes: Vec<u8> = bytes
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        _ => None,
    }
}

/// A unit's entries from a moment on, as they are written.
pub struct JournalFollower {
    child: Child,
    out: ChildStdout,
    partial: Vec<u8>,
    /// `journalctl` closed its output (it failed, or was killed): nothing more will come,
    /// and the loop must not wait on a descriptor that stays readable.
    ended: bool,
}

impl JournalFollower {
    /// Follows `unit`'s entries written at or after `since_us` (wall clock, µs).
    pub fn since(
        unit: &str,
        directory: Option<&Path>,
        since_us: u64,
    ) -> std::io::Result<JournalFollower> {
        let mut command = Command::new(JOURNALCTL);
        command
            .args(base_args(unit, directory))
            .arg("--follow")
            .arg("--merge")
            .arg(format!(
                "--since=@{}.{:06}",
                since_us / 1_000_000,
                since_us % 1_000_000
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        crate::unix::die_with_spawner(&mut command);
        let mut child = crate::process::spawn_helper(&mut command)?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("journalctl has no stdout"))?;
        nix::fcntl::fcntl(
            out.as_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        Ok(JournalFollower {
            child,
            out,
            partial: Vec::new(),
            ended: false,
        })
    }

    /// The descriptor that is readable when entries arrived; `None` once `journalctl`
    /// ended.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        (!self.ended).then(|| self.out.as_fd())
    }

    /// The messages of the entries that arrived since the last call; never blocks.
    pub fn lines(&mut self) -> Vec<String> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.out.read(&mut buf) {
                Ok(0) => {
                    self.ended = true;
                    break;
                }
                Ok(n) => self.partial.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let mut lines = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            lines.extend(message(&line[..end]));
        }
        if self.partial.len() > MAX_LINE {
            self.partial.clear();
        }
        lines
    }
}

impl Drop for JournalFollower {
    fn drop(&mut self) {
        // Our own child, registered so that no sweep reaps it: its pid cannot name anyone
        // else until this wait.
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::process::forget_helper(self.child.id());
    }
}

/// The last of `unit`'s recent entries (this boot's last [`LOOKBACK_ENTRIES`]) whose message
/// `matches`: a phase a running service reached before the trial attached.
pub fn last_match(
    unit: &str,
    directory: Option<&Path>,
    matches: impl Fn(&str) -> bool,
) -> Option<String> {
    let out = Command::new(JOURNALCTL)
        .args(base_args(unit, directory))
        .arg("--boot")
        .arg(format!("--lines={LOOKBACK_ENTRIES}"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.stdout
        .split(|&b| b == b'\n')
        .filter_map(message)
        .filter(|m| matches(m))
        .last()
}

/// A journal that a test writes: `systemd-journal-remote` turning export-format entries into
/// a journal file in a folder, which `journalctl --directory` reads like the system's.
#[doc(hidden)]
pub mod testing {
    use std::fs::File;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};

    /// Where Debian installs it (package `systemd-journal-remote`).
    pub const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

    /// A journal in a folder of the caller's, fed entries as a unit would log them: by
    /// [`TestJournal::log`], or by any process that writes an entry into [`TestJournal::fifo`].
    pub struct TestJournal {
        child: Option<Child>,
        input: Option<File>,
        /// The folder `journalctl --directory` reads.
        pub dir: PathBuf,
        /// A FIFO that takes entries in the export format (one `write` each).
        pub fifo: PathBuf,
        /// This boot's id, as entries carry it.
        pub boot: String,
    }

    impl TestJournal {
        /// A journal in `dir`; `None` where `systemd-journal-remote` is not installed.
        pub fn start(dir: &Path) -> Option<TestJournal> {
            let fifo = dir.join("entries.fifo");
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).ok()?;
            // The reader's end first, without waiting for a writer; then ours, held open
            // until the end (the journal's input ends when the last writer closes).
            let reader = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .ok()?;
            let input = std::fs::OpenOptions::new().write(true).open(&fifo).ok()?;
            nix::fcntl::fcntl(
                &reader,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
            )
            .ok()?;
            let child = Command::new(JOURNAL_REMOTE)
                .arg(format!("--output={}/remote.journal", dir.display()))
                .arg("-")
                .stdin(reader)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()?
                .trim()
                .replace('-', "");
            Some(TestJournal {
                child: Some(child),
                input: Some(input),
                dir: dir.to_owned(),
                fifo,
                boot,
            })
        }

        /// One entry of `unit` from `pid`, stamped now, in the export format.
        pub fn entry(&self, unit: &str, pid: i32, message: &str) -> String {
            format!(
                "__REALTIME_TIMESTAMP={}\n_BOOT_ID={}\n_SYSTEMD_UNIT={unit}\n_PID={pid}\nMESSAGE={message}\n\n",
                super::realtime_us(),
                self.boot
            )
        }

        /// Writes one entry of `unit` from `pid`, stamped now.
        pub fn log(&mut self, unit: &str, pid: i32, message: &str) {
            let entry = self.entry(unit, pid, message);
            if let Some(input) = self.input.as_mut() {
                let _ = input.write_all(entry.as_bytes());
            }
        }
    }

    impl Drop for TestJournal {
        fn drop(&mut self) {
            // Its input ends with our end of the FIFO (the test's processes wrote theirs and
            // closed them): it writes what it has and exits. It blocks SIGTERM while it reads.
            let Some(child) = self.child.as_mut() else {
                return;
            };
            drop(self.input.take());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            // Our own unreaped child: its pid cannot name anyone else.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::time::{Duration, Instant};

    use super::testing::TestJournal;
    use super::*;

    fn journal(dir: &Path) -> Option<TestJournal> {
        let journal = TestJournal::start(dir);
        if journal.is_none() && std::env::var_os("CI").is_some() {
            panic!("systemd-journal-remote is missing; .ci/run installs it");
        }
        journal
    }

    fn wait_for(follower: &mut JournalFollower, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            seen.extend(follower.lines());
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    }

    #[test]
    fn follows_only_its_units_entries_written_since_it_began() {
        let dir = tempfile::tempdir().unwrap();
        let Some(mut journal) = journal(dir.path()) else {
            eprintln!("skipped: systemd-journal-remote is not installed");
            return;
        };
        let unit = format!("atropos-test-{}.service", std::process::id());
        journal.log(&unit, 10, "an old line: ready");
        std::thread::sleep(Duration::from_millis(20));
        let mut follower =
            JournalFollower::since(&unit, Some(&journal.dir), realtime_us()).unwrap();
        journal.log("another.service", 11, "ready, but another unit's");
        journal.log(&unit, 12, "loading");
        journal.log(&unit, 12, "ready to accept connections");
        let seen = wait_for(&mut follower, Duration::from_millis(800));
        assert_eq!(seen, ["loading", "ready to accept connections"]);
        // A service already up: its earlier entry is found by looking back.
        let found = last_match(&unit, Some(&journal.dir), |m| m.contains("ready"));
        assert_eq!(found.as_deref(), Some("ready to accept connections"));
        assert_eq!(
            last_match(&unit, Some(&journal.dir), |m| m.contains("absent")),
            None
        );
    }

    #[test]
    fn its_journalctl_ends_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let follower = JournalFollower::since("none.service", Some(dir.path()), realtime_us());
        let Ok(follower) = follower else {
            eprintln!("skipped: journalctl cannot be run");
            return;
        };
        let pid = i32::try_from(follower.child.id()).unwrap();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(follower);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || !stat.contains("journalctl"),
            "journalctl {pid} still there: {stat}"
        );
    }
}
