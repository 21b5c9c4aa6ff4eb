//! `GET /api/v1/dashboard?top=N`: one bounded snapshot of everything the
//! web dashboard draws, taken at one moment.
//!
//! Its size does not grow with the number of VMs: switches and links are
//! listed whole (a fabric has hundreds, not tens of thousands), but hosts,
//! VM pairs, migrations, decisions and VF assignments come as totals plus
//! the `top` most relevant (default 20, at most 200): hot hosts and the
//! busiest first, the heaviest pairs, the active and latest migrations.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use ofp::MacAddr;
use serde::{Deserialize, Serialize};

use super::{matrix_view, ApiError, ApiState, TrafficClass};
use crate::execute::orchestrator::Migration;
use crate::knowledge::live::{levels, port_capacity_bps};
use crate::mapek::live::DecisionView;
use crate::monitor::dpid::dpid_str;

/// Default of `top`.
pub const DEFAULT_TOP: usize = 20;
/// Largest `top`.
pub const MAX_TOP: usize = 200;

/// Query of `/api/v1/dashboard`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardQuery {
    /// How many hosts, pairs, migrations, decisions (default 20, 1..=200).
    pub top: Option<usize>,
}

/// The snapshot.
#[derive(Debug, Serialize)]
pub struct DashboardView {
    /// When it was taken, Unix ms.
    pub at_unix_ms: i64,
    /// The `top` it was taken with.
    pub top: usize,
    /// The active policy.
    pub policy: String,
    /// Whether the policy only records its decisions.
    pub dry_run: bool,
    /// Loop rounds so far.
    pub round: u64,
    /// Every connected switch.
    pub switches: Vec<DashSwitch>,
    /// Every link, once per pair of ports, with its load.
    pub links: Vec<DashLink>,
    /// Hosts: totals and the `top` hot or busiest.
    pub hosts: DashHosts,
    /// The traffic matrix's heaviest pairs.
    pub matrix: DashMatrix,
    /// Migrations: counts by state, the active ones and the latest.
    pub migrations: DashMigrations,
    /// The latest decisions, newest last.
    pub decisions: Vec<DecisionView>,
    /// SR-IOV VFs.
    pub vfs: DashVfs,
}

/// A switch.
#[derive(Debug, Serialize)]
pub struct DashSwitch {
    /// Datapath id.
    pub dpid: String,
    /// The hypervisor whose bridge it is.
    pub hypervisor: Option<String>,
    /// Hops from the nearest hypervisor bridge (0: a bridge; none when
    /// no bridge is reachable).
    pub level: Option<usize>,
    /// Ports.
    pub ports: usize,
}

/// A link between two switch ports (both directions together).
#[derive(Debug, Serialize)]
pub struct DashLink {
    /// One end's datapath id (the smaller).
    pub a: String,
    /// Its port.
    pub a_port: u32,
    /// The other end.
    pub b: String,
    /// Its port.
    pub b_port: u32,
    /// The busier direction's rate, bytes/s (transmitted at either end).
    pub bytes_per_s: f64,
    /// Capacity, bit/s (`[topology] link_capacity_bps`, else the ports'
    /// speed; 1 Gbit/s when unknown).
    pub capacity_bps: f64,
    /// `bytes_per_s × 8 / capacity_bps`.
    pub utilisation: f64,
    /// Bandwidth reserved for migrations on its ports, bytes/s.
    pub reserved_bytes_per_s: f64,
}

/// Hosts.
#[derive(Debug, Serialize)]
pub struct DashHosts {
    /// Hosts registered.
    pub total: usize,
    /// Hosts hot now.
    pub hot: usize,
    /// VMs registered.
    pub vms: usize,
    /// The `top` hosts: hot first, then by CPU.
    pub shown: Vec<DashHost>,
}

