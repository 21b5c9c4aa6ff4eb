//! Maintenance mode: draining a host.
//!
//! A host in maintenance ([`crate::knowledge::control::Control`]) receives
//! no VM (every snapshot excludes it, and the orchestrator refuses it as a
//! destination), and every VM on it leaves through the orchestrator:
//! reserved and deadline-aware like any migration, admitted within the
//! concurrency limits (the orchestrator queues them). Each destination
//! follows the active policy's kind of placement under the placement rules:
//! among the hosts where the VM breaks no rule and the orchestrator accepts
//! it (room, path, deadline), the one of least communication cost after the
//! move for the traffic-aware policies (S-CORE, Shoal, IDC, VIOLIN), the
//! least loaded (CPU) for the others (Sandpiper, Sova, none). [`step`] runs at every round of the leader and right
//! after the operator starts maintenance: it submits each VM still on the
//! host that has no migration under way, and records why one cannot go
//! (pinned by a rule, automation level `manual`, no host with room within
//! the rules) — a VM is never forced. A VM whose migration failed is tried
//! again, at most [`MAX_ATTEMPTS`] times.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use tracing::{info, warn};

use crate::execute::handles::FabricView;
use crate::execute::orchestrator::{MigState, MigrationRequest, Orchestrator};
use crate::knowledge::control::Level;
use crate::knowledge::rules::Rule;
use crate::knowledge::snapshot::Snapshot;
use crate::mapek::live::LiveState;
use crate::plan::constraints::violations;
use crate::plan::rules::ViolationKey;

/// Migrations tried per VM before it is reported `failed`.
pub const MAX_ATTEMPTS: usize = 3;

pub use crate::mapek::live::{MaintenanceView, VmDrain};

/// Policies whose placement minimises communication cost.
const TRAFFIC_AWARE: &[&str] = &["score", "shoal", "idc", "violin"];

/// Destinations looked at per VM at most (each is checked against every
/// rule and estimated on a copy of the snapshot).
pub const MAX_CANDIDATES: usize = 16;

/// The placement the drain plans on: the fabric's snapshot with the
/// migrations under way at their destinations.
fn planning_snapshot(fabric: &dyn FabricView, orch: &Orchestrator) -> Option<Snapshot> {
    let mut snap = fabric.snapshot(0, 2, Vec::new(), Vec::new(), BTreeMap::new())?;
    for m in orch.active() {
        if let Some(v) = snap.vms.get_mut(&m.vm) {
            v.host = m.to.clone();
        }
    }
    Some(snap)
}

