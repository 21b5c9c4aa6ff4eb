//! Shoal controller: an OpenFlow 1.3 controller application for Open vSwitch
//! data centers, organised as a MAPE-K loop.
//!
//! One module per stage, each with a narrow API:
//! - [`openflow`]: switch connections (listener, handshake, xid-matched requests);
//! - [`topology`]: LLDP link discovery and endpoint (VM) location;
//! - [`forwarding`]: pure forwarding decisions returning OpenFlow messages;
//! - [`monitor`]: statistics polling, counter deltas, the traffic matrix λ(u,v);
//! - [`knowledge`]: state shared by the stages and its persistence;
//! - [`analyze`] and [`plan`]: pure hotspot detection and policies;
//! - [`execute`]: the migration orchestrator and the VMPatrol model;
//! - [`api`]: the REST API for engineers;
//! - [`sim`]: the data-center simulator that runs the same analyze/plan code.

pub mod analyze;
pub mod execute;
pub mod knowledge;
pub mod plan;
pub mod sim;