/// A host.
#[derive(Debug, Serialize)]
pub struct DashHost {
    /// Id.
    pub id: String,
    /// Its bridge's datapath id.
    pub dpid: Option<String>,
    /// CPU utilisation, 0..1.
    pub cpu: Option<f64>,
    /// Memory used, 0..1.
    pub mem: Option<f64>,
    /// NIC, bytes/s (both directions).
    pub net_bytes_per_s: Option<f64>,
    /// NIC capacity, bit/s.
    pub nic_bps: u64,
    /// Swap-out, pages/s.
    pub swap_out_pages_per_s: Option<f64>,
    /// VMs on it.
    pub vms: usize,
    /// Its first VMs' names (at most 8).
    pub vm_names: Vec<String>,
    /// Hot resources (`cpu`, `mem`, `net`).
    pub hot: Vec<String>,
    /// VFs, and VMs holding one.
    pub vf_count: u32,
    /// VMs with a VF attached.
    pub vf_attached: Vec<String>,
}

/// The heaviest pairs of the traffic matrix.
#[derive(Debug, Serialize)]
pub struct DashMatrix {
    /// Averaging window, s.
    pub window_s: f64,
    /// Pairs with traffic.
    pub pairs: usize,
    /// λ summed over IDC pairs, bytes/s.
    pub idc_bytes_per_s: f64,
    /// λ summed over NIC pairs, bytes/s.
    pub nic_bytes_per_s: f64,
    /// The VMs of the shown cells (rows and columns), by name or MAC.
    pub vms: Vec<String>,
    /// The `top` heaviest pairs, heaviest first.
    pub cells: Vec<DashCell>,
}

/// One pair.
#[derive(Debug, Serialize)]
pub struct DashCell {
    /// Source VM (name, or MAC when no host daemon names it).
    pub src: String,
    /// Destination VM.
    pub dst: String,
    /// λ, bytes/s.
    pub bytes_per_s: f64,
    /// IDC or NIC.
    pub class: TrafficClass,
}

/// Migrations.
#[derive(Debug, Serialize)]
pub struct DashMigrations {
    /// How many in each state.
    pub by_state: BTreeMap<String, usize>,
    /// The active ones, then the latest ended, newest first (`top` in all).
    pub shown: Vec<Migration>,
}

/// VFs.
#[derive(Debug, Serialize)]
pub struct DashVfs {
    /// VFs of all hosts.
    pub total: u64,
    /// VFs attached.
    pub attached: usize,
    /// The latest VF moves: (round, host, change).
    pub recent: Vec<(u64, String, String)>,
}

/// `GET /api/v1/dashboard`.
pub async fn dashboard(
    State(s): State<Arc<ApiState>>,
    q: Result<Query<DashboardQuery>, QueryRejection>,
) -> Result<Json<DashboardView>, ApiError> {
    let Query(q) = q?;
    let top = q.top.unwrap_or(DEFAULT_TOP);
    if !(1..=MAX_TOP).contains(&top) {
        return Err(ApiError::BadRequest(format!(
            "top must be in 1..={MAX_TOP}"
        )));
    }
    snapshot(&s, top).map(Json)
}

