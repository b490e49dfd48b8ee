//! Markers that are polled rather than read from output: a listening port, a file existing,
//! a line appended to a log file, an entry of a unit in the journal, a delay since start,
//! and an HTTP URL answering 2xx.
//!
//! The trial loop calls [`Polled::check`] on every tick (1 ms while one is pending). HTTP
//! is the one check that can block, so it runs on a thread of its own and only its result
//! is polled.
//!
//! A `listen` marker counts only a listening socket that the trial's own processes hold:
//! the port's listeners come from sock_diag, and one of them must be among the descriptors
//! of the processes the caller names (see [`crate::sockets`]). Nothing connects to the
//! target. Listeners that already held the port when the trial started are kept, and
//! [`Polled::note`] reports them.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex::Regex;

use crate::clock::now_ns;
use crate::journald::JournalFollower;
use crate::logfollow::LogFollower;
use crate::plan::Marker;
use crate::sockets::{self, Listener};

/// In a log marker's regex of an attached target, the variable replaced by the pid of the
/// process the trial attached to (`^${target.pid}:M .*Ready to accept connections`): lines a
/// former process of the service left in the same file do not match. With several processes
/// chosen, it is the first one's (the trial's main process).
pub const TARGET_PID: &str = "${target.pid}";

/// How often pending markers are checked.
pub const TICK: Duration = Duration::from_millis(1);

/// One polled marker and what it needs between checks.
pub enum Polled {
    /// A TCP port listening, on a socket of the trial's processes.
    Listen(ListenWatch),
    /// A file existing.
    File(PathBuf),
    /// A log file followed from its end at spawn time, across rotation and truncation
    /// ([`LogFollower`]: read only when inotify reports a change).
    Log {
        /// The file.
        follower: LogFollower,
        /// The regex lines must match.
        regex: Regex,
    },
    /// A unit's journal entries, from `journalctl --follow` ([`JournalFollower`]: read only
    /// when its pipe is readable). `None` when `journalctl` could not be started: the phase
    /// is then never seen, and the trial says which phase it waited for.
    Journald {
        /// The entries.
        follower: Option<JournalFollower>,
        /// The unit, for the evidence.
        unit: String,
        /// The regex messages must match.
        regex: Regex,
    },
    /// A moment: spawn time plus the delay (monotonic ns).
    Delay(u64),
    /// An HTTP check running on its own thread: set once it answered 2xx.
    Http(Arc<Mutex<Option<(u64, String)>>>),
}

impl Polled {
    /// The polled form of `marker`; `None` for output markers.
    pub fn new(
        marker: &Marker,
        started_ns: u64,
        stop: &Arc<std::sync::atomic::AtomicBool>,
    ) -> Option<Polled> {
        Some(match marker {
            Marker::Stdout(_) | Marker::Stderr(_) => return None,
            Marker::Listen(port) => Polled::Listen(ListenWatch::new(*port)),
            Marker::File(path) => Polled::File(path.clone()),
            Marker::Log { path, regex, from } => Polled::Log {
                regex: Regex::new(regex).ok()?,
                follower: match from {
                    Some(mark) => LogFollower::from_mark(path, *mark),
                    None => LogFollower::from_end(path),
                },
            },
            Marker::Journald {
                unit,
                regex,
                directory,
                since_us,
            } => Polled::Journald {
                regex: Regex::new(regex).ok()?,
                follower: JournalFollower::since(
                    unit,
                    directory.as_deref(),
                    since_us.unwrap_or_else(crate::journald::realtime_us),
                )
                .inspect_err(|err| tracing::warn!(%unit, %err, "cannot follow the journal"))
                .ok(),
                unit: unit.clone(),
            },
            Marker::Delay(d) => {
                Polled::Delay(started_ns + u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2))
            }
            Marker::Http(url) => {
                let slot = Arc::new(Mutex::new(None));
                let (url, out, stop) = (url.clone(), slot.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("atropos-http-marker".into())
                    .spawn(move || {
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            if let Some(status) = http_status(&url)
                                && (200..300).contains(&status)
                            {
                                *out.lock().unwrap_or_else(|p| p.into_inner()) =
                                    Some((now_ns(), format!("GET {url} answered {status}")));
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    })
                    .ok()?;
                Polled::Http(slot)
            }
        })
    }

    /// Tells the marker its target now exists, `by` nanoseconds after the marker was made:
    /// markers are made before the spawn (a log line the target writes at once must not be
    /// taken for an old one), and
    /// - a delay counts from the spawn, so it moves `by` later;
    /// - a `listen` marker looks at who already holds the port now
    ///   ([`ListenWatch::look_before`]).
    pub fn spawned(&mut self, by: u64) {
        match self {
            Polled::Delay(at) => *at = at.saturating_add(by),
            Polled::Listen(watch) => watch.look_before(),
            _ => {}
        }
    }

    /// A descriptor that becomes readable when this marker may have been reached (a log
    /// file's inotify watch): the loop waits on it instead of ticking.
    pub fn wake_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        match self {
            Polled::Log { follower, .. } => follower.fd(),
            Polled::Journald { follower, .. } => follower.as_ref().and_then(JournalFollower::fd),
            _ => None,
        }
    }

