//! An indexed, read-only view of a [`Snapshot`] for fast planning.
//!
//! VMs and hosts get dense indices in name order; traffic becomes an
//! adjacency list per VM (both directions merged, peers sorted by index);
//! host locations become small integers so that the level of a pair is a
//! few integer comparisons. Building a view is `O(V + H + E log E)`.

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
    /// VM traffic to outside the matrix (gateway, external), bytes/s sent.
    pub ext_tx: Vec<f64>,
    /// VM traffic from outside the matrix, bytes/s received.
    pub ext_rx: Vec<f64>,
    vm_index: HashMap<&'a str, usize>,
    host_index: HashMap<&'a str, usize>,
    adj_start: Vec<usize>,
    adj: Vec<Peer>,
}

fn intern<'a>(map: &mut HashMap<&'a str, u32>, s: &'a str) -> u32 {
    let n = map.len() as u32;
    *map.entry(s).or_insert(n)
}

impl<'a> View<'a> {
    /// Builds the view. VMs whose host is unknown are left out (with their
    /// traffic); so are traffic entries with unknown VMs, self-pairs and
    /// rates that are not finite and positive.
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

        // (a, b, out, in) for both orientations of every entry.
        let mut edges: Vec<(u32, u32, f64, f64)> = Vec::new();
        for (src, row) in &snap.traffic {
            let Some(&u) = vm_index.get(src.as_str()) else {
                continue;
            };
            for (dst, &rate) in row {
                let Some(&v) = vm_index.get(dst.as_str()) else {
                    continue;
                };
                if u == v || !(rate.is_finite() && rate > 0.0) {
                    continue;
                }
                edges.push((u as u32, v as u32, rate, 0.0));
                edges.push((v as u32, u as u32, 0.0, rate));
            }
        }
        edges.sort_unstable_by_key(|x| (x.0, x.1));
        let mut adj: Vec<Peer> = Vec::with_capacity(edges.len());
        let mut adj_start = vec![0usize; vm_names.len() + 1];
        let mut owner: Vec<u32> = Vec::with_capacity(edges.len());
        for (a, b, out, inn) in edges {
            match (owner.last(), adj.last_mut()) {
                (Some(&o), Some(last)) if o == a && last.vm == b as usize => {
                    last.out += out;
                    last.inn += inn;
                }
                _ => {
                    owner.push(a);
                    adj.push(Peer {
                        vm: b as usize,
                        out,
                        inn,
                    });
                }
            }
        }
        for &o in &owner {
            if let Some(c) = adj_start.get_mut(o as usize + 1) {
                *c += 1;
            }
        }
        for i in 1..adj_start.len() {
            let prev = adj_start.get(i - 1).copied().unwrap_or(0);
            if let Some(c) = adj_start.get_mut(i) {
                *c += prev;
            }
        }
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
            let s = view.vm_latest.get(v).cloned().unwrap_or_default();
            ext_tx.push((s.tx_bytes_per_s - out).max(0.0));
            ext_rx.push((s.rx_bytes_per_s - inn).max(0.0));
        }
        view.ext_tx = ext_tx;
        view.ext_rx = ext_rx;
        view
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

/// Sandpiper's volume `1 / ((1 − a)(1 − b)(1 − c))` of utilisations `a`,
/// `b`, `c`, each capped at `cap`.
pub fn volume(cpu: f64, mem: f64, net: f64, cap: f64) -> f64 {
    let f = |x: f64| 1.0 - x.clamp(0.0, cap);
    1.0 / (f(cpu) * f(mem) * f(net))
}
