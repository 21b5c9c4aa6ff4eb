//! An indexed, read-only view of a [`Snapshot`] for fast planning.
//!
//! VMs and hosts get dense indices in name order; traffic becomes an
//! adjacency list per VM (both directions merged, peers sorted by index);
//! host locations become small integers so that the level of a pair is a
//! few integer comparisons. Building a view is `O(V + H + E log E)`.
//!
//! External endpoints ([`Snapshot::externals`]) are not VMs: they have no
//! host and never move. A VM's traffic with them is a separate list
//! ([`View::ext_peers`]) at a fixed location ([`View::ext_level`]); it also
//! counts in the VM's [`View::ext_tx`] / [`View::ext_rx`] (traffic that
//! crosses the NIC of whichever host the VM is on).
//!
//! The snapshot's placement rules ([`Snapshot::rules`]) are compiled here
//! once per round ([`View::rules`]), so that the simulator and the live
//! loop hand them to every policy's [`super::constraints::Ledger`] the same
//! way.

use super::rules::RuleIndex;
use crate::knowledge::snapshot::{HostSample, HostState, Snapshot, VmSample, VmState};
use std::collections::HashMap;

/// A traffic peer of a VM.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peer {
    /// The peer's VM index.
    pub vm: usize,
    /// λ(this, peer), bytes/s.
    pub out: f64,
    /// λ(peer, this), bytes/s.
    pub inn: f64,
}

impl Peer {
    /// Both directions, bytes/s.
    pub fn total(&self) -> f64 {
        self.out + self.inn
    }
}

/// A VM's traffic with an external endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExtPeer {
    /// The external's index.
    pub ext: usize,
    /// λ(VM, external), bytes/s.
    pub out: f64,
    /// λ(external, VM), bytes/s.
    pub inn: f64,
}

impl ExtPeer {
    /// Both directions, bytes/s.
    pub fn total(&self) -> f64 {
        self.out + self.inn
    }
}

/// Indexed view of a snapshot.
#[derive(Debug)]
pub struct View<'a> {
    /// The snapshot.
    pub snap: &'a Snapshot,
    /// VM names by index (sorted).
    pub vm_names: Vec<&'a str>,
    /// VM states by index.
    pub vms: Vec<&'a VmState>,
    /// Latest sample per VM.
    pub vm_latest: Vec<VmSample>,
    /// Host ids by index (sorted).
    pub host_names: Vec<&'a str>,
    /// Host states by index.
    pub hosts: Vec<&'a HostState>,
    /// Latest sample per host.
    pub host_latest: Vec<HostSample>,
    /// Host of each VM in the snapshot.
    pub vm_host: Vec<usize>,
    /// Rack index of each host.
    pub host_rack: Vec<u32>,
    /// Pod index of each host.
    pub host_pod: Vec<u32>,
    /// Cluster index of each host.
    pub host_cluster: Vec<u32>,
    /// VM traffic to outside the VMs (external endpoints, and what the
    /// VM's counters show beyond the matrix), bytes/s sent.
    pub ext_tx: Vec<f64>,
    /// VM traffic from outside the VMs, bytes/s received.
    pub ext_rx: Vec<f64>,
    /// External endpoint names by index (sorted; names of VMs left out).
    pub ext_names: Vec<&'a str>,
    /// Rack index of each external's switch (a ToR), if any.
    ext_rack: Vec<Option<u32>>,
    /// Pod index of each external's switch (a ToR or aggregation), if any.
    ext_pod: Vec<Option<u32>>,
    /// Cluster index of each external's switch.
    ext_cluster: Vec<u32>,
    ext_adj_start: Vec<usize>,
    ext_adj: Vec<ExtPeer>,
    /// Per external: the hosts nearest to it (see [`View::ext_nearest_hosts`]).
    ext_near: Vec<Vec<usize>>,
    /// The snapshot's placement rules, compiled against these indices.
    pub rules: RuleIndex,
    vm_index: HashMap<&'a str, usize>,
    host_index: HashMap<&'a str, usize>,
    adj_start: Vec<usize>,
    adj: Vec<Peer>,
}

/// At most this many hosts are listed as the nearest to an external
/// endpoint ([`View::ext_nearest_hosts`]), to bound the candidates a policy
/// evaluates for it.
pub const MAX_NEAREST_HOSTS: usize = 16;

fn intern<'a>(map: &mut HashMap<&'a str, u32>, s: &'a str) -> u32 {
    let n = map.len() as u32;
    *map.entry(s).or_insert(n)
}

