//! Targets atropos did not start: running services picked from `/proc` and pinned.
//!
//! This is the first part of attach mode: selecting and pinning. The trial driver, the
//! markers of a running service and recovery by a replacement process build on it.

pub mod attached;
pub mod select;

pub use attached::{AttachError, Attached};

pub use select::{
    Count, Guard, Pinned, Process, Refusal, SelectError, Selection, Selector, uid_by_name,
};
