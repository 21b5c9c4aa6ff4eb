//! The operations a VM backend carries out for the daemon's commands: the
//! [`Backend`] trait, implemented by [`crate::qemu::QemuBackend`] (real
//! QEMU over QMP) and [`crate::netns::NetnsBackend`] (namespace VMs). The
//! command executor picks one by [`shoal_common::proto::BackendKind`]
//! (`crate::commands::backend`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use shoal_common::proto::{MigrationResult, MigrationSpec, VmInventory};

use crate::config::Config;
use crate::plan::VmPlan;
use crate::state::{Hostd, Vm};
use crate::vm_runtime::VmRuntime;

/// A boxed, sendable future (the trait is object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A VM backend.
pub trait Backend: Send + Sync {
    /// Starts (or loads) a configured VM from its checked plan
    /// ([`crate::plan::plan`]).
    fn start<'a>(
        &'a self,
        cfg: &'a Config,
        inv: &'a VmInventory,
        plan: VmPlan,
    ) -> BoxFuture<'a, Result<Box<dyn VmRuntime>, String>>;

    /// Destination side of a migration: prepares the incoming VM from its
    /// checked plan (built before the command was accepted).
    fn prepare_incoming<'a>(
        &'a self,
        hostd: &'a Arc<Hostd>,
        inv: &'a VmInventory,
        plan: VmPlan,
        spec: &'a MigrationSpec,
        cmd_id: &'a str,
    ) -> BoxFuture<'a, Result<MigrationResult, String>>;

    /// Source side of a migration. On error the VM keeps running here.
    fn migrate_out<'a>(
        &'a self,
        hostd: &'a Arc<Hostd>,
        vm: &'a Arc<Vm>,
        spec: &'a MigrationSpec,
        cmd_id: &'a str,
    ) -> BoxFuture<'a, Result<MigrationResult, String>>;

    /// Resizes the VM's memory; returns the size reached, MB.
    fn resize_memory<'a>(
        &'a self,
        vm: &'a Vm,
        target_mb: u64,
    ) -> BoxFuture<'a, Result<u64, String>>;

    /// Attaches a VF (or its stand-in); returns the device.
    fn vf_attach<'a>(
        &'a self,
        hostd: &'a Hostd,
        vm: &'a Vm,
    ) -> BoxFuture<'a, Result<String, String>>;

    /// Removes the VF (stand-in) `device` that attach returned.
    fn vf_detach<'a>(&'a self, vm: &'a Vm, device: &'a str) -> BoxFuture<'a, Result<(), String>>;
}