impl<'a> View<'a> {
    /// Builds the view. VMs whose host is unknown are left out (with their
    /// traffic); so are traffic entries with unknown VMs or externals,
    /// between two externals, self-pairs and rates that are not finite and
    /// positive. An external named like a VM is left out.
    pub fn new(snap: &'a Snapshot) -> Self {
        let host_names: Vec<&str> = snap.hosts.keys().map(|s| s.as_str()).collect();
        let hosts: Vec<&HostState> = snap.hosts.values().collect();
        let host_index: HashMap<&str, usize> = host_names
            .iter()
            .enumerate()
            .map(|(i, h)| (*h, i))
            .collect();
        let (mut racks, mut pods, mut clusters) = (HashMap::new(), HashMap::new(), HashMap::new());
        let mut host_rack = Vec::with_capacity(hosts.len());
        let mut host_pod = Vec::with_capacity(hosts.len());
        let mut host_cluster = Vec::with_capacity(hosts.len());
        for h in &hosts {
            host_rack.push(intern(&mut racks, &h.location.rack));
            host_pod.push(intern(&mut pods, &h.location.pod));
            host_cluster.push(intern(&mut clusters, &h.location.cluster));
        }
        let host_latest = hosts.iter().map(|h| h.latest()).collect();
        let (mut ext_rack, mut ext_pod, mut ext_cluster) = (Vec::new(), Vec::new(), Vec::new());
        let mut ext_names: Vec<&str> = Vec::new();
        for (name, e) in &snap.externals {
            if snap.vms.contains_key(name) {
                continue;
            }
            ext_names.push(name.as_str());
            ext_rack.push(e.location.rack.as_deref().map(|r| intern(&mut racks, r)));
            ext_pod.push(e.location.pod.as_deref().map(|p| intern(&mut pods, p)));
            ext_cluster.push(intern(&mut clusters, &e.location.cluster));
        }
        let ext_index: HashMap<&str, usize> =
            ext_names.iter().enumerate().map(|(i, e)| (*e, i)).collect();

        let mut vm_names = Vec::with_capacity(snap.vms.len());
        let mut vms = Vec::with_capacity(snap.vms.len());
        let mut vm_host = Vec::with_capacity(snap.vms.len());
        for (name, vm) in &snap.vms {
            if let Some(&h) = host_index.get(vm.host.as_str()) {
                vm_names.push(name.as_str());
                vms.push(vm);
                vm_host.push(h);
            }
        }
        let vm_index: HashMap<&str, usize> =
            vm_names.iter().enumerate().map(|(i, v)| (*v, i)).collect();
        let vm_latest: Vec<VmSample> = vms.iter().map(|v| v.latest()).collect();

        // (a, b, out, in) for both orientations of every entry; VM–external
        // entries as (VM, external, out, in).
        let mut edges: Vec<(u32, u32, f64, f64)> = Vec::new();
        let mut ext_edges: Vec<(u32, u32, f64, f64)> = Vec::new();
        for (src, row) in &snap.traffic {
            let su = vm_index.get(src.as_str()).copied();
            let se = ext_index.get(src.as_str()).copied();
            if su.is_none() && se.is_none() {
                continue;
            }
            for (dst, &rate) in row {
                if !(rate.is_finite() && rate > 0.0) {
                    continue;
                }
                let dv = vm_index.get(dst.as_str()).copied();
                match (su, dv) {
                    (Some(u), Some(v)) => {
                        if u != v {
                            edges.push((u as u32, v as u32, rate, 0.0));
                            edges.push((v as u32, u as u32, 0.0, rate));
                        }
                    }
                    (Some(u), None) => {
                        if let Some(&e) = ext_index.get(dst.as_str()) {
                            ext_edges.push((u as u32, e as u32, rate, 0.0));
                        }
                    }
                    (None, Some(v)) => {
                        if let Some(e) = se {
                            ext_edges.push((v as u32, e as u32, 0.0, rate));
                        }
                    }
                    (None, None) => {}
                }
            }
        }
        let (ext_adj_start, ext_adj) = csr(ext_edges, vm_names.len(), |e, out, inn| ExtPeer {
            ext: e,
            out,
            inn,
        });
        let (adj_start, adj) = csr(edges, vm_names.len(), |vm, out, inn| Peer { vm, out, inn });
        let located: Vec<bool> = hosts.iter().map(|h| !h.location.unknown).collect();
        let rules = RuleIndex::compile(
            &snap.rules,
            &vm_names,
            &host_names,
            &host_rack,
            &host_pod,
            &located,
        );
        let mut ext_tx = Vec::with_capacity(vm_names.len());
        let mut ext_rx = Vec::with_capacity(vm_names.len());
        let mut view = View {
            snap,
            vm_names,
            vms,
            vm_latest,
            host_names,
            hosts,
            host_latest,
            vm_host,
            host_rack,
            host_pod,
            host_cluster,
            ext_tx: Vec::new(),
            ext_rx: Vec::new(),
            ext_names,
            ext_rack,
            ext_pod,
            ext_cluster,
            ext_adj_start,
            ext_adj,
            ext_near: Vec::new(),
            rules,
            vm_index,
            host_index,
            adj_start,
            adj,
        };
        for v in 0..view.vm_count() {
            let (out, inn) = view
                .peers(v)
                .iter()
                .fold((0.0, 0.0), |(o, i), p| (o + p.out, i + p.inn));
            let (eout, einn) = view
                .ext_peers(v)
                .iter()
                .fold((0.0, 0.0), |(o, i), p| (o + p.out, i + p.inn));
            let s = view.vm_latest.get(v).cloned().unwrap_or_default();
            // At least its traffic with the external endpoints of the
            // matrix, whatever its own counters say.
            ext_tx.push((s.tx_bytes_per_s - out).max(eout).max(0.0));
            ext_rx.push((s.rx_bytes_per_s - inn).max(einn).max(0.0));
        }
        view.ext_tx = ext_tx;
        view.ext_rx = ext_rx;
        view.ext_near = view.nearest_hosts();
        view
    }

