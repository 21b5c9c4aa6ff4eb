//! Execute: the migration orchestrator, the VMPatrol model and the
//! reservations it makes (OpenFlow meters, or OVS queues through the
//! project's own OVSDB client).
#![warn(missing_docs)]

pub mod handles;
pub mod orchestrator;
pub mod ovsdb;
pub mod queues;

/// The VMPatrol pre-copy model (ALGORITHMS.md §3.6), shared with hostd.
pub use shoal_common::vmpatrol;
