//! Execute: the migration orchestrator and the VMPatrol model.
