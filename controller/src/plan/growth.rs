//! Memory growth before migration, shared by the policies that resolve a
//! memory overload by giving a VM more memory first (IDC-aware; Sandpiper
//! as the thesis's baseline).
//!
//! On a memory-hot host one VM grows by one whole step (default 32 MB) when
//! the host has at least that much free memory and the VM stays within its
//! maximum; otherwise growth is impossible and the caller falls through to
//! migration. Which VM grows is [`GrowthTarget`].

use super::constraints::Ledger;
use super::view::{volume, View};
use super::{Action, Decision, Details};
use crate::knowledge::snapshot::ratio;
use serde::{Deserialize, Serialize};

/// Which VM of a memory-hot host grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrowthTarget {
    /// The swapping VM: highest swap-out, then highest used / allocated
    /// memory (the thesis's experiment, §4.2).
    #[default]
    Swapping,
    /// The VM with the largest Sandpiper volume (the thesis's text: "the
    /// victim with bigger volume value").
    Volume,
}

/// The VM of `vms` that grows under `target`, if any.
fn pick(view: &View, led: &Ledger, vms: &[usize], target: GrowthTarget) -> Option<usize> {
    let key = |v: usize| -> (f64, f64) {
        let s = view.vm_sample(v);
        let alloc = led.vm_mem.get(v).copied().unwrap_or(0.0);
        match target {
            GrowthTarget::Swapping => (s.swap_out_pps, ratio(s.mem_used_mb, alloc)),
            GrowthTarget::Volume => {
                let host = view.hosts.get(led.host_of(v));
                let cpu = ratio(s.cpu_cores, host.map_or(0.0, |h| h.cores));
                let mem = ratio(alloc, host.map_or(0.0, |h| h.memory_mb));
                let net = ratio(
                    s.tx_bytes_per_s.max(s.rx_bytes_per_s),
                    host.map_or(0.0, |h| h.nic_bytes_per_s()),
                );
                (volume(cpu, mem, net, 0.99), s.swap_out_pps)
            }
        }
    };
    vms.iter().copied().max_by(|&a, &b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.total_cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then(b.cmp(&a))
    })
}

/// Grows one VM of memory-hot host `i` by a whole `step_mb` and records it
/// in the ledger; `None` when the chosen VM cannot take a whole step (the
/// host has less free memory, or the VM would exceed its maximum).
pub fn grow(
    view: &View,
    led: &mut Ledger,
    i: usize,
    vms: &[usize],
    step_mb: f64,
    target: GrowthTarget,
    policy: &str,
) -> Option<Decision> {
    let v = pick(view, led, vms, target)?;
    let host = view.hosts.get(i)?;
    let free = host.memory_mb - led.mem_used.get(i).copied().unwrap_or(0.0);
    let alloc = led.vm_mem.get(v).copied().unwrap_or(0.0);
    let max = view.vms.get(v).map_or(0.0, |x| x.max_memory_mb);
    if !(step_mb > 0.0 && free >= step_mb && alloc + step_mb <= max) {
        return None;
    }
    let target_mb = alloc + step_mb;
    let s = view.vm_sample(v);
    led.apply_resize(v, target_mb);
    let which = match target {
        GrowthTarget::Swapping => "the swapping VM",
        GrowthTarget::Volume => "the VM with the largest volume",
    };
    Some(Decision {
        action: Action::Resize {
            vm: view.vm_name(v).into(),
            host: view.host_name(i).into(),
            target_mb,
        },
        reason: format!("{policy}: memory hotspot; grow {which} by {step_mb} MB before migrating"),
        score: s.swap_out_pps,
        details: Details::default()
            .metric("swap_out_pps", s.swap_out_pps)
            .metric("used_over_allocated", ratio(s.mem_used_mb, alloc))
            .metric("allocated_mb", alloc)
            .metric("max_memory_mb", max)
            .metric("host_free_mb", free)
            .metric("step_mb", step_mb),
    })
}