/// Where `vm` should go from `from`: among the hosts not in maintenance
/// where it breaks no placement rule that holds now and the orchestrator
/// would accept it (room, path, deadline), the least loaded ones first (at
/// most [`MAX_CANDIDATES`]), the one of least communication cost after the
/// move when `traffic_aware`, else the least loaded. None: no such host.
fn choose(
    orch: &Orchestrator,
    snap: Option<&Snapshot>,
    vm: &str,
    from: &str,
    traffic_aware: bool,
    in_maintenance: &dyn Fn(&str) -> bool,
) -> Option<String> {
    let snap = snap?;
    snap.vms.get(vm)?;
    let broken = |sn: &Snapshot| -> BTreeSet<ViolationKey> {
        violations(sn).into_iter().map(|v| v.key()).collect()
    };
    let before = broken(snap);
    let hosts: Vec<(&String, f64)> = crate::plan::repair::hosts_by_cpu(snap)
        .into_iter()
        .filter(|(id, _)| id.as_str() != from && !in_maintenance(id))
        .collect();
    let mut best: Option<(f64, f64, String)> = None;
    for (id, util) in hosts.into_iter().take(MAX_CANDIDATES) {
        let mut moved = snap.clone();
        if let Some(v) = moved.vms.get_mut(vm) {
            v.host = id.clone();
        }
        if !broken(&moved).is_subset(&before) {
            continue;
        }
        let req = MigrationRequest {
            vm: vm.to_string(),
            destination: id.clone(),
            deadline_s: None,
            reserve: None,
        };
        let Ok(e) = orch.estimate(&req, traffic_aware.then_some(snap)) else {
            continue;
        };
        let cost = if traffic_aware {
            e.cost_after.unwrap_or(0.0)
        } else {
            0.0
        };
        if best
            .as_ref()
            .is_none_or(|(c, u, _)| (cost, util) < (*c, *u))
        {
            best = Some((cost, util, id.clone()));
        }
    }
    best.map(|(_, _, id)| id)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why `vm` cannot leave `host` whatever the room elsewhere: its
/// automation level is `manual`, or a pin rule of the operator keeps it on
/// hosts that are all in maintenance.
fn why_unmovable(
    fabric: &dyn FabricView,
    rules: &[Rule],
    vm: &str,
    in_maintenance: &dyn Fn(&str) -> bool,
) -> Option<String> {
    if fabric.control().automation.level_of(vm) == Level::Manual {
        return Some(format!(
            "{vm} is at automation level manual: Shoal never moves it (move it yourself, or change its level)"
        ));
    }
    for r in rules {
        if let Rule::Pin { name, vms, hosts } = r {
            if vms.iter().any(|v| v == vm) && hosts.iter().all(|h| in_maintenance(h)) {
                return Some(format!(
                    "{vm} is pinned by rule {name:?} to {} (all in maintenance)",
                    hosts.join(", ")
                ));
            }
        }
    }
    None
}

/// One drain step for every host in maintenance: submits the VMs that
/// should leave, updates the progress kept in `live`, and forgets hosts no
/// longer in maintenance. Returns the views.
pub fn step(
    fabric: &dyn FabricView,
    orch: &Orchestrator,
    live: &Mutex<LiveState>,
) -> Vec<MaintenanceView> {
    let control = fabric.control();
    let rules = fabric.rules();
    let rules = &rules.rules;
    let in_maintenance = |h: &str| control.maintenance.contains_key(h);
    let placed: BTreeMap<String, String> = match fabric.hosts() {
        Ok(h) => h
            .vms()
            .iter()
            .map(|(n, p)| (n.clone(), p.host.clone()))
            .collect(),
        Err(e) => {
            warn!(error = %e, "maintenance step skipped");
            return Vec::new();
        }
    };
    let all = orch.list();
    let mut views = Vec::new();
    // Traffic-aware policies place a VM where it costs the least
    // communication; the others on the least loaded host.
    let traffic_aware = TRAFFIC_AWARE.contains(&lock(live).settings.name.as_str());
    let mut planning: Option<Option<Snapshot>> = None;
    let bus = fabric.events();
    for (host, entry) in &control.maintenance {
        let previous: BTreeMap<String, VmDrain> = lock(live)
            .drains
            .get(host)
            .map(|v| v.vms.iter().map(|d| (d.vm.clone(), d.clone())).collect())
            .unwrap_or_default();
        let mut names: Vec<String> = previous.keys().cloned().collect();
        for (vm, h) in &placed {
            if h == host && !previous.contains_key(vm) {
                names.push(vm.clone());
            }
        }
        names.sort();
        let mut vms = Vec::with_capacity(names.len());
        let mut remaining = 0usize;
        for vm in names {
            // This VM's migrations off the host since maintenance started,
            // oldest first.
            let mut mine: Vec<_> = all
                .iter()
                .filter(|m| {
                    m.vm == vm && &m.from == host && m.created_unix_ms >= entry.since_unix_ms
                })
                .collect();
            mine.sort_by_key(|m| (m.created_unix_ms, m.seq));
            let last = mine.last().copied();
            let on_host = placed.get(&vm) == Some(host);
            let d = match last {
                Some(m) if !m.state.is_final() => VmDrain {
                    vm: vm.clone(),
                    state: if m.state == MigState::Queued {
                        "queued".into()
                    } else {
                        "migrating".into()
                    },
                    migration: Some(m.id.clone()),
                    to: Some(m.to.clone()),
                    reason: None,
                },
                // Done: the registry may still place it here until the
                // destination registers it.
                Some(m) if m.state == MigState::Done => VmDrain {
                    vm: vm.clone(),
                    state: "done".into(),
                    migration: Some(m.id.clone()),
                    to: Some(m.to.clone()),
                    reason: None,
                },
                _ if !on_host => VmDrain {
                    vm: vm.clone(),
                    state: "done".into(),
                    migration: last.map(|m| m.id.clone()),
                    to: placed.get(&vm).cloned(),
                    reason: Some("left the host by other means".into()),
                },
                _ => {
                    let failed = mine.iter().filter(|m| m.state == MigState::Failed).count();
                    if failed >= MAX_ATTEMPTS {
                        VmDrain {
                            vm: vm.clone(),
                            state: "failed".into(),
                            migration: last.map(|m| m.id.clone()),
                            to: None,
                            reason: last.and_then(|m| m.error.clone()),
                        }
                    } else if let Some(why) = why_unmovable(fabric, rules, &vm, &in_maintenance) {
                        VmDrain {
                            vm: vm.clone(),
                            state: "unmovable".into(),
                            migration: None,
                            to: None,
                            reason: Some(why),
                        }
                    } else {
                        // The destination by the active policy's kind of
                        // placement; none found: the orchestrator's `auto`
                        // (which says why nothing fits).
                        let snap = planning.get_or_insert_with(|| planning_snapshot(fabric, orch));
                        let destination = choose(
                            orch,
                            snap.as_ref(),
                            &vm,
                            host,
                            traffic_aware,
                            &in_maintenance,
                        )
                        .unwrap_or_else(|| "auto".into());
                        let req = MigrationRequest {
                            vm: vm.clone(),
                            destination,
                            deadline_s: None,
                            reserve: None,
                        };
                        match orch.submit(
                            req,
                            format!("maintenance of {host} (by {})", entry.by),
                            None,
                        ) {
                            Ok(m) => {
                                info!(%host, vm = %vm, to = %m.to, id = %m.id, "maintenance: VM leaves");
                                // The next VMs are placed knowing this one's
                                // destination.
                                if let Some(Some(sn)) = planning.as_mut() {
                                    if let Some(v) = sn.vms.get_mut(&vm) {
                                        v.host = m.to.clone();
                                    }
                                }
                                VmDrain {
                                    vm: vm.clone(),
                                    state: "queued".into(),
                                    migration: Some(m.id.clone()),
                                    to: Some(m.to.clone()),
                                    reason: None,
                                }
                            }
                            Err(e) => VmDrain {
                                vm: vm.clone(),
                                state: "unmovable".into(),
                                migration: last.map(|m| m.id.clone()),
                                to: None,
                                reason: Some(e.to_string()),
                            },
                        }
                    }
                }
            };
            if on_host && d.state != "done" {
                remaining += 1;
            }
            if previous.get(&vm).map(|p| (&p.state, &p.reason)) != Some((&d.state, &d.reason)) {
                if d.state == "unmovable" || d.state == "failed" {
                    warn!(%host, vm = %vm, state = %d.state, reason = ?d.reason, "maintenance: VM cannot leave");
                }
                if let Some(bus) = &bus {
                    bus.publish(
                        "maintenance_vm",
                        serde_json::json!({
                            "host": host, "vm": d.vm, "state": d.state,
                            "migration": d.migration, "to": d.to, "reason": d.reason,
                        }),
                    );
                }
            }
            vms.push(d);
        }
        let view = MaintenanceView {
            host: host.clone(),
            since_unix_ms: entry.since_unix_ms,
            by: entry.by.clone(),
            state: if remaining == 0 {
                "drained"
            } else {
                "draining"
            },
            vms,
        };
        let was = lock(live).drains.get(host).map(|v| v.state);
        if was != Some(view.state) && view.state == "drained" {
            info!(%host, "maintenance: host drained");
            if let Some(bus) = &bus {
                bus.publish("maintenance_drained", serde_json::json!({"host": host}));
            }
        }
        lock(live).drains.insert(host.clone(), view.clone());
        views.push(view);
    }
    lock(live)
        .drains
        .retain(|h, _| control.maintenance.contains_key(h));
    views
}
