//! The tournament: every policy on the same scenarios, side by side.
//!
//! `shoal-controller simulate --tournament [--scenario-dir DIR]
//! [--sizes 64,640] [--mixes comm,hot] [--seed S] [--rounds N]
//! [--warmup N] [--reference] [--json FILE]` runs every policy of
//! [`POLICY_NAMES`] on each scenario file of the directory (default
//! `examples/scenarios`, the encodings of the papers' situations) and on
//! data centers generated at each size and load mix with the seed, and
//! prints one Markdown table per scenario: hotspot host-seconds (ground
//! truth: any resource above its threshold), NIC-hot host-seconds,
//! SLA-violation VM-seconds, congested link-seconds (above 90 %, migration
//! streams included), communication cost after (and its reduction, and
//! its share of the reference optimum's reduction with `--reference`),
//! migrations, GB migrated, and planning time. Every situation has lasted
//! `warmup` intervals (default: the detector's window) when the policies
//! first look, so the table compares decisions, not how soon a detector
//! confirms. Everything but the times is deterministic.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::engine::{first_snapshot, simulate, SimConfig, Summary};
use super::generate::{generate_dc, GenerateOptions, Mix};
use super::reference;
use super::scenario::Scenario;
use super::SimError;
use crate::analyze::HotspotConfig;
use crate::plan::{PolicyOptions, POLICY_NAMES};

/// One scenario of the tournament and every policy's summary on it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Scenario name (file stem, or `dc-<hosts>-<mix>`).
    pub scenario: String,
    /// Hosts and VMs.
    pub hosts: usize,
    /// VMs.
    pub vms: usize,
    /// Rounds run.
    pub rounds: u32,
    /// Monitoring interval of the scenario, seconds.
    pub interval_s: f64,
    /// Per policy, in [`POLICY_NAMES`] order.
    pub results: Vec<Summary>,
    /// Per policy, the wall-clock seconds of its planning (all rounds).
    pub planning_s: Vec<f64>,
    /// Wall-clock seconds of the reference optimiser (with `reference`).
    pub reference_s: Option<f64>,
}

/// What the tournament runs.
#[derive(Debug, Clone)]
pub struct TournamentConfig {
    /// Scenario files (`*.json`) from this directory, sorted by name.
    pub scenario_dir: Option<PathBuf>,
    /// Generated data centers: numbers of hosts.
    pub sizes: Vec<usize>,
    /// Generated data centers: load mixes (each size with each mix).
    pub mixes: Vec<Mix>,
    /// Seed of the generator.
    pub seed: u64,
    /// Rounds (default: the scenario's, else 10).
    pub rounds: Option<u32>,
    /// Intervals observed before round 0 ([`SimConfig::warmup`]).
    pub warmup: u32,
    /// Also run the reference optimiser on every scenario.
    pub reference: bool,
    /// Detector configuration.
    pub hotspot: HotspotConfig,
    /// Policy options.
    pub options: PolicyOptions,
}

/// The generator's layout for `hosts`: racks of 16 (up to 64 hosts) or 20
/// hosts, about 4 to 8 pods.
fn layout(hosts: usize) -> Result<GenerateOptions, SimError> {
    let rack_size = if hosts <= 64 { 16 } else { 20 };
    if hosts == 0 || !hosts.is_multiple_of(rack_size) {
        return Err(SimError::Args(format!(
            "--sizes: {hosts} is not a multiple of the rack size {rack_size}"
        )));
    }
    let racks = hosts / rack_size;
    Ok(GenerateOptions {
        hosts,
        rack_size,
        vms_per_host: 16,
        max_vms_per_host: None,
        racks_per_pod: racks.div_ceil(8).max(1),
        seed: 0,
        mix: Mix::Comm,
    })
}

