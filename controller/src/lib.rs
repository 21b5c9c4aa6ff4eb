//! Shoal controller: an OpenFlow 1.3 controller application for Open vSwitch
//! data centers, organised as a MAPE-K loop.
//!
//! One folder per stage, each depending only on the layers below it
//! (docs/architecture.md):
//! - [`monitor`]: switch connections, forwarding, LLDP topology, statistics
//!   accounting (the traffic matrix λ(u,v)), packet parsing, cookies, host
//!   reports;
//! - [`knowledge`]: the live knowledge and its locks, the snapshot the
//!   policies read, and its persistence;
//! - [`analyze`] and [`plan`]: pure hotspot detection and policies;
//! - [`sim`]: the data-center simulator that runs the same analyze/plan code;
//! - [`execute`]: the migration orchestrator and the VMPatrol model;
//! - [`mapek`]: the loop: forwarding core, pollers, one live round;
//! - [`api`]: the REST API for engineers;
//! - [`app`]: wiring, start and graceful shutdown.

#![warn(missing_docs)]

pub mod analyze;
pub mod api;
pub mod app;
pub mod cluster;
pub mod config;
pub mod execute;
pub mod knowledge;
pub mod mapek;
pub mod monitor;
pub mod plan;
pub mod sim;
