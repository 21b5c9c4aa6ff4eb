//! Execute: the migration orchestrator and the VMPatrol model.
#![warn(missing_docs)]

/// The VMPatrol pre-copy model (ALGORITHMS.md §3.6), shared with hostd.
pub use shoal_common::vmpatrol;