/// Loads the scenario files of `dir` (sorted by name).
fn load_dir(dir: &Path) -> Result<Vec<(String, Scenario)>, SimError> {
    let rd = std::fs::read_dir(dir).map_err(|e| SimError::Io(format!("{}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(&p)
            .map_err(|e| SimError::Io(format!("{}: {e}", p.display())))?;
        let scn =
            Scenario::load(&text).map_err(|e| SimError::Args(format!("{}: {e}", p.display())))?;
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((name, scn));
    }
    Ok(out)
}

/// Runs the tournament; `progress` is told each scenario as it starts.
pub fn run(cfg: &TournamentConfig, progress: &mut dyn FnMut(&str)) -> Result<Vec<Entry>, SimError> {
    let mut scenarios = match &cfg.scenario_dir {
        Some(d) => load_dir(d)?,
        None => Vec::new(),
    };
    for &n in &cfg.sizes {
        for &mix in &cfg.mixes {
            let mut o = layout(n)?;
            o.seed = cfg.seed;
            o.mix = mix;
            let s = generate_dc(&o)?;
            s.validate()?;
            scenarios.push((format!("dc-{n}-{}", mix.name()), s));
        }
    }
    let mut out = Vec::new();
    for (name, scn) in scenarios {
        progress(&name);
        let rounds = cfg.rounds.or(scn.rounds).unwrap_or(10);
        let mut results = Vec::new();
        let mut planning_s = Vec::new();
        for p in POLICY_NAMES {
            let sc = SimConfig {
                policy: p.to_string(),
                options: cfg.options.clone(),
                hotspot: cfg.hotspot.clone(),
                rounds,
                reference: false,
                seed: cfg.seed,
                warmup: cfg.warmup,
            };
            let r = simulate(&scn, &sc, &mut std::io::sink())?;
            planning_s.push(r.planning_s);
            results.push(r);
        }
        let reference_s = if cfg.reference {
            progress(&format!("{name}: reference optimiser"));
            let t0 = std::time::Instant::now();
            let rf = reference::optimize(
                &first_snapshot(&scn),
                cfg.hotspot.thresholds,
                &cfg.options.score.weights,
                cfg.seed,
            );
            let secs = t0.elapsed().as_secs_f64();
            for r in &mut results {
                let denom = r.cost_before - rf.cost;
                r.reference_cost = Some(rf.cost);
                r.reference_start = Some(format!("{} ({} passes)", rf.start, rf.passes));
                r.fraction_of_reference = Some(if denom > 0.0 {
                    (r.cost_before - r.cost_after) / denom
                } else {
                    0.0
                });
            }
            Some(secs)
        } else {
            None
        };
        out.push(Entry {
            scenario: name,
            hosts: scn.hosts.len(),
            vms: scn.vms.len(),
            rounds,
            interval_s: scn.interval_s,
            results,
            planning_s,
            reference_s,
        });
    }
    Ok(out)
}

/// The tables, one per scenario, in Markdown.
pub fn markdown(entries: &[Entry]) -> String {
    let mut s = String::new();
    for e in entries {
        let reference = match e.reference_s {
            Some(t) => format!(
                "; reference optimiser: cost {:.3e} in {:.1} s",
                e.results
                    .first()
                    .and_then(|r| r.reference_cost)
                    .unwrap_or(0.0),
                t
            ),
            None => String::new(),
        };
        let _ = writeln!(
            s,
            "\n**{}** ({} hosts, {} VMs; {} rounds of {} s{reference})\n\n| policy | hot host-s | NIC-hot host-s | SLA VM-s | congested link-s | cost after (reduction{}) | migrations | GB migrated | planning ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            e.scenario,
            e.hosts,
            e.vms,
            e.rounds,
            e.interval_s,
            if e.reference_s.is_some() { "; of reference" } else { "" }
        );
        for (r, t) in e.results.iter().zip(&e.planning_s) {
            let of_ref = r
                .fraction_of_reference
                .map_or(String::new(), |f| format!("; {:.1} %", 100.0 * f));
            let _ = writeln!(
                s,
                "| `{}` | {:.0} | {:.0} | {:.0} | {:.0} | {:.3e} ({:.1} %{of_ref}) | {} | {:.2} | {:.1} |",
                r.policy,
                r.overloaded_host_s,
                r.nic_overloaded_host_s,
                r.sla_violation_vm_s,
                r.congested_link_s,
                r.cost_after,
                100.0 * r.reduction,
                r.migrations,
                r.bytes_moved / 1e9,
                t * 1e3
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every policy runs on every scenario; the generated data center is
    /// the same for the same seed, and a size that does not divide into
    /// racks is refused.
    #[test]
    fn every_policy_on_every_scenario() {
        let cfg = TournamentConfig {
            scenario_dir: None,
            sizes: vec![64],
            mixes: vec![Mix::Comm],
            seed: 3,
            rounds: Some(3),
            warmup: 0,
            reference: false,
            hotspot: HotspotConfig::default(),
            options: PolicyOptions::default(),
        };
        let a = run(&cfg, &mut |_| {}).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].scenario, "dc-64-comm");
        let names: Vec<&str> = a[0].results.iter().map(|r| r.policy.as_str()).collect();
        assert_eq!(names, POLICY_NAMES.to_vec());
        let b = run(&cfg, &mut |_| {}).unwrap();
        for (x, y) in a[0].results.iter().zip(&b[0].results) {
            assert_eq!(x.cost_after, y.cost_after, "{}", x.policy);
            assert_eq!(x.migrations, y.migrations, "{}", x.policy);
        }
        let md = markdown(&a);
        assert!(
            md.contains("**dc-64-comm** (64 hosts, 1024 VMs; 3 rounds of 10 s)"),
            "{md}"
        );
        assert_eq!(md.matches("| `").count(), POLICY_NAMES.len());
        let bad = TournamentConfig {
            sizes: vec![70],
            ..cfg
        };
        assert!(run(&bad, &mut |_| {}).is_err());
    }

    /// Each paper's situation (its encoding in `examples/scenarios`, the
    /// situation having lasted the detector's window): `shoal` does no
    /// worse than that paper's own policy on the paper's headline metric
    /// (Sandpiper, IDC-aware, VIOLIN: overloaded host-seconds; S-CORE: the
    /// communication cost left; Sova: NIC-overloaded host-seconds),
    /// migrates no more bytes, and congests no link that policy leaves
    /// clear.
    #[test]
    fn shoal_holds_its_own_in_each_papers_situation() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scenarios");
        let cfg = TournamentConfig {
            scenario_dir: Some(dir),
            sizes: vec![],
            mixes: vec![],
            seed: 1,
            rounds: None,
            warmup: HotspotConfig::default().n as u32,
            reference: false,
            hotspot: HotspotConfig::default(),
            options: PolicyOptions::default(),
        };
        let entries = run(&cfg, &mut |_| {}).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.scenario.as_str()).collect();
        assert_eq!(names, ["idc", "sandpiper", "score", "sova", "violin"]);
        for e in &entries {
            let by = |p: &str| e.results.iter().find(|r| r.policy == p).unwrap();
            let (paper, shoal) = (by(&e.scenario), by("shoal"));
            let metric = |r: &Summary| match e.scenario.as_str() {
                "score" => r.cost_after,
                "sova" => r.nic_overloaded_host_s,
                _ => r.overloaded_host_s,
            };
            let md = markdown(std::slice::from_ref(e));
            assert!(metric(shoal) <= metric(paper) * (1.0 + 1e-9), "{md}");
            assert!(
                shoal.bytes_moved <= paper.bytes_moved * (1.0 + 1e-9),
                "{md}"
            );
            assert!(
                paper.congested_link_s > 0.0 || shoal.congested_link_s == 0.0,
                "{md}"
            );
        }
    }
}