    /// When a delay marker is due; the loop wakes exactly then instead of ticking.
    pub fn due_at(&self) -> Option<u64> {
        match self {
            Polled::Delay(at) => Some(*at),
            _ => None,
        }
    }

    /// Checks once: `Some((time, evidence))` when the marker is seen.
    ///
    /// `owners` names the trial's processes (the main process and its descendants). It is
    /// called only by a `listen` marker, and only once its port has a listener: most ticks
    /// cost one sock_diag exchange and no walk of the process tree.
    pub fn check(&mut self, owners: &dyn Fn() -> Vec<i32>) -> Option<(u64, String)> {
        match self {
            Polled::Listen(watch) => watch.check(owners),
            Polled::File(path) => path
                .exists()
                .then(|| (now_ns(), format!("{} exists", path.display()))),
            Polled::Delay(at) => (now_ns() >= *at).then(|| (*at, "delay elapsed".to_owned())),
            Polled::Http(slot) => slot.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            Polled::Log { follower, regex } => follower
                .lines()
                .into_iter()
                .find(|l| regex.is_match(l))
                .map(|l| (now_ns(), l)),
            Polled::Journald {
                follower,
                unit,
                regex,
            } => follower
                .as_mut()?
                .lines()
                .into_iter()
                .find(|l| regex.is_match(l))
                .map(|l| (now_ns(), format!("journal of {unit}: {l}"))),
        }
    }

    /// What the trial's observation should say about this marker, if anything: for `listen`,
    /// that the port was already in use by another process when the trial started, so the
    /// target may have failed to bind it and connections to it may reach someone else.
    ///
    /// To consume: call once, after the trial's loop has ended, and put the first note of
    /// the trial's markers in [`crate::Observation::error`] (the trial is then judged an error
    /// of the set-up, not of the target). It may scan every process's descriptors to name the
    /// holder, a few milliseconds: never call it from the loop.
    pub fn note(&self) -> Option<String> {
        match self {
            Polled::Listen(watch) => watch.note(),
            _ => None,
        }
    }
}

/// How long sockets found foreign are trusted to stay so before their holders are looked at
/// again: a holder may pass its socket on, but scanning the trial's descriptors on every tick
/// while someone else holds the port would cost more than the tick.
const FOREIGN_RECHECK: u64 = 10_000_000;

/// A `listen` marker: its port, and who listened on it before the target could have.
pub struct ListenWatch {
    port: u16,
    /// Where the port's listeners are looked up (a sock_diag socket kept open).
    source: sockets::Source,
    /// The port's listeners when the trial started, but for any later found to be the
    /// target's (it could have bound the port between its spawn and this look).
    before: Vec<Listener>,
    /// The inodes of the last listeners that no trial process held, and until when that
    /// answer stands; a listener not among them is looked at on the next tick.
    foreign: (Vec<u64>, u64),
    /// Whether a trial process was seen listening: then a socket in `before` did not stand
    /// in the target's way and is no reason to doubt the trial.
    seen: bool,
}