fn poisoned<E: std::fmt::Display>(e: E) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// The snapshot with `top` of each list.
pub fn snapshot(s: &ApiState, top: usize) -> Result<DashboardView, ApiError> {
    let at_unix_ms = crate::knowledge::clock::now_unix_ms();
    let matrix = matrix_view(s, None, 0.0)?;
    let port_rates = s.knowledge.monitor_lock()?.port_rates();
    let migrations = s.orchestrator.list();

    // Loop state: copied out, the lock held briefly.
    let (policy, dry_run, round, hot, decisions, vf_recent) = {
        let l = s.live.lock().map_err(poisoned)?;
        let hot: BTreeMap<String, Vec<String>> = l
            .hotspots
            .as_ref()
            .map(|r| {
                r.hot
                    .iter()
                    .map(|(h, e)| {
                        let res: BTreeSet<String> = e
                            .evidence
                            .iter()
                            .map(|ev| ev.resource.as_str().to_string())
                            .collect();
                        (h.clone(), res.into_iter().collect())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let skip = l.decisions.len().saturating_sub(top);
        let decisions: Vec<DecisionView> = l.decisions.iter().skip(skip).cloned().collect();
        let mut vf_recent: Vec<(u64, String, String)> = l
            .vf_changes
            .iter()
            .flat_map(|(h, q)| {
                q.iter()
                    .map(move |(r, vm, c)| (*r, h.clone(), format!("{vm} {c}")))
            })
            .collect();
        vf_recent.sort_by_key(|v| std::cmp::Reverse(v.0));
        vf_recent.truncate(top);
        (
            l.settings.name.clone(),
            l.settings.dry_run,
            l.round,
            hot,
            decisions,
            vf_recent,
        )
    };

    // Hosts (lock order: hosts before topo).
    let hv = s.knowledge.hypervisor_map();
    let (hosts, vms_total, mac_names, vf_total, vf_attached) = {
        let reg = s.knowledge.hosts_read()?;
        let mut mac_names: HashMap<String, String> = HashMap::new();
        let mut hosts = Vec::with_capacity(reg.hosts().len());
        let (mut vf_total, mut vf_attached) = (0u64, 0usize);
        for (id, e) in reg.hosts() {
            let r = &e.registration;
            for v in &r.vms {
                mac_names.insert(v.mac.to_ascii_lowercase(), v.name.clone());
            }
            let latest = e.latest();
            let m = latest.map(|rep| &rep.host);
            let attached: Vec<String> = latest
                .map(|rep| {
                    rep.vms
                        .iter()
                        .filter(|v| v.vf_attached)
                        .map(|v| v.name.clone())
                        .collect()
                })
                .unwrap_or_default();
            vf_total += u64::from(r.vf_count);
            vf_attached += attached.len();
            hosts.push(DashHost {
                id: id.clone(),
                dpid: r.bridge.as_ref().map(|b| dpid_str(b.datapath_id)),
                cpu: m.map(|m| m.cpu_util),
                mem: m.and_then(|m| {
                    (m.mem_total_mb > 0).then(|| m.mem_used_mb as f64 / m.mem_total_mb as f64)
                }),
                net_bytes_per_s: m.map(|m| m.nic_tx_bytes_per_s + m.nic_rx_bytes_per_s),
                nic_bps: r.nic_bps,
                swap_out_pages_per_s: m.map(|m| m.swap_out_pages_per_s),
                vms: r.vms.len(),
                vm_names: r.vms.iter().take(8).map(|v| v.name.clone()).collect(),
                hot: hot.get(id).cloned().unwrap_or_default(),
                vf_count: r.vf_count,
                vf_attached: attached,
            });
        }
        (hosts, reg.vms().len(), mac_names, vf_total, vf_attached)
    };
    let total_hosts = hosts.len();
    let hot_hosts = hosts.iter().filter(|h| !h.hot.is_empty()).count();
    let mut hosts = hosts;
    hosts.sort_by(|a, b| {
        b.hot
            .len()
            .cmp(&a.hot.len())
            .then(b.cpu.unwrap_or(0.0).total_cmp(&a.cpu.unwrap_or(0.0)))
            .then(a.id.cmp(&b.id))
    });
    hosts.truncate(top);

    // Reserved bandwidth per (switch, out port) from the active migrations.
    let mut reserved: HashMap<(String, u32), f64> = HashMap::new();
    for m in migrations.iter().filter(|m| !m.state.is_final()) {
        if m.reservations.is_empty() {
            continue;
        }
        for h in &m.hops {
            if let Some(p) = h.out_port {
                *reserved.entry((h.dpid.clone(), p)).or_default() += m.bandwidth_bytes_per_s;
            }
        }
    }

    // Topology.
    let (switches, links) = {
        let topo = s.knowledge.topo_read()?;
        let bridges: BTreeSet<u64> = hv.keys().copied().collect();
        let lv = levels(&topo, &bridges);
        let switches: Vec<DashSwitch> = topo
            .switches()
            .values()
            .map(|sw| DashSwitch {
                dpid: dpid_str(sw.dpid),
                hypervisor: hv.get(&sw.dpid).cloned(),
                level: lv.get(&sw.dpid).copied(),
                ports: sw.ports.len(),
            })
            .collect();
        let tx: HashMap<(u64, u32), f64> = port_rates
            .iter()
            .map(|r| ((r.dpid, r.port), r.tx_bytes_per_s.unwrap_or(0.0)))
            .collect();
        let mut seen = BTreeSet::new();
        let mut links = Vec::new();
        for l in topo.links() {
            let (a, b) = if (l.src.dpid, l.src.port) <= (l.dst.dpid, l.dst.port) {
                (l.src, l.dst)
            } else {
                (l.dst, l.src)
            };
            if !seen.insert((a.dpid, a.port, b.dpid, b.port)) {
                continue;
            }
            let rate = tx
                .get(&(a.dpid, a.port))
                .copied()
                .unwrap_or(0.0)
                .max(tx.get(&(b.dpid, b.port)).copied().unwrap_or(0.0));
            let over = s.settings.link_capacity_bps;
            let cap = port_capacity_bps(&topo, a.dpid, a.port, over)
                .min(port_capacity_bps(&topo, b.dpid, b.port, over));
            let (ad, bd) = (dpid_str(a.dpid), dpid_str(b.dpid));
            let res = reserved.get(&(ad.clone(), a.port)).copied().unwrap_or(0.0)
                + reserved.get(&(bd.clone(), b.port)).copied().unwrap_or(0.0);
            links.push(DashLink {
                a: ad,
                a_port: a.port,
                b: bd,
                b_port: b.port,
                bytes_per_s: rate,
                capacity_bps: cap,
                utilisation: if cap > 0.0 { rate * 8.0 / cap } else { 0.0 },
                reserved_bytes_per_s: res,
            });
        }
        (switches, links)
    };

    // The matrix's heaviest pairs.
    let name = |mac: &MacAddr| {
        let m = mac.to_string().to_ascii_lowercase();
        mac_names.get(&m).cloned().unwrap_or(m)
    };
    let mut idc = 0.0;
    let mut nic = 0.0;
    for p in &matrix.pairs {
        match p.class {
            TrafficClass::Idc => idc += p.bytes_per_s,
            TrafficClass::Nic => nic += p.bytes_per_s,
        }
    }
    let mut pairs: Vec<&super::PairView> = matrix
        .pairs
        .iter()
        .filter(|p| p.bytes_per_s > 0.0)
        .collect();
    let n_pairs = pairs.len();
    pairs.sort_by(|a, b| b.bytes_per_s.total_cmp(&a.bytes_per_s));
    pairs.truncate(top);
    let cells: Vec<DashCell> = pairs
        .iter()
        .map(|p| DashCell {
            src: name(&p.src),
            dst: name(&p.dst),
            bytes_per_s: p.bytes_per_s,
            class: p.class,
        })
        .collect();
    let mut vms: Vec<String> = Vec::new();
    for c in &cells {
        for v in [&c.src, &c.dst] {
            if !vms.contains(v) {
                vms.push(v.clone());
            }
        }
    }

    // Migrations: the active ones, then the latest ended.
    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
    for m in &migrations {
        *by_state.entry(m.state.as_str().to_string()).or_default() += 1;
    }
    let mut shown: Vec<Migration> = migrations
        .iter()
        .rev()
        .filter(|m| !m.state.is_final())
        .take(top)
        .cloned()
        .collect();
    let room = top - shown.len();
    shown.extend(
        migrations
            .iter()
            .rev()
            .filter(|m| m.state.is_final())
            .take(room)
            .cloned(),
    );

    Ok(DashboardView {
        at_unix_ms,
        top,
        policy,
        dry_run,
        round,
        switches,
        links,
        hosts: DashHosts {
            total: total_hosts,
            hot: hot_hosts,
            vms: vms_total,
            shown: hosts,
        },
        matrix: DashMatrix {
            window_s: matrix.window_s,
            pairs: n_pairs,
            idc_bytes_per_s: idc,
            nic_bytes_per_s: nic,
            vms,
            cells,
        },
        migrations: DashMigrations { by_state, shown },
        decisions,
        vfs: DashVfs {
            total: vf_total,
            attached: vf_attached,
            recent: vf_recent,
        },
    })
}
