//! Processes atropos must never signal: PID 1, itself, and its ancestors.

use std::sync::OnceLock;

struct Protected {
    me: i32,
    my_pgid: i32,
    pids: Vec<i32>,
}

fn protected() -> &'static Protected {
    static PROTECTED: OnceLock<Protected> = OnceLock::new();
    PROTECTED.get_or_init(|| {
        let me = std::process::id() as i32;
        let mut pids = crate::procfs::ancestors(me);
        pids.push(me);
        pids.push(1);
        let my_pgid = nix::unistd::getpgrp().as_raw();
        Protected { me, my_pgid, pids }
    })
}

/// Whether `pid` may be signalled at all.
pub fn may_signal(pid: i32) -> bool {
    pid > 1 && !protected().pids.contains(&pid)
}

/// Whether the process group `pgid` may be signalled: never ours, never PID 1's.
pub fn may_signal_group(pgid: i32) -> bool {
    let p = protected();
    pgid > 1 && pgid != p.my_pgid && pgid != p.me && !p.pids.contains(&pgid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn refuses_pid_one_self_parent_and_own_group() {
        let me = std::process::id() as i32;
        assert!(!may_signal(1));
        assert!(!may_signal(0));
        assert!(!may_signal(-1));
        assert!(!may_signal(me));
        assert!(!may_signal(nix::unistd::getppid().as_raw()));
        assert!(!may_signal_group(nix::unistd::getpgrp().as_raw()));
        assert!(!may_signal_group(1));
    }
}