    /// For every external: the hosts of its rack, else of its pod, else of
    /// its cluster (the first [`MAX_NEAREST_HOSTS`] by index); none when no
    /// host shares its cluster.
    fn nearest_hosts(&self) -> Vec<Vec<usize>> {
        if self.ext_names.is_empty() {
            return Vec::new();
        }
        let group = |of: &[u32]| {
            let mut m: HashMap<u32, Vec<usize>> = HashMap::new();
            for (h, &x) in of.iter().enumerate() {
                let l = m.entry(x).or_default();
                if l.len() < MAX_NEAREST_HOSTS {
                    l.push(h);
                }
            }
            m
        };
        let (racks, pods, clusters) = (
            group(&self.host_rack),
            group(&self.host_pod),
            group(&self.host_cluster),
        );
        (0..self.ext_count())
            .map(|e| {
                let rack = self.ext_rack.get(e).copied().flatten();
                let pod = self.ext_pod.get(e).copied().flatten();
                let cluster = self.ext_cluster.get(e).copied();
                rack.and_then(|r| racks.get(&r))
                    .or_else(|| pod.and_then(|p| pods.get(&p)))
                    .or_else(|| cluster.and_then(|c| clusters.get(&c)))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Number of VMs.
    pub fn vm_count(&self) -> usize {
        self.vm_names.len()
    }

    /// Number of hosts.
    pub fn host_count(&self) -> usize {
        self.host_names.len()
    }

    /// Index of VM `name`.
    pub fn vm_id(&self, name: &str) -> Option<usize> {
        self.vm_index.get(name).copied()
    }

    /// Index of host `id`.
    pub fn host_id(&self, id: &str) -> Option<usize> {
        self.host_index.get(id).copied()
    }

    /// VM name (empty for an index out of range).
    pub fn vm_name(&self, v: usize) -> &'a str {
        self.vm_names.get(v).copied().unwrap_or("")
    }

    /// Host id (empty for an index out of range).
    pub fn host_name(&self, h: usize) -> &'a str {
        self.host_names.get(h).copied().unwrap_or("")
    }

    /// Traffic peers of VM `v`, sorted by peer index.
    pub fn peers(&self, v: usize) -> &[Peer] {
        match (self.adj_start.get(v), self.adj_start.get(v + 1)) {
            (Some(&a), Some(&b)) => self.adj.get(a..b).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Number of external endpoints.
    pub fn ext_count(&self) -> usize {
        self.ext_names.len()
    }

    /// External endpoint name (empty for an index out of range).
    pub fn ext_name(&self, e: usize) -> &'a str {
        self.ext_names.get(e).copied().unwrap_or("")
    }

    /// Traffic of VM `v` with external endpoints, sorted by external index.
    pub fn ext_peers(&self, v: usize) -> &[ExtPeer] {
        match (self.ext_adj_start.get(v), self.ext_adj_start.get(v + 1)) {
            (Some(&a), Some(&b)) => self.ext_adj.get(a..b).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// The hosts nearest to external `e` (the lowest level any host has to
    /// it): those of its rack, else of its pod, else of its cluster, at most
    /// [`MAX_NEAREST_HOSTS`], by index. Where a VM may move to get closer
    /// to it.
    pub fn ext_nearest_hosts(&self, e: usize) -> &[usize] {
        self.ext_near.get(e).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Communication level between host `h` and external endpoint `e`: 1
    /// when `e` is at `h`'s ToR, 2 in `h`'s pod (a ToR or aggregation
    /// switch of it), 3 in `h`'s cluster, 4 otherwise.
    pub fn ext_level(&self, h: usize, e: usize) -> usize {
        let rack = self.ext_rack.get(e).copied().flatten();
        let pod = self.ext_pod.get(e).copied().flatten();
        if rack.is_some() && rack == self.host_rack.get(h).copied() {
            1
        } else if pod.is_some() && pod == self.host_pod.get(h).copied() {
            2
        } else if self.ext_cluster.get(e).is_some()
            && self.ext_cluster.get(e) == self.host_cluster.get(h)
        {
            3
        } else {
            4
        }
    }

    /// Communication level between hosts `a` and `b`: 0 same host, 1 same
    /// rack, 2 same pod, 3 same cluster, 4 otherwise.
    pub fn level(&self, a: usize, b: usize) -> usize {
        if a == b {
            return 0;
        }
        let same = |v: &Vec<u32>| v.get(a).is_some() && v.get(a) == v.get(b);
        if same(&self.host_rack) {
            1
        } else if same(&self.host_pod) {
            2
        } else if same(&self.host_cluster) {
            3
        } else {
            4
        }
    }

    /// Latest sample of VM `v`.
    pub fn vm_sample(&self, v: usize) -> VmSample {
        self.vm_latest.get(v).cloned().unwrap_or_default()
    }

    /// The VMs of every host, by host index.
    pub fn vms_by_host(&self) -> Vec<Vec<usize>> {
        let mut host_vms: Vec<Vec<usize>> = vec![Vec::new(); self.host_count()];
        for v in 0..self.vm_count() {
            if let Some(l) = host_vms.get_mut(self.host_of(v)) {
                l.push(v);
            }
        }
        host_vms
    }

    /// Host of VM `v` in the snapshot.
    pub fn host_of(&self, v: usize) -> usize {
        self.vm_host.get(v).copied().unwrap_or(0)
    }
}

/// Compressed adjacency lists from `(owner, other, out, in)` edges: entries
/// of the same pair are merged, lists sorted by `other`. Returns the start
/// of each owner's list (`n + 1` entries) and the entries.
fn csr<T>(
    mut edges: Vec<(u32, u32, f64, f64)>,
    n: usize,
    make: impl Fn(usize, f64, f64) -> T,
) -> (Vec<usize>, Vec<T>) {
    edges.sort_unstable_by_key(|x| (x.0, x.1));
    let mut merged: Vec<(u32, u32, f64, f64)> = Vec::with_capacity(edges.len());
    for (a, b, out, inn) in edges {
        match merged.last_mut() {
            Some(last) if last.0 == a && last.1 == b => {
                last.2 += out;
                last.3 += inn;
            }
            _ => merged.push((a, b, out, inn)),
        }
    }
    let mut start = vec![0usize; n + 1];
    for &(o, _, _, _) in &merged {
        if let Some(c) = start.get_mut(o as usize + 1) {
            *c += 1;
        }
    }
    for i in 1..start.len() {
        let prev = start.get(i - 1).copied().unwrap_or(0);
        if let Some(c) = start.get_mut(i) {
            *c += prev;
        }
    }
    let list = merged
        .into_iter()
        .map(|(_, b, out, inn)| make(b as usize, out, inn))
        .collect();
    (start, list)
}

/// Sandpiper's volume `1 / ((1 − a)(1 − b)(1 − c))` of utilisations `a`,
/// `b`, `c`, each capped at `cap`.
pub fn volume(cpu: f64, mem: f64, net: f64, cap: f64) -> f64 {
    let f = |x: f64| 1.0 - x.clamp(0.0, cap);
    1.0 / (f(cpu) * f(mem) * f(net))
}
