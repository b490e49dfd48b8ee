//! Following a log file the way `tail -F` does: lines appended to it, across rotation by
//! rename and truncation, woken by inotify rather than by reading the file on every tick.
//!
//! A [`LogFollower`] holds the file open and remembers how far it read. One inotify watch on
//! the file's folder reports everything that matters: appends and truncation (`IN_MODIFY`
//! of a file in it), a new file under the name (`IN_CREATE`, `IN_MOVED_TO`) and the old one
//! renamed away (`IN_MOVED_FROM`). [`LogFollower::lines`] does nothing until the watch has
//! reported something, and then:
//! - reads the open file from where it stopped; a file now shorter than that was truncated
//!   (`copytruncate`), and is read again from its start;
//! - looks whether the name now stands for another file (rotation by rename, or a file
//!   that appeared): the old one is read to its end first, so that the lines a writer still
//!   appended to it are not lost, then the new one from its start.
//!
//! Where inotify cannot be had (no instances left, or the folder does not exist yet), every
//! call looks, as polling would.
//! Only whole lines are returned; a line still being written waits for its newline.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// Longest line kept whole; a longer one is cut there (a log line is not a file dump).
const MAX_LINE: usize = 64 * 1024;

/// A log file being followed.
pub struct LogFollower {
    path: PathBuf,
    /// The watch on the folder; `None` when inotify is not available.
    inotify: Option<Inotify>,
    /// Whether the watch reported something since the last look (or no look happened yet).
    stirred: bool,
    /// The file the name stood for when it was last opened, with its identity.
    file: Option<Opened>,
    /// The bytes after the last newline read.
    pending: Vec<u8>,
}

struct Opened {
    file: File,
    dev: u64,
    ino: u64,
    /// How far it was read.
    offset: u64,
}

impl Opened {
    fn open(path: &Path) -> Option<Opened> {
        let file = File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        Some(Opened {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            offset: 0,
        })
    }
}

/// Where a log file ended at some moment, to follow it from there later
/// ([`LogFollower::from_mark`]). A file missing then is marked with zeros: any file found
/// later is new.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct LogMark {
    /// Its device.
    pub dev: u64,
    /// Its inode.
    pub ino: u64,
    /// Its length.
    pub len: u64,
}

impl LogMark {
    /// Where `path` ends now.
    pub fn of(path: &Path) -> LogMark {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).map_or(
            LogMark {
                dev: 0,
                ino: 0,
                len: 0,
            },
            |m| LogMark {
                dev: m.dev(),
                ino: m.ino(),
                len: m.len(),
            },
        )
    }
}

impl LogFollower {
    /// Follows `path` from its end now: lines already in it are not returned. A file that
    /// appears later, or replaces this one, is read from its start.
    pub fn from_end(path: &Path) -> LogFollower {
        let mut follower = LogFollower::new(path);
        if let Some(opened) = follower.file.as_mut() {
            opened.offset = opened.file.metadata().map_or(0, |m| m.len());
        }
        follower
    }

    /// Follows `path` from where `mark` saw it end: the lines appended since, also those of
    /// a file that replaced it or a truncation since (read from their start).
    pub fn from_mark(path: &Path, mark: LogMark) -> LogFollower {
        let mut follower = LogFollower::new(path);
        if let Some(opened) = follower.file.as_mut()
            && (opened.dev, opened.ino) == (mark.dev, mark.ino)
        {
            let len = opened.file.metadata().map_or(0, |m| m.len());
            opened.offset = if len >= mark.len { mark.len } else { 0 };
        }
        follower
    }

    /// Follows `path` from its start.
    pub fn from_start(path: &Path) -> LogFollower {
        LogFollower::new(path)
    }

    fn new(path: &Path) -> LogFollower {
        // The watch first, then the file: whatever happens after the open is reported.
        let inotify = watch_folder(path);
        LogFollower {
            path: path.to_owned(),
            inotify,
            stirred: true,
            file: Opened::open(path),
            pending: Vec::new(),
        }
    }

    /// Whether changes are reported by inotify (else every call reads the file).
    pub fn is_watched(&self) -> bool {
        self.inotify.is_some()
    }

    /// The descriptor that becomes readable when the folder changes, for a caller that
    /// waits on several at once.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.inotify.as_ref().map(AsFd::as_fd)
    }

    /// The whole lines appended since the last call, in order, without their line ends.
    pub fn lines(&mut self) -> Vec<String> {
        if let Some(inotify) = &self.inotify {
            // Non-blocking: an empty queue is EAGAIN.
            while let Ok(events) = inotify.read_events() {
                if events.is_empty() {
                    break;
                }
                self.stirred = true;
            }
            if !self.stirred {
                return Vec::new();
            }
        }
        self.stirred = false;
        if let Some(opened) = self.file.as_mut() {
            read_new(opened, &mut self.pending);
        }
        // Has the name been given to another file (rotated, or it appeared)?
        let current = std::fs::metadata(&self.path).ok();
        let replaced = match (&self.file, &current) {
            (Some(o), Some(m)) => (o.dev, o.ino) != (m.dev(), m.ino()),
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if replaced && let Some(mut opened) = Opened::open(&self.path) {
            // A line the old file left without its newline ends there.
            if self.pending.last().is_some_and(|&b| b != b'\n') {
                self.pending.push(b'\n');
            }
            read_new(&mut opened, &mut self.pending);
            self.file = Some(opened);
        }
        self.take_lines()
    }

    fn take_lines(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + nl;
            let mut line = &self.pending[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            lines.push(String::from_utf8_lossy(&line[..line.len().min(MAX_LINE)]).into_owned());
            start = end + 1;
        }
        self.pending.drain(..start);
        if self.pending.len() > MAX_LINE {
            // A line with no end in sight: keep its start, drop the rest until its newline.
            self.pending.truncate(MAX_LINE);
        }
        lines
    }
}

