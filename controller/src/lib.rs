//! Shoal controller: an OpenFlow 1.3 controller application for Open vSwitch
//! data centers, organised as a MAPE-K loop.
//!
//! One module per stage, each with a narrow API:
//! - [`openflow`]: switch connections (listener, handshake, xid-matched requests);
//! - [`topology`]: LLDP link discovery and endpoint (VM) location;
//! - [`forwarding`]: pure forwarding decisions returning OpenFlow messages;
//! - [`monitor`]: statistics accounting, counter deltas, the traffic matrix λ(u,v);
//! - [`knowledge`]: state shared by the stages and its persistence;
//! - [`analyze`] and [`plan`]: pure hotspot detection and policies;
//! - [`execute`]: the migration orchestrator and the VMPatrol model;
//! - [`api`]: the REST API for engineers;
//! - [`runtime`]: wiring, pollers and graceful shutdown;
//! - [`sim`]: the data-center simulator that runs the same analyze/plan code.

#![warn(missing_docs)]

pub mod analyze;
pub mod api;
pub mod config;
pub mod cookie;
pub mod execute;
pub mod forwarding;
pub mod hosts;
pub mod knowledge;
pub mod live;
pub mod macser;
pub mod monitor;
pub mod openflow;
pub mod packet;
pub mod plan;
pub mod runtime;
pub mod sim;
pub mod topology;
