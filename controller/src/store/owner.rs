//! Who writes a run, and whether that writer is still alive.
//!
//! A pid alone is not enough: after a reboot, or once the pid is reused, another process
//! holds it. So a run records the host name, the kernel's boot id, the pid and the pid's
//! start time (field 22 of `/proc/PID/stat`); the owner is alive only while all four match a
//! live, non-zombie process. Runs written on another host are left alone: their owner
//! cannot be checked from here.

use atropos_injector::procfs::ProcStat;
use sqlx::sqlite::SqliteConnection;

/// The identity of a process that writes runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The host name.
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`: changes at every boot.
    pub boot: String,
    /// The process id.
    pub pid: i32,
    /// The process's start time in clock ticks since boot.
    pub start: u64,
}

/// What is known about a recorded owner, seen from this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The owner is running.
    Alive,
    /// The owner is gone (exited, killed, zombie, or the machine rebooted).
    Dead,
    /// The owner ran on another host.
    Unknown,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = i32::try_from(std::process::id()).expect("Linux pids fit in an i32");
        Owner {
            host: read_trimmed("/proc/sys/kernel/hostname"),
            boot: read_trimmed("/proc/sys/kernel/random/boot_id"),
            pid,
            start: ProcStat::read(pid).map_or(0, |stat| stat.starttime),
        }
    }

    /// Whether this recorded owner is alive, judged from process `me`.
    pub fn liveness(&self, me: &Owner) -> Liveness {
        if self.host != me.host {
            return Liveness::Unknown;
        }
        if self.boot != me.boot {
            return Liveness::Dead;
        }
        match ProcStat::read(self.pid) {
            Some(stat) if stat.starttime == self.start && !stat.is_zombie() => Liveness::Alive,
            _ => Liveness::Dead,
        }
    }
}

/// Marks every `running` or `queued` run whose owner is dead as `interrupted` (a queued run's
/// owner is the controller that queued it); returns how many.
pub(crate) async fn mark_dead_runs_interrupted(conn: &mut SqliteConnection) -> anyhow::Result<u64> {
    let me = Owner::current();
    let running: Vec<(i64, String, String, i64, i64)> = sqlx::query_as(
        "SELECT id, owner_host, owner_boot, owner_pid, owner_start FROM runs
         WHERE status IN ('running', 'queued')",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut marked = 0;
    for (id, host, boot, pid, start) in running {
        let owner = Owner {
            host,
            boot,
            pid: i32::try_from(pid).unwrap_or(-1),
            start: u64::try_from(start).unwrap_or(0),
        };
        if owner.liveness(&me) != Liveness::Dead {
            continue;
        }
        // The end is unknown: the last commit is the best estimate.
        let done = sqlx::query(
            "UPDATE runs SET status = 'interrupted', ended_at = COALESCE(ended_at,
                (SELECT max(updated_at) FROM run_experiments WHERE run_id = runs.id), started_at)
             WHERE id = ? AND status IN ('running', 'queued')",
        )
        .bind(id)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() > 0 {
            tracing::info!(
                run = id,
                pid = owner.pid,
                "run's atropos is gone; marked interrupted"
            );
            marked += 1;
        }
    }
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive() {
        let me = Owner::current();
        assert!(me.start > 0);
        assert_eq!(me.liveness(&me), Liveness::Alive);
    }

    #[test]
    fn a_reused_pid_with_another_start_time_is_dead() {
        let me = Owner::current();
        let other = Owner {
            start: me.start + 1,
            ..me.clone()
        };
        assert_eq!(other.liveness(&me), Liveness::Dead);
    }

    #[test]
    fn another_boot_is_dead_and_another_host_unknown() {
        let me = Owner::current();
        let rebooted = Owner {
            boot: "another-boot".into(),
            ..me.clone()
        };
        assert_eq!(rebooted.liveness(&me), Liveness::Dead);
        let remote = Owner {
            host: "elsewhere".into(),
            ..me.clone()
        };
        assert_eq!(remote.liveness(&me), Liveness::Unknown);
    }
}
