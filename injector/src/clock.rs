//! The monotonic clock in nanoseconds, readable by any process on the machine.
//!
//! `std::time::Instant` is opaque; atropos stores raw `CLOCK_MONOTONIC` nanoseconds so that
//! times taken by a target (in its signal handler, say) compare with ours.

use nix::time::{ClockId, clock_gettime};

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub fn now_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always readable");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}
