//! Shoal host daemon (`shoal-hostd`): sensors and effectors of one hypervisor.
//!
//! - [`sensor`] reads host and VM metrics (procfs, schedstat, QMP, namespace
//!   interface counters; [`procfs`] has the pure parsers, [`scenario`] the
//!   CPU/memory time series of namespace VMs);
//! - [`daemon`] registers with the controller and reports every interval
//!   (types in [`shoal_common::proto`]), with retries;
//! - [`api`] is the effector API; [`commands`] carries commands out through
//!   the [`backend::Backend`] trait: the [`qemu`] backend (real QEMU over
//!   [`qmp`]) or the [`netns`] backend (namespace VMs whose pre-copy stream
//!   is sent for real), [`sriov`] for real VFs;
//! - [`state`] holds the VMs, commands and events; it knows a VM's runtime
//!   only through the [`vm_runtime::VmRuntime`] trait;
//! - [`plan`] turns a VM definition (configured, or from a `prepare_incoming`
//!   on the wire) into what runs here: QEMU arguments only from this host's
//!   machine [`template`]s, disk and scenario paths confined to configured
//!   directories ([`confine`]). No command line travels on the wire.
//!
//! See docs/hostd.md for usage, configuration and the API.

#![warn(missing_docs)]

pub mod api;
pub mod backend;
pub mod commands;
pub mod config;
pub mod confine;
pub mod counters;
pub mod daemon;
pub mod metrics;
/// Outgoing HTTP (shared with the controller).
pub use shoal_common::http;
pub mod netns;
pub mod persist;
pub mod plan;
pub mod procfs;
pub mod qemu;
pub mod qmp;
pub mod scenario;
pub mod sensor;
pub mod sriov;
pub mod state;
pub mod sys;
pub mod template;
pub mod vm_runtime;
