//! Execute: the migration orchestrator, the VMPatrol model and the
//! reservations it makes (OpenFlow meters, or OVS queues through the
//! project's own OVSDB client).
//!
//! - **Owns**: migrations and their life cycle, bandwidth reservations,
//!   the commands sent to host daemons.
//! - **Reads**: the fabric (topology, hosts, statistics) through the
//!   read-only [`handles::FabricView`], the settings
//!   it is given ([`orchestrator::OrchConfig`]), Plan's pure physics.
//! - **Writes through** the narrow [`handles`]: switches (OpenFlow batches
//!   and barriers), host daemons ([`handles::HostdClient`]), the store, the
//!   clock.
//! - **May not touch**: the loop's state, the API (its errors are
//!   [`orchestrator::OrchError`], mapped to HTTP statuses by
//!   [`crate::api::map_error`]).
#![warn(missing_docs)]

pub mod handles;
pub mod orchestrator;
pub mod ovsdb;
pub mod queues;

/// The VMPatrol pre-copy model, shared with hostd.
pub use shoal_common::vmpatrol;