impl ListenWatch {
    /// A watch of `port` with its sock_diag socket open; who already listens is looked up
    /// by [`ListenWatch::look_before`], once the target is spawned.
    pub fn new(port: u16) -> ListenWatch {
        ListenWatch {
            port,
            source: sockets::Source::new(),
            before: Vec::new(),
            foreign: (Vec::new(), 0),
            seen: false,
        }
    }

    /// Looks up the listeners the port has now, just after the target's spawn: two dumps,
    /// tens of microseconds. Any found is someone else's, but for the race noted on
    /// `before`. (A look before the spawn found, in about one run of `well-behaved.yaml` in
    /// twelve, a listener on the trial's fresh port that no process held by the end of the
    /// trial, and the trial was an error.)
    pub fn look_before(&mut self) {
        self.before = self.source.listeners(self.port).unwrap_or_default();
    }

    /// `Some((time, evidence))` once one of `owners` holds a socket listening on the port.
    pub fn check(&mut self, owners: &dyn Fn() -> Vec<i32>) -> Option<(u64, String)> {
        let listeners = self.source.listeners(self.port).ok()?;
        if listeners.is_empty() {
            return None;
        }
        let now = now_ns();
        let (known, until) = &self.foreign;
        if now < *until && listeners.iter().all(|l| known.contains(&l.inode)) {
            return None;
        }
        let Some((pid, listener)) = sockets::holder_among(&listeners, &owners()) else {
            self.foreign = (
                listeners.iter().map(|l| l.inode).collect(),
                now + FOREIGN_RECHECK,
            );
            return None;
        };
        self.before.retain(|b| b.inode != listener.inode);
        self.seen = true;
        // Seen at the dump, not after the scan: a large descriptor table takes a while.
        Some((
            now,
            format!(
                "port {} listening ({}, pid {pid})",
                self.port, listener.addr
            ),
        ))
    }

    /// "port 18080 was already in use before the trial started: ..." when it was and the
    /// target was never seen listening on it.
    ///
    /// Once the target listened, an earlier socket did not keep it from the port. One that
    /// the target did not replace is, most often, a copy of a port probe that some fork held
    /// until its exec (a CI run saw one: a `term-after-exit` trial that reached `ready` was
    /// an error, its "holder" long gone by the end).
    pub fn note(&self) -> Option<String> {
        if self.seen {
            return None;
        }
        let first = self.before.first()?;
        let holder = match sockets::find_holder(first.inode) {
            Some((pid, cmd)) => format!("held by pid {pid} `{cmd}`"),
            None => format!(
                "(socket inode {}, uid {}) whose holder atropos could not see",
                first.inode, first.uid
            ),
        };
        let more = match self.before.len() - 1 {
            0 => String::new(),
            n => format!(" and {n} more socket(s)"),
        };
        Some(format!(
            "port {} was already in use before the trial started: {first} {holder}{more}; \
             the `listen` marker counts only the target's own socket: stop that process, or \
             give the target a port of its own (`${{trial.port}}`)",
            self.port
        ))
    }
}

