//! Targets atropos did not start: running services picked from `/proc` and pinned.
//!
//! Selecting and pinning ([`select`]), a pinned process as a trial's subject
//! ([`attached`]), and the service around it: its cgroup, and its recovery by a replacement
//! process ([`service`]), measured on the node that runs the trial.

pub mod attached;
pub mod select;
pub mod service;

pub use attached::{AttachError, Attached};

pub use select::{
    Count, Guard, Pinned, Process, Refusal, SelectError, Selection, Selector, uid_by_name,
};
