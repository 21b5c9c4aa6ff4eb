//! Execute: the migration orchestrator and the VMPatrol model.

pub mod ovsdb;
pub mod queues;
