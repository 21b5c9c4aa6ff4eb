//! What the daemon's state knows about how a VM runs: the [`VmRuntime`]
//! trait. The QEMU runtime ([`crate::qemu::QemuRuntime`]) and the namespace
//! runtime ([`crate::netns::NetnsRuntime`]) implement it in their own
//! modules; [`crate::state`] depends on this trait only.

use std::any::Any;

use shoal_common::proto::{BackendKind, VmInventory};

/// The runtime of one VM on this host.
pub trait VmRuntime: Send + Sync + 'static {
    /// Which backend runs the VM.
    fn kind(&self) -> BackendKind;
    /// The runtime as [`Any`], for its own backend's operations.
    fn as_any(&self) -> &dyn Any;
    /// Completes the VM's inventory entry with what only the runtime knows
    /// (e.g. the scenario epoch of a namespace VM). Default: nothing.
    fn fill_inventory(&self, _inv: &mut VmInventory) {}
    /// The VM's process on this host (pid and start time), if it has one
    /// (QEMU): what the state file keeps to re-adopt it after a restart.
    fn process(&self) -> Option<crate::persist::ProcessId> {
        None
    }
    /// The VM's process id on this host, if it has one (QEMU).
    fn pid(&self) -> Option<u32> {
        self.process().map(|p| p.pid)
    }
}

impl dyn VmRuntime {
    /// The runtime as its concrete type, if it is one.
    pub fn downcast<T: VmRuntime>(&self) -> Option<&T> {
        self.as_any().downcast_ref::<T>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;
    impl VmRuntime for Fake {
        fn kind(&self) -> BackendKind {
            BackendKind::Netns
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    #[test]
    fn downcasts_to_its_own_type_only() {
        let rt: Box<dyn VmRuntime> = Box::new(Fake);
        assert!(rt.downcast::<Fake>().is_some());
        struct Other;
        impl VmRuntime for Other {
            fn kind(&self) -> BackendKind {
                BackendKind::Qemu
            }
            fn as_any(&self) -> &dyn Any {
                self
            }
        }
        assert!(rt.downcast::<Other>().is_none());
    }
}
