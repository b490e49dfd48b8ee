//! Reading `/proc`: who is alive, who descends from whom, and what they use.
//!
//! Every scan is a snapshot; a process found here may be gone a microsecond later, so callers
//! treat a missing entry as "already finished", never as an error.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};

/// Reads a `/proc` file whole. These files say their size is 0, so `fs::read` starts with
/// a 32-byte probe and doubles from there: 6 to 8 reads for a `stat` or `environ`, each a
/// trip into the kernel that costs 10–50 µs on a virtual machine. A 4 KiB buffer takes one.
pub fn read(path: impl AsRef<std::path::Path>) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(4096);
    fs::File::open(path)?.read_to_end(&mut buf)?;
    Ok(buf)
}

/// [`read`] as text (`/proc` text files are ASCII but for names, taken lossily).
pub fn read_text(path: impl AsRef<std::path::Path>) -> io::Result<String> {
    read(path).map(|raw| match String::from_utf8(raw) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// This process's pid and start time, which together name it for its whole life.
pub fn me() -> (i32, u64) {
    static ME: std::sync::OnceLock<(i32, u64)> = std::sync::OnceLock::new();
    *ME.get_or_init(|| {
        let pid = std::process::id() as i32;
        (pid, ProcStat::read(pid).map_or(0, |s| s.starttime))
    })
}

/// This process's PID namespace (the inode behind `/proc/self/ns/pid`; 0 if unreadable).
/// A pid and its start time name a process only within one namespace: an atropos in a
/// container sees other numbers, or none, for the processes of an atropos outside it.
pub fn pid_ns() -> u64 {
    static NS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NS.get_or_init(|| {
        std::fs::read_link("/proc/self/ns/pid")
            .ok()
            .and_then(|l| {
                let l = l.to_string_lossy().into_owned();
                l.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
            })
            .unwrap_or(0)
    })
}

/// [`me`] as `PIDNS.PID.STARTTIME`: how journal entries, run cgroups, run folders and the
/// owner mark name the atropos that made them.
pub fn me_mark() -> &'static str {
    static MARK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    MARK.get_or_init(|| {
        let (pid, start) = me();
        format!("{}.{pid}.{start}", pid_ns())
    })
}

/// What a mark made by [`me_mark`] says of its owner, seen from here: `Some(true)` alive,
/// `Some(false)` dead, `None` not ours to judge (made in another PID namespace, where its
/// numbers mean other processes, or not a mark). Only `Some(false)` lets a sweep remove what
/// the owner left.
pub fn mark_owner_alive(mark: &str) -> Option<bool> {
    let mut parts = mark.split('.');
    let (Some(ns), Some(pid), Some(start), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let (ns, pid, start) = (
        ns.parse::<u64>().ok()?,
        pid.parse::<i32>().ok()?,
        start.parse::<u64>().ok()?,
    );
    if ns != pid_ns() || ns == 0 {
        return None;
    }
    Some(ProcStat::read(pid).is_some_and(|s| s.starttime == start && !s.is_zombie()))
}

/// One process as `/proc/PID/stat` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// Process id.
    pub pid: i32,
    /// Short name (`comm`), at most 15 bytes.
    pub comm: String,
    /// State letter: R, S, D, Z, T, ...
    pub state: char,
    /// Parent process id.
    pub ppid: i32,
    /// Process group id.
    pub pgid: i32,
    /// Session id.
    pub sid: i32,
    /// The kernel's flags for the process (`PF_*`): `PF_KTHREAD` marks a kernel thread.
    pub flags: u32,
    /// Start time in clock ticks since boot: with `pid`, names one process for its whole life.
    pub starttime: u64,
}

impl ProcStat {
    /// Reads `/proc/PID/stat`; `None` when the process is gone.
    pub fn read(pid: i32) -> Option<ProcStat> {
        let text = read_text(format!("/proc/{pid}/stat")).ok()?;
        parse_stat(pid, &text)
    }

    /// Parses the text of `/proc/PID/stat`.
    pub fn parse(pid: i32, text: &str) -> Option<ProcStat> {
        parse_stat(pid, text)
    }

    /// Whether the process has exited and waits to be reaped.
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }

    /// Whether it is a kernel thread (`PF_KTHREAD`), which no fault may aim at.
    pub fn is_kernel_thread(&self) -> bool {
        const PF_KTHREAD: u32 = 0x0020_0000;
        self.flags & PF_KTHREAD != 0
    }
}

