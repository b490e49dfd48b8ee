//! Selecting running processes by what `/proc` says of them, never by running `ps`.
//!
//! A [`Selector`] combines criteria with AND: `pid`, `pidfile`, `exe` (the path behind
//! `/proc/PID/exe`), `name` (the basename of the full `argv[0]`, not the 15-byte `comm`),
//! `cmdline` (a regex over the argv joined by spaces), `cgroup` (a v2 path, or a v1
//! controller path), `systemd_unit` (through the cgroup path), `user` (the uid owning the
//! process) and `parent` (children of a process the inner selector matches).
//!
//! Whatever matches goes through the refusals before anyone may aim at it: PID 1, kernel
//! threads, this process and its ancestors, a protected pid, and a process of another user
//! than this one unless that user is allowed. A refused process is listed with why, so a
//! dry run can show it, and is never chosen. A pidfile whose number now names a process
//! that started after the file was written (the number was reused) is refused as a whole.
//!
//! [`Selection::choose`] picks `count` of the allowed matches with the caller's draws (the
//! run's seeded generator) after checking `max_targets`: more matches than allowed is an
//! error that lists them, never a guess. [`Process::pin`] then holds the chosen one by
//! pidfd, start time and boot id, and every later action goes through that.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use regex::Regex;

use crate::procfs::{self, ProcStat};

/// What to select; every criterion given must hold.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// This process id.
    pub pid: Option<i32>,
    /// The process id written in this file.
    #[schema(value_type = Option<String>)]
    pub pidfile: Option<PathBuf>,
    /// The executable (`/proc/PID/exe`), compared as a path.
    #[schema(value_type = Option<String>)]
    pub exe: Option<PathBuf>,
    /// The basename of `argv[0]`, or of the first word of a title rewritten into it (see
    /// [`named`]).
    pub name: Option<String>,
    /// A regex over the command line, arguments joined by single spaces.
    #[serde(default, with = "regex_text")]
    #[schema(value_type = Option<String>)]
    pub cmdline: Option<Regex>,
    /// A cgroup path: the v2 path (`/system.slice/redis.service`), or `CONTROLLER:PATH` for
    /// a v1 hierarchy (`memory:/docker/abc`). The process's cgroup must be it or below it.
    pub cgroup: Option<String>,
    /// A systemd unit (`redis-server.service`): a component of the process's v2 cgroup path.
    pub systemd_unit: Option<String>,
    /// The uid owning the process.
    pub user: Option<u32>,
    /// Children of a process this selector matches (nginx workers under their master).
    #[schema(no_recursion)]
    pub parent: Option<Box<Selector>>,
}

/// A regex as its text on the wire.
mod regex_text {
    use regex::Regex;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(re: &Option<Regex>, s: S) -> Result<S::Ok, S::Error> {
        match re {
            Some(re) => s.serialize_some(re.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Regex>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| Regex::new(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// What a selection may never hit, beyond the rules every selection follows.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// Uids other than this process's own whose processes may be selected.
    pub allowed_users: Vec<u32>,
    /// Process ids that must never be selected (the experiment's and the command line's).
    pub protected: Vec<i32>,
}

/// A running process as selection saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks since boot: with the pid and the boot, its identity.
    pub starttime: u64,
    /// Parent process id.
    pub ppid: i32,
    /// The uid owning it.
    pub uid: u32,
    /// Its command line, one entry per argument.
    pub argv: Vec<String>,
    /// Its v2 cgroup path (`/` when it has none to show). Read for the processes
    /// [`Selection::choose`] returns, and for every match of a selector by cgroup or unit;
    /// empty in a listing of matches otherwise.
    pub cgroup: String,
}

impl Process {
    /// The basename of `argv[0]`.
    pub fn name(&self) -> &str {
        basename(self.argv.first().map_or("", String::as_str))
    }

    /// The command line with arguments joined by spaces (what `cmdline:` matches).
    pub fn command_line(&self) -> String {
        self.argv.join(" ")
    }

    /// Holds the process by pidfd if it is still the one selected (same start time, this
    /// boot); `None` once it is gone or its number names another process.
    pub fn pin(&self) -> Option<Pinned> {
        let found = crate::process::pin(self.pid, self.starttime)?;
        Some(Pinned {
            pid: self.pid,
            starttime: self.starttime,
            boot_id: crate::journal::boot_id().to_owned(),
            pidfd: found.pidfd,
        })
    }
}

/// A selected process held by its identity: every later action goes through `pidfd`.
#[derive(Debug)]
pub struct Pinned {
    /// Process id (for reports; never signalled by number).
    pub pid: i32,
    /// Start time in clock ticks since boot.
    pub starttime: u64,
    /// The boot it was selected in.
    pub boot_id: String,
    /// A pidfd for this very process.
    pub pidfd: OwnedFd,
}

/// Why a matching process may not be selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// PID 1, whose death takes the machine or container with it.
    Init,
    /// A kernel thread.
    KernelThread,
    /// This process.
    Atropos,
    /// An ancestor of this process (a shell, a supervisor, a CI runner).
    Ancestor,
    /// A process the guard protects.
    Protected,
    /// A process of another user, not allowed by the guard.
    OtherUser(u32),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Init => f.write_str("PID 1 is never a target"),
            Refusal::KernelThread => f.write_str("a kernel thread is never a target"),
            Refusal::Atropos => f.write_str("atropos itself is never a target"),
            Refusal::Ancestor => f.write_str("an ancestor of atropos is never a target"),
            Refusal::Protected => f.write_str("protected"),
            Refusal::OtherUser(uid) => write!(
                f,
                "owned by uid {uid}, not this user; allow the user to select it"
            ),
        }
    }
}