/// Appends to `pending` what `opened` gained since its offset (from its start when it is
/// now shorter than the offset: truncated).
fn read_new(opened: &mut Opened, pending: &mut Vec<u8>) {
    let Ok(meta) = opened.file.metadata() else {
        return;
    };
    if meta.len() < opened.offset {
        opened.offset = 0;
        pending.clear();
    }
    if meta.len() == opened.offset || opened.file.seek(SeekFrom::Start(opened.offset)).is_err() {
        return;
    }
    if let Ok(n) = (&opened.file).read_to_end(pending) {
        opened.offset += n as u64;
    }
}

/// An inotify instance watching the folder of `path`, non-blocking.
fn watch_folder(path: &Path) -> Option<Inotify> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
    let flags = AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_ATTRIB;
    inotify.add_watch(folder, flags).ok()?;
    Some(inotify)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn returns_only_lines_appended_after_it_started_and_whole_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "old line\n");
        let mut f = LogFollower::from_end(&log);
        assert!(f.is_watched(), "inotify is available on these machines");
        assert!(f.lines().is_empty());
        append(&log, "one\ntw");
        assert_eq!(f.lines(), ["one"]);
        assert!(f.lines().is_empty(), "half a line waits for its newline");
        append(&log, "o\r\nthree\n");
        assert_eq!(f.lines(), ["two", "three"]);
    }

    #[test]
    fn from_a_mark_reads_what_was_written_since_also_in_a_file_that_replaced_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        let missing = LogMark::of(&log);
        append(&log, "old ready\n");
        let mark = LogMark::of(&log);
        append(&log, "since 1\n");
        assert_eq!(LogFollower::from_mark(&log, mark).lines(), ["since 1"]);
        // Missing when marked: everything in the file found later is new.
        assert_eq!(
            LogFollower::from_mark(&log, missing).lines(),
            ["old ready", "since 1"]
        );
        // Replaced since the mark (rotation): the new file from its start.
        std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
        append(&log, "new ready\n");
        assert_eq!(LogFollower::from_mark(&log, mark).lines(), ["new ready"]);
    }

    #[test]
    fn reads_nothing_until_inotify_reports_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "");
        let mut f = LogFollower::from_end(&log);
        assert!(f.lines().is_empty());
        // Written through a path the watch cannot see (a hard link in another folder): the
        // follower has no reason to look, so it does not read.
        let other = tempfile::tempdir().unwrap();
        let link = other.path().join("link.log");
        std::fs::hard_link(&log, &link).unwrap();
        append(&link, "unseen yet\n");
        assert!(f.lines().is_empty(), "no event, no read");
        append(&log, "seen\n");
        assert_eq!(f.lines(), ["unseen yet", "seen"]);
    }

    #[test]
    fn follows_a_rotation_by_rename_without_losing_the_old_files_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "");
        let mut f = LogFollower::from_end(&log);
        // The service keeps its descriptor across the rename, as services do until they
        // reopen their log.
        let mut writer = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        writer.write_all(b"a\n").unwrap();
        std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
        writer.write_all(b"b\n").unwrap();
        append(&log, "c\n");
        assert_eq!(f.lines(), ["a", "b", "c"]);
        append(&log, "d\n");
        writer
            .write_all(b"to the old file, after the switch\n")
            .unwrap();
        assert_eq!(f.lines(), ["d"], "the rotated file is no longer followed");
    }

    #[test]
    fn reads_a_truncated_file_again_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        append(&log, "before\n");
        let mut f = LogFollower::from_end(&log);
        append(&log, "x\n");
        assert_eq!(f.lines(), ["x"]);
        // copytruncate: the same file, cut to nothing, then written again.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&log, "after\n");
        assert_eq!(f.lines(), ["after"]);
    }

    #[test]
    fn reads_a_file_that_appears_later_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("later.log");
        let mut f = LogFollower::from_end(&log);
        assert!(f.lines().is_empty());
        append(&log, "first\nsecond\n");
        assert_eq!(f.lines(), ["first", "second"]);
        std::fs::remove_file(&log).unwrap();
        assert!(f.lines().is_empty(), "a deleted file gives nothing more");
        append(&log, "again\n");
        assert_eq!(f.lines(), ["again"]);
    }

    #[test]
    fn cuts_an_endless_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("big.log");
        let mut f = LogFollower::from_start(&log);
        append(&log, &"x".repeat(3 * MAX_LINE));
        assert!(f.lines().is_empty());
        append(&log, "\nnext\n");
        let lines = f.lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1], "next");
    }
}