/// GETs a plain-HTTP URL on this machine and returns the status code.
///
/// A dozen lines of HTTP/1.0 keep the injector free of an HTTP client stack; markers are
/// health endpoints of the target itself, reached over loopback.
pub fn http_status(url: &str) -> Option<u16> {
    use std::net::ToSocketAddrs;
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let addr = authority.to_socket_addrs().ok()?.next()?;
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: atropos\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    let text = std::str::from_utf8(&head[..n]).ok()?;
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn reads_the_status_of_a_loopback_http_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = sock.read(&mut buf);
            sock.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        });
        assert_eq!(http_status(&format!("http://{addr}/healthz")), Some(204));
        server.join().unwrap();
    }

    fn listen(port: u16) -> Polled {
        let mut polled = Polled::new(&Marker::Listen(port), now_ns(), &Default::default()).unwrap();
        polled.spawned(0);
        polled
    }

    fn me() -> i32 {
        i32::try_from(std::process::id()).unwrap()
    }

    #[test]
    fn listen_is_seen_once_an_owner_listens_and_not_after_it_closed() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut polled = listen(port);
        assert_eq!(polled.check(&|| vec![me()]), None);
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let (_, evidence) = polled.check(&|| vec![me()]).unwrap();
        assert_eq!(
            evidence,
            format!("port {port} listening (127.0.0.1, pid {})", me())
        );
        assert_eq!(polled.note(), None);
        drop(listener);
        assert_eq!(polled.check(&|| vec![me()]), None);
    }

    #[test]
    fn listen_ignores_a_port_held_before_the_trial_and_reports_it() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let token = format!("atropos-markers-test-{}-idle", std::process::id());
        let child = sockets::tests::Reaped(
            std::process::Command::new("sh")
                .args(["-c", "sleep 5", &token])
                .spawn()
                .unwrap(),
        );
        let target = i32::try_from(child.0.id()).unwrap();
        let mut polled = listen(port);
        for _ in 0..20 {
            assert_eq!(polled.check(&|| sockets::process_tree(target)), None);
            std::thread::sleep(TICK);
        }
        let note = polled.note().unwrap();
        assert!(
            note.starts_with(&format!(
                "port {port} was already in use before the trial started: 127.0.0.1:{port} \
                 held by pid {} `",
                me()
            )),
            "{note}"
        );
        drop(held);
    }

    #[test]
    fn a_socket_held_before_the_trial_is_no_error_once_the_target_listens() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let mut polled = listen(port);
        assert!(
            polled.note().is_some(),
            "held by the test when the trial began"
        );
        drop(held);
        let _own = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert!(polled.check(&|| vec![me()]).is_some());
        assert_eq!(polled.note(), None);
    }

    #[test]
    fn listen_is_seen_through_the_descriptor_of_a_child_that_listens() {
        let Some(python) = sockets::tests::python() else {
            eprintln!("skipped: no python3 to play the listening child");
            return;
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (mut polled, mut other) = (listen(port), listen(port));
        let (child, _) = sockets::tests::listening_child(&python, port);
        let target = i32::try_from(child.0.id()).unwrap();
        let (_, evidence) = polled.check(&|| sockets::process_tree(target)).unwrap();
        assert!(evidence.ends_with(&format!("pid {target})")), "{evidence}");
        assert_eq!(polled.note(), None);
        assert_eq!(other.check(&|| vec![me()]), None, "not the test's socket");
    }

    #[test]
    fn a_listener_found_foreign_is_looked_at_again_after_ten_milliseconds() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut polled = listen(port);
        let _listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert_eq!(polled.check(&Vec::new), None);
        let started = now_ns();
        let again = polled.check(&|| vec![me()]);
        if now_ns() - started < FOREIGN_RECHECK {
            assert_eq!(again, None, "trusted foreign for a while");
        }
        std::thread::sleep(Duration::from_nanos(FOREIGN_RECHECK));
        assert!(polled.check(&|| vec![me()]).is_some());
    }

    #[test]
    fn follows_a_log_file_that_appears_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let mut polled = Polled::new(
            &Marker::Log {
                path: path.clone(),
                regex: "listening on \\d+".into(),
                from: None,
            },
            now_ns(),
            &Default::default(),
        )
        .unwrap();
        assert!(polled.check(&Vec::new).is_none());
        std::fs::write(&path, "booting\nlistening on 9\n").unwrap();
        assert_eq!(
            polled.check(&Vec::new).map(|(_, l)| l).as_deref(),
            Some("listening on 9")
        );
    }
}