/// How many of the allowed matches to choose.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Count {
    /// One, drawn at random.
    One,
    /// Every one.
    All,
    /// This many, drawn at random (all of them when fewer match).
    N(usize),
    /// This share, rounded up, at least one.
    Percent(u8),
}

/// What a selector matched.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Matches that may be aimed at, by pid.
    pub allowed: Vec<Process>,
    /// Matches that may not, with why.
    pub refused: Vec<(Process, Refusal)>,
}

/// Why a selection failed.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// The pidfile cannot be read or holds no pid.
    #[error("pidfile {path}: {reason}")]
    Pidfile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// More processes match than the experiment allows.
    #[error("{} processes match, but at most {allowed} may: {}", found.len(), listing(found))]
    TooMany {
        /// `max_targets`.
        allowed: usize,
        /// Every allowed match.
        found: Vec<Process>,
    },
    /// Nothing that may be aimed at matches.
    #[error("no process matches{}", refused_words(refused))]
    NoMatch {
        /// Matches that were refused, with why.
        refused: Vec<(Process, Refusal)>,
    },
}

fn listing(found: &[Process]) -> String {
    found
        .iter()
        .map(|p| format!("{} ({})", p.pid, clip(&p.command_line(), 80)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `text` cut to `max` characters, with `…` where it was cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

fn refused_words(refused: &[(Process, Refusal)]) -> String {
    if refused.is_empty() {
        return String::new();
    }
    let list: Vec<String> = refused
        .iter()
        .map(|(p, why)| format!("{} ({why})", p.pid))
        .collect();
    format!(" that may be aimed at; refused: {}", list.join(", "))
}

/// From how many candidate processes a selection reads `/proc` on every CPU.
const PARALLEL_FROM: usize = 512;

impl Selector {
    /// Every process that matches, split into those that may be aimed at and those that
    /// may not. Reads `/proc` only.
    pub fn resolve(&self, guard: &Guard) -> Result<Selection, SelectError> {
        let pidfile = match &self.pidfile {
            Some(path) => Some(read_pidfile(path)?),
            None => None,
        };
        let parents: Option<Vec<(i32, u64)>> = match &self.parent {
            Some(parent) => Some(
                parent
                    .resolve(guard)?
                    .allowed
                    .iter()
                    .map(|p| (p.pid, p.starttime))
                    .collect(),
            ),
            None => None,
        };
        let candidates: Vec<i32> = match self.pid.or(pidfile.map(|(pid, _)| pid)) {
            Some(pid) => vec![pid],
            None => all_pids(),
        };
        let me = std::process::id() as i32;
        let ancestors = procfs::ancestors(me);
        let my_uid = nix::unistd::geteuid().as_raw();
        let refusal = |process: &Process| {
            let pid = process.pid;
            if pid == 1 {
                Some(Refusal::Init)
            } else if pid == me {
                Some(Refusal::Atropos)
            } else if ancestors.contains(&pid) {
                Some(Refusal::Ancestor)
            } else if guard.protected.contains(&pid) {
                Some(Refusal::Protected)
            } else if process.uid != my_uid && !guard.allowed_users.contains(&process.uid) {
                Some(Refusal::OtherUser(process.uid))
            } else {
                None
            }
        };
        // Reading another process's command line is the cost (the kernel walks its
        // memory): a host's processes are split among the CPUs, each part in pid order.
        let scan = |pids: &[i32]| {
            let mut buf = Vec::with_capacity(4096);
            pids.iter()
                .filter_map(|&pid| self.check(pid, parents.as_deref(), pidfile, &mut buf))
                .collect::<Vec<_>>()
        };
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let found: Vec<Process> = if threads > 1 && candidates.len() >= PARALLEL_FROM {
            let part = candidates.len().div_ceil(threads);
            std::thread::scope(|s| {
                let parts: Vec<_> = candidates
                    .chunks(part)
                    .map(|pids| s.spawn(|| scan(pids)))
                    .collect();
                parts
                    .into_iter()
                    .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect()
            })
        } else {
            scan(&candidates)
        };
        let mut selection = Selection::default();
        for process in found {
            match refusal(&process) {
                Some(why) => selection.refused.push((process, why)),
                None => selection.allowed.push(process),
            }
        }
        Ok(selection)
    }

    /// `pid` as a [`Process`] if it matches every criterion. The argv tests come first:
    /// they reject most of a host's processes with one read, so a `cmdline` or `name`
    /// selector reads the rest of `/proc/PID` for its matches only. `buf` is reused
    /// between processes.
    fn check(
        &self,
        pid: i32,
        parents: Option<&[(i32, u64)]>,
        pidfile: Option<(i32, std::time::SystemTime)>,
        buf: &mut Vec<u8>,
    ) -> Option<Process> {
        // Most processes fail the argv tests: for those, one open of `/proc/PID/cmdline`
        // by path and no allocation (the words are tested in `buf` as they are).
        if (self.name.is_some() || self.cmdline.is_some()) && !self.argv_matches(pid, buf) {
            return None;
        }
        let dir = ProcDir::open(pid)?;
        // Read again through the handle: the number may name another process by now.
        let argv = dir.argv(buf);
        let argv0 = argv.first().map_or("", String::as_str);
        if self.name.as_deref().is_some_and(|n| !named(argv0, n)) {
            return None;
        }
        if let Some(re) = &self.cmdline
            && !re.is_match(&argv.join(" "))
        {
            return None;
        }
        let stat = ProcStat::parse(pid, dir.text("stat", buf)?)?;
        // A kernel thread has no command line; it is never selected, refused or listed.
        if stat.is_zombie() || stat.is_kernel_thread() {
            return None;
        }
        if let Some(parents) = parents
            && !parents.iter().any(|(p, _)| *p == stat.ppid)
        {
            return None;
        }
        let uid = dir.uid()?;
        if self.user.is_some_and(|u| u != uid) {
            return None;
        }
        if let Some((_, written)) = pidfile
            && started_after(&stat, written)
        {
            return None;
        }
        if let Some(exe) = &self.exe
            && dir.link("exe").as_deref() != Some(exe.as_path())
        {
            return None;
        }
        let mut process = Process {
            pid,
            starttime: stat.starttime,
            ppid: stat.ppid,
            uid,
            argv,
            cgroup: String::new(),
        };
        if self.cgroup.is_some() || self.systemd_unit.is_some() {
            let cgroups = dir.text("cgroup", buf).unwrap_or_default();
            if let Some(want) = &self.cgroup
                && !cgroup_matches(cgroups, want)
            {
                return None;
            }
            let v2 = v2_path(cgroups);
            if let Some(unit) = &self.systemd_unit
                && !v2.split('/').any(|c| c == unit)
            {
                return None;
            }
            process.cgroup = v2.to_owned();
        }
        Some(process)
    }
}

impl Selector {
    /// Whether `pid`'s command line passes the `name` and `cmdline` tests, read into `buf`
    /// through `/proc`'s descriptor (no allocation for a process that fails them).
    fn argv_matches(&self, pid: i32, buf: &mut Vec<u8>) -> bool {
        let Some(total) = read_cmdline(pid, buf) else {
            return false;
        };
        let buf = &mut buf[..total];
        // Arguments are separated (and ended) by NUL; empty ones are dropped, as `argv`
        // does, before joining with single spaces.
        let mut joined = 0;
        let mut start = 0;
        let total = buf.len();
        for i in 0..=total {
            if i == total || buf[i] == 0 {
                if i > start {
                    if joined > 0 {
                        buf[joined] = b' ';
                        joined += 1;
                    }
                    buf.copy_within(start..i, joined);
                    joined += i - start;
                }
                start = i + 1;
            }
        }
        let text = String::from_utf8_lossy(&buf[..joined]);
        // A necessary condition only (argv[0]'s basename is part of the joined words); the
        // exact test follows the read through the process's handle.
        if let Some(want) = &self.name
            && !text.contains(want.as_str())
        {
            return false;
        }
        if let Some(re) = &self.cmdline
            && !re.is_match(&text)
        {
            return false;
        }
        true
    }
}

/// `/proc`, opened once: each command line is opened relative to it, which spares the
/// walk from `/` for every process of the host.
fn proc_root() -> Option<BorrowedFd<'static>> {
    static PROC: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    PROC.get_or_init(|| {
        use nix::fcntl::OFlag;
        nix::fcntl::open(
            "/proc",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
    })
    .as_ref()
    .map(AsFd::as_fd)
}

/// `/proc/PID/cmdline` into the front of `buf`, which keeps its length between calls (no
/// zeroing per process); returns how many bytes were read. The kernel hands the whole
/// command line to one read that asks for more than it holds, so a short read is the end.
fn read_cmdline(pid: i32, buf: &mut Vec<u8>) -> Option<usize> {
    use nix::fcntl::OFlag;
    use std::io::Write;
    let mut path = [0u8; 24];
    let len = {
        let mut cursor = std::io::Cursor::new(&mut path[..]);
        write!(cursor, "{pid}/cmdline").ok()?;
        usize::try_from(cursor.position()).ok()?
    };
    let path = std::str::from_utf8(&path[..len]).ok()?;
    let file = nix::fcntl::openat(
        proc_root()?,
        path,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    if buf.len() < 4096 {
        buf.resize(4096, 0);
    }
    let mut total = 0;
    loop {
        match nix::unistd::read(&file, &mut buf[total..]) {
            Ok(0) => return Some(total),
            Ok(n) => {
                total += n;
                if total < buf.len() {
                    return Some(total);
                }
                let grown = buf.len() * 2;
                buf.resize(grown, 0);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
}

/// Everything left to read from `file`, into `buf`.
fn read_all<'b>(file: &OwnedFd, buf: &'b mut Vec<u8>) -> Option<&'b [u8]> {
    buf.clear();
    if buf.capacity() < 4096 {
        buf.reserve(4096);
    }
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity());
        }
        let len = buf.len();
        buf.resize(buf.capacity(), 0);
        match nix::unistd::read(file, &mut buf[len..]) {
            Ok(0) => {
                buf.truncate(len);
                return Some(buf);
            }
            Ok(n) => buf.truncate(len + n),
            Err(nix::errno::Errno::EINTR) => buf.truncate(len),
            Err(_) => return None,
        }
    }
}

/// Whether `name:` `want` takes a process whose `argv[0]` is `argv0`: the basename of the
/// whole `argv[0]`, or, for a process that rewrote its title into `argv[0]`
/// (`redis-server 127.0.0.1:6379`, `nginx: worker process`), the basename of the title's
/// first word without a trailing `:`.
fn named(argv0: &str, want: &str) -> bool {
    if basename(argv0) == want {
        return true;
    }
    match argv0.split_once(' ') {
        Some((first, _)) => basename(first.trim_end_matches(':')) == want,
        None => false,
    }
}

/// The basename of a path given as text.
fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The v2 path in a `/proc/PID/cgroup` text (`/` when there is none).
fn v2_path(cgroups: &str) -> &str {
    cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
}

/// `/proc/PID`, opened once: the files read in it are opened relative to it, so each is
/// one short path lookup, and they all belong to the same process (a pid reused meanwhile
/// would not be found through it).
struct ProcDir(OwnedFd);

impl ProcDir {
    fn open(pid: i32) -> Option<ProcDir> {
        use nix::fcntl::OFlag;
        nix::fcntl::openat(
            proc_root()?,
            pid.to_string().as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
        .map(ProcDir)
    }

    /// The whole of file `name` in it, into `buf`.
    fn read<'b>(&self, name: &str, buf: &'b mut Vec<u8>) -> Option<&'b [u8]> {
        use nix::fcntl::OFlag;
        let file = nix::fcntl::openat(
            &self.0,
            name,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()?;
        read_all(&file, buf)
    }

    /// File `name` as text (`/proc` text files are ASCII but for names, taken lossily).
    fn text<'b>(&self, name: &str, buf: &'b mut Vec<u8>) -> Option<&'b str> {
        let raw = self.read(name, buf)?;
        if std::str::from_utf8(raw).is_err() {
            let text = String::from_utf8_lossy(raw).into_owned();
            *buf = text.into_bytes();
        }
        std::str::from_utf8(buf).ok()
    }

    /// The arguments of `cmdline` (none for a kernel thread or a zombie).
    fn argv(&self, buf: &mut Vec<u8>) -> Vec<String> {
        self.read("cmdline", buf).map_or_else(Vec::new, |raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
    }

    /// The uid owning the process.
    fn uid(&self) -> Option<u32> {
        nix::sys::stat::fstat(&self.0).ok().map(|st| st.st_uid)
    }

    /// Where link `name` in it points.
    fn link(&self, name: &str) -> Option<PathBuf> {
        nix::fcntl::readlinkat(&self.0, name)
            .ok()
            .map(PathBuf::from)
    }
}

impl Selection {
    /// Chooses `count` of the allowed matches, after checking that no more than
    /// `max_targets` match; `draw(n)` returns an index below `n` (the run's seeded RNG).
    pub fn choose(
        self,
        count: Count,
        max_targets: usize,
        mut draw: impl FnMut(usize) -> usize,
    ) -> Result<Vec<Process>, SelectError> {
        let Selection {
            mut allowed,
            refused,
        } = self;
        if allowed.is_empty() {
            return Err(SelectError::NoMatch { refused });
        }
        if allowed.len() > max_targets {
            return Err(SelectError::TooMany {
                allowed: max_targets,
                found: allowed,
            });
        }
        let wanted = match count {
            Count::All => allowed.len(),
            Count::One => 1,
            Count::N(n) => n.min(allowed.len()),
            Count::Percent(p) => (allowed.len() * usize::from(p))
                .div_ceil(100)
                .clamp(1, allowed.len()),
        };
        // A partial Fisher-Yates shuffle: the first `wanted` are a uniform draw.
        for i in 0..wanted {
            let j = i + draw(allowed.len() - i) % (allowed.len() - i);
            allowed.swap(i, j);
        }
        allowed.truncate(wanted);
        allowed.sort_by_key(|p| p.pid);
        for p in &mut allowed {
            if p.cgroup.is_empty() {
                p.cgroup = v2_cgroup(p.pid);
            }
        }
        Ok(allowed)
    }
}

/// The uid of the user `name` in this machine's user database, if it has one.
pub fn uid_by_name(name: &str) -> Result<Option<u32>, String> {
    nix::unistd::User::from_name(name)
        .map(|u| u.map(|u| u.uid.as_raw()))
        .map_err(|e| e.to_string())
}

/// The pid in `path`, and when the file was last written.
fn read_pidfile(path: &Path) -> Result<(i32, std::time::SystemTime), SelectError> {
    let bad = |reason: String| SelectError::Pidfile {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.len() > 64 {
        return Err(bad(format!("{} bytes; expected a process id", meta.len())));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad(format!("`{}` is not a process id", text.trim())))?;
    let written = meta.modified().map_err(|e| bad(e.to_string()))?;
    if let Some(stat) = ProcStat::read(pid)
        && started_after(&stat, written)
    {
        return Err(bad(format!(
            "names pid {pid}, but that process started after the file was written: the \
             number was reused by another process"
        )));
    }
    Ok((pid, written))
}

/// Whether `stat`'s process started after `written` (with a second of slack for the clock
/// tick the start time is counted in).
fn started_after(stat: &ProcStat, written: std::time::SystemTime) -> bool {
    let Some(boot) = boot_time() else {
        return false;
    };
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100);
    let started = boot + std::time::Duration::from_millis(stat.starttime * 1000 / ticks);
    started > written + std::time::Duration::from_secs(1)
}

/// When this machine booted (`btime` in `/proc/stat`).
fn boot_time() -> Option<std::time::SystemTime> {
    let text = procfs::read_text("/proc/stat").ok()?;
    let secs: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The v2 cgroup path of `pid` (`/` when it has none or is gone).
fn v2_cgroup(pid: i32) -> String {
    let cgroups = procfs::read_text(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    v2_path(&cgroups).to_owned()
}

/// Whether a `/proc/PID/cgroup` text puts the process in `want` or below it.
fn cgroup_matches(cgroups: &str, want: &str) -> bool {
    let below = |path: &str, want: &str| {
        let want = want.trim_end_matches('/');
        want.is_empty() || path == want || path.starts_with(&format!("{want}/"))
    };
    let (controller, path) = match want.split_once(':') {
        Some((c, p)) if !c.starts_with('/') => (Some(c), p),
        _ => (None, want),
    };
    cgroups.lines().any(|line| {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(at)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        match controller {
            None => controllers.is_empty() && below(at, path),
            Some(c) => controllers.split(',').any(|x| x == c) && below(at, path),
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    /// A process of this test, with a unique token in its argv.
    struct Fixture {
        child: std::process::Child,
        token: String,
    }

    impl Fixture {
        fn start(label: &str) -> Fixture {
            let token = format!(
                "atropos-select-{label}-{}-{}",
                std::process::id(),
                crate::clock::now_ns()
            );
            let child = std::process::Command::new("sh")
                .args(["-c", "sleep 30 & wait", &token])
                .spawn()
                .unwrap();
            // Until the shell has forked its `sleep` and that child has exec'd it: before
            // its exec the child still carries the shell's argv, token included, and a
            // selector by token would find two processes.
            let pid = child.id() as i32;
            let execd = |c: &i32| {
                std::fs::read(format!("/proc/{c}/cmdline"))
                    .is_ok_and(|argv| !argv.windows(token.len()).any(|w| w == token.as_bytes()))
            };
            for _ in 0..400 {
                let children = procfs::children(pid);
                if !children.is_empty() && children.iter().all(execd) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Fixture { child, token }
        }

        fn pid(&self) -> i32 {
            self.child.id() as i32
        }

        fn by_token(&self) -> Selector {
            Selector {
                cmdline: Some(Regex::new(&regex::escape(&self.token)).unwrap()),
                ..Selector::default()
            }
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            for pid in procfs::children(self.pid()) {
                if let Some(stat) = ProcStat::read(pid)
                    && let Some(pin) = crate::process::pin(pid, stat.starttime)
                {
                    crate::process::send_pidfd(&pin.pidfd, crate::Signal::KILL);
                }
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn the_quick_argv_test_joins_words_as_argv_does_and_decides_nothing_alone() {
        let a = Fixture::start("words");
        let pid = a.pid();
        let mut buf = Vec::new();
        let joined = format!("sh -c sleep 30 & wait {}", a.token);
        let exact = |re: &str| Selector {
            cmdline: Some(Regex::new(re).unwrap()),
            ..Selector::default()
        };
        // NULs become single spaces: the same text `command_line` shows.
        assert!(exact(&format!("^{}$", regex::escape(&joined))).argv_matches(pid, &mut buf));
        assert!(!exact("\\x00").argv_matches(pid, &mut buf));
        // For `name`, a necessary condition only: `wait` is in the words but is not
        // argv[0]'s basename, and the full check refuses it.
        let by_word = Selector {
            name: Some("wait".into()),
            ..a.by_token()
        };
        assert!(by_word.argv_matches(pid, &mut buf));
        assert!(by_word.check(pid, None, None, &mut buf).is_none());
        let by_name = Selector {
            name: Some("sh".into()),
            ..a.by_token()
        };
        assert!(by_name.check(pid, None, None, &mut buf).is_some());
        assert!(
            !Selector {
                name: Some("no-such-word-here".into()),
                ..Selector::default()
            }
            .argv_matches(pid, &mut buf)
        );
    }

    #[test]
    fn a_rewritten_title_is_named_by_its_first_word() {
        assert!(named("/usr/bin/redis-server", "redis-server"));
        assert!(named(
            "/usr/bin/redis-server 127.0.0.1:6379",
            "redis-server"
        ));
        assert!(named("nginx: worker process", "nginx"));
        assert!(
            named("my long name", "my long name"),
            "the whole argv[0] still counts"
        );
        assert!(!named("redis-server 127.0.0.1:6379", "redis"));
        assert!(
            !named("/usr/bin/python3 worker.py", "worker.py"),
            "only the first word"
        );
    }

    #[test]
    fn criteria_combine_with_and_and_name_is_the_whole_argv0() {
        let a = Fixture::start("and");
        let found = a.by_token().resolve(&Guard::default()).unwrap();
        assert_eq!(found.allowed.len(), 1, "{found:?}");
        let shell = &found.allowed[0];
        assert_eq!(shell.pid, a.pid());
        assert_eq!(shell.name(), "sh");
        assert!(shell.cgroup.is_empty(), "a listing does not read cgroups");
        let chosen = found.clone().choose(Count::One, 1, |_| 0).unwrap();
        let shell = &chosen[0];
        assert!(
            shell.cgroup.starts_with('/'),
            "a chosen target's cgroup is read"
        );
        let narrowed = Selector {
            name: Some("sh".into()),
            user: Some(shell.uid),
            cgroup: Some(shell.cgroup.clone()),
            ..a.by_token()
        };
        assert_eq!(
            narrowed.resolve(&Guard::default()).unwrap().allowed.len(),
            1
        );
        let wrong_name = Selector {
            name: Some("bash".into()),
            ..a.by_token()
        };
        assert!(
            wrong_name
                .resolve(&Guard::default())
                .unwrap()
                .allowed
                .is_empty()
        );
        let exe = std::fs::read_link(format!("/proc/{}/exe", a.pid())).unwrap();
        let by_exe = Selector {
            exe: Some(exe),
            pid: Some(a.pid()),
            ..Selector::default()
        };
        assert_eq!(by_exe.resolve(&Guard::default()).unwrap().allowed.len(), 1);
    }

    #[test]
    fn parent_selects_the_children_of_a_match() {
        let a = Fixture::start("parent");
        let children = Selector {
            parent: Some(Box::new(a.by_token())),
            ..Selector::default()
        };
        let found = children.resolve(&Guard::default()).unwrap();
        let pids: Vec<i32> = found.allowed.iter().map(|p| p.pid).collect();
        assert_eq!(pids, procfs::children(a.pid()));
        assert_eq!(found.allowed[0].name(), "sleep");
    }

    #[test]
    fn pid_one_atropos_its_ancestors_and_protected_pids_are_refused() {
        let me = std::process::id() as i32;
        let guard = Guard {
            protected: vec![],
            allowed_users: vec![0],
        };
        let refused = |sel: Selector| {
            let found = sel.resolve(&guard).unwrap();
            assert!(found.allowed.is_empty(), "{found:?}");
            found
                .refused
                .into_iter()
                .map(|(_, why)| why)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            refused(Selector {
                pid: Some(1),
                ..Selector::default()
            }),
            [Refusal::Init]
        );
        assert_eq!(
            refused(Selector {
                pid: Some(me),
                ..Selector::default()
            }),
            [Refusal::Atropos]
        );
        let parent = nix::unistd::getppid().as_raw();
        if parent > 1 {
            assert_eq!(
                refused(Selector {
                    pid: Some(parent),
                    ..Selector::default()
                }),
                [Refusal::Ancestor]
            );
        }
        let a = Fixture::start("protected");
        let guard = Guard {
            protected: vec![a.pid()],
            ..Guard::default()
        };
        let found = a.by_token().resolve(&guard).unwrap();
        assert!(found.allowed.is_empty());
        assert_eq!(found.refused[0].1, Refusal::Protected);
        let err = found.choose(Count::One, 1, |_| 0).unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
        // No selector picks a kernel thread.
        let kthreadd = Selector {
            pid: Some(2),
            ..Selector::default()
        };
        if ProcStat::read(2).is_some_and(|s| s.is_kernel_thread()) {
            let found = kthreadd.resolve(&guard).unwrap();
            assert!(found.allowed.is_empty() && found.refused.is_empty());
        }
    }

    #[test]
    fn more_matches_than_allowed_is_an_error_that_lists_them() {
        let (a, b) = (Fixture::start("many"), Fixture::start("many"));
        let both = Selector {
            cmdline: Some(Regex::new("atropos-select-many-").unwrap()),
            user: Some(nix::unistd::geteuid().as_raw()),
            ..Selector::default()
        };
        let mine = |s: &Selection| {
            s.allowed
                .iter()
                .filter(|p| p.pid == a.pid() || p.pid == b.pid())
                .count()
        };
        let found = both.resolve(&Guard::default()).unwrap();
        assert_eq!(mine(&found), 2);
        // Only this test's two, whatever else runs: scope to their tokens.
        let scoped = Selection {
            allowed: found
                .allowed
                .into_iter()
                .filter(|p| p.pid == a.pid() || p.pid == b.pid())
                .collect(),
            refused: vec![],
        };
        let err = scoped.clone().choose(Count::One, 1, |_| 0).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("2 processes match, but at most 1 may"),
            "{text}"
        );
        assert!(text.contains(&a.token) && text.contains(&b.token), "{text}");
        let one = scoped.clone().choose(Count::One, 2, |_| 1).unwrap();
        assert_eq!(one.len(), 1);
        let all = scoped.clone().choose(Count::All, 2, |_| 0).unwrap();
        assert_eq!(all.len(), 2);
        let half = scoped.choose(Count::Percent(50), 2, |_| 0).unwrap();
        assert_eq!(half.len(), 1);
    }

    #[test]
    fn a_pidfile_naming_a_process_started_after_it_was_written_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Fixture::start("pidfile");
        let fresh = dir.path().join("fresh.pid");
        std::fs::write(&fresh, format!("{}\n", a.pid())).unwrap();
        let sel = Selector {
            pidfile: Some(fresh),
            ..Selector::default()
        };
        assert_eq!(
            sel.resolve(&Guard::default()).unwrap().allowed[0].pid,
            a.pid()
        );
        // Written an hour ago: the number now names a process that did not exist then.
        let stale = dir.path().join("stale.pid");
        std::fs::write(&stale, format!("{}\n", a.pid())).unwrap();
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        let sel = Selector {
            pidfile: Some(stale),
            ..Selector::default()
        };
        let err = sel.resolve(&Guard::default()).unwrap_err().to_string();
        assert!(err.contains("reused"), "{err}");
        let junk = dir.path().join("junk.pid");
        std::fs::write(&junk, "not a pid").unwrap();
        let sel = Selector {
            pidfile: Some(junk),
            ..Selector::default()
        };
        let err = sel.resolve(&Guard::default()).unwrap_err().to_string();
        assert!(err.contains("is not a process id"), "{err}");
    }

    #[test]
    fn a_pinned_process_is_held_by_identity() {
        let a = Fixture::start("pin");
        let found = a.by_token().resolve(&Guard::default()).unwrap();
        let process = found.allowed[0].clone();
        let pinned = process.pin().unwrap();
        assert_eq!(
            (pinned.pid, pinned.starttime),
            (process.pid, process.starttime)
        );
        assert_eq!(pinned.boot_id, crate::journal::boot_id());
        // Same number, another start time: not this process.
        let other = Process {
            starttime: process.starttime + 1,
            ..process
        };
        assert!(other.pin().is_none());
    }

    #[test]
    fn cgroup_paths_match_at_or_below_for_v2_and_v1() {
        let text = "12:memory:/docker/abc\n3:cpu,cpuacct:/system.slice/x.service\n0::/user.slice/u.scope\n";
        assert!(cgroup_matches(text, "/user.slice"));
        assert!(cgroup_matches(text, "/user.slice/u.scope"));
        assert!(!cgroup_matches(text, "/user.sl"));
        assert!(cgroup_matches(text, "memory:/docker"));
        assert!(cgroup_matches(text, "cpuacct:/system.slice/x.service"));
        assert!(!cgroup_matches(text, "memory:/system.slice"));
        assert!(!cgroup_matches(text, "/docker"));
    }
}