fn parse_stat(pid: i32, text: &str) -> Option<ProcStat> {
    // comm may contain spaces and parentheses: it ends at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut rest = text.get(close + 2..)?.split_ascii_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgid = rest.next()?.parse().ok()?;
    let sid = rest.next()?.parse().ok()?;
    // Fields 7 (tty) and 8 (tpgid), then the flags (9).
    let flags = rest.nth(2)?.parse().ok()?;
    // Fields 10..=21 precede starttime (field 22).
    let starttime = rest.nth(12)?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid,
        pgid,
        sid,
        flags,
        starttime,
    })
}

/// The command line of `pid`, arguments joined by spaces; empty for zombies and kernel threads.
pub fn cmdline(pid: i32) -> String {
    let Ok(raw) = read(format!("/proc/{pid}/cmdline")) else {
        return String::new();
    };
    let mut text = String::from_utf8_lossy(&raw).replace('\0', " ");
    text.truncate(text.trim_end().len());
    text
}

/// Whether `pid`'s environment holds `KEY=value` exactly.
pub fn environ_has(pid: i32, entry: &str) -> bool {
    let Ok(raw) = read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    raw.split(|b| *b == 0).any(|var| var == entry.as_bytes())
}

/// The children of `pid`, from `/proc/PID/task/*/children` (each thread has its own list).
pub fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = read_text(task.path().join("children")) {
            out.extend(
                text.split_ascii_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// The children of one thread `tid` of process `pid`.
pub fn thread_children(pid: i32, tid: i32) -> Vec<i32> {
    read_text(format!("/proc/{pid}/task/{tid}/children"))
        .map(|text| {
            text.split_ascii_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every live descendant of `root` (excluded), walking the kernel's child lists.
pub fn descendants_of(root: i32) -> Vec<ProcStat> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut queue = children(root);
    while let Some(pid) = queue.pop() {
        if !seen.insert(pid) {
            continue;
        }
        if let Some(stat) = ProcStat::read(pid) {
            queue.extend(children(pid));
            out.push(stat);
        }
    }
    out
}

/// The chain of ancestors of `pid`, nearest first, up to and including PID 1.
pub fn ancestors(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut current = pid;
    while let Some(stat) = ProcStat::read(current) {
        if stat.ppid <= 0 || out.contains(&stat.ppid) {
            break;
        }
        out.push(stat.ppid);
        current = stat.ppid;
    }
    out
}

/// Threads and resident memory of one process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Number of threads.
    pub threads: u64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// Reads the threads and RSS of `pid`; `None` when it is gone.
pub fn usage(pid: i32) -> Option<Usage> {
    let text = read_text(format!("/proc/{pid}/status")).ok()?;
    let mut usage = Usage::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Threads:") {
            usage.threads = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("VmRSS:") {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            usage.rss_bytes = kb * 1024;
        }
    }
    Some(usage)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn parses_stat_with_spaces_and_parens_in_comm() {
        let text = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        let stat = parse_stat(4242, text).unwrap();
        assert_eq!(stat.comm, "my (odd) name");
        assert_eq!(
            (stat.state, stat.ppid, stat.pgid, stat.sid),
            ('S', 1, 4242, 4242)
        );
        assert_eq!(stat.starttime, 987654);
        assert_eq!(stat.flags, 4194560);
        assert!(!stat.is_kernel_thread());
        // kthreadd, a kernel thread, as this machine shows it.
        let kthreadd = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0";
        assert!(parse_stat(2, kthreadd).unwrap().is_kernel_thread());
    }

    #[test]
    fn finds_own_process_and_its_ancestors() {
        let me = std::process::id() as i32;
        let stat = ProcStat::read(me).unwrap();
        assert_eq!(stat.pid, me);
        assert!(!ancestors(me).is_empty());
        assert!(usage(me).unwrap().threads >= 1);
    }

    #[test]
    fn lists_a_spawned_child_and_grandchild() {
        let token = format!("atropos-procfs-test-{}", std::process::id());
        let mut child = std::process::Command::new("sh")
            .args(["-c", &format!("sleep 30 & wait # {token}")])
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let pid = child.id() as i32;
        let mut found = Vec::new();
        for _ in 0..200 {
            found = descendants_of(pid);
            // The forked shell shows as `sh` until it has exec'd `sleep`.
            if found.len() == 1 && found[0].comm == "sleep" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(children(me).contains(&pid));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].comm, "sleep");
        assert_eq!(found[0].ppid, pid);
        // Only processes this test spawned are signalled.
        let pinned = crate::process::pin(found[0].pid, found[0].starttime).unwrap();
        crate::process::send_pidfd(&pinned.pidfd, crate::Signal::KILL);
        child.wait().unwrap();
    }
}
