//! The VMPatrol pre-copy live-migration model (ALGORITHMS.md §3.6).
