//! The tournament: every policy on the same scenarios, side by side.
//!
//! `shoal-controller simulate --tournament [--scenario-dir DIR]
//! [--sizes 64,640] [--seed S] [--rounds N]` runs every policy of
//! [`POLICY_NAMES`] on each scenario file of the directory (default
//! `examples/scenarios`, the encodings of the papers' situations) and on
//! data centers generated at each size with the seed, and prints one
//! Markdown table per scenario: hotspot host-seconds (ground truth: any
//! resource above its threshold), NIC-hot host-seconds, SLA-violation
//! VM-seconds, communication cost after (and its reduction), migrations,
//! GB migrated, and planning time. Everything but the planning time is
//! deterministic.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::engine::{simulate, SimConfig, Summary};
use super::generate::{generate_dc, GenerateOptions};
use super::scenario::Scenario;
use super::SimError;
use crate::analyze::HotspotConfig;
use crate::plan::{PolicyOptions, POLICY_NAMES};

/// One scenario of the tournament and every policy's summary on it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Scenario name (file stem, or `dc-<hosts>`).
    pub scenario: String,
    /// Rounds run.
    pub rounds: u32,
    /// Monitoring interval of the scenario, seconds.
    pub interval_s: f64,
    /// Per policy, in [`POLICY_NAMES`] order.
    pub results: Vec<Summary>,
}

/// What the tournament runs.
#[derive(Debug, Clone)]
pub struct TournamentConfig {
    /// Scenario files (`*.json`) from this directory, sorted by name.
    pub scenario_dir: Option<PathBuf>,
    /// Generated data centers: numbers of hosts.
    pub sizes: Vec<usize>,
    /// Seed of the generator.
    pub seed: u64,
    /// Rounds (default: the scenario's, else 10).
    pub rounds: Option<u32>,
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
        let mut o = layout(n)?;
        o.seed = cfg.seed;
        let s = generate_dc(&o)?;
        s.validate()?;
        scenarios.push((format!("dc-{n}"), s));
    }
    let mut out = Vec::new();
    for (name, scn) in scenarios {
        progress(&name);
        let rounds = cfg.rounds.or(scn.rounds).unwrap_or(10);
        let mut results = Vec::new();
        for p in POLICY_NAMES {
            let sc = SimConfig {
                policy: p.to_string(),
                options: cfg.options.clone(),
                hotspot: cfg.hotspot.clone(),
                rounds,
                reference: false,
                seed: cfg.seed,
            };
            results.push(simulate(&scn, &sc, &mut std::io::sink())?);
        }
        out.push(Entry {
            scenario: name,
            rounds,
            interval_s: scn.interval_s,
            results,
        });
    }
    Ok(out)
}

/// The tables, one per scenario, in Markdown.
pub fn markdown(entries: &[Entry]) -> String {
    let mut s = String::new();
    for e in entries {
        let _ = writeln!(
            s,
            "\n**{}** ({} rounds of {} s)\n\n| policy | hot host-s | NIC-hot host-s | SLA VM-s | cost after (reduction) | migrations | GB migrated | planning ms |\n|---|---:|---:|---:|---:|---:|---:|---:|",
            e.scenario, e.rounds, e.interval_s
        );
        for r in &e.results {
            let _ = writeln!(
                s,
                "| `{}` | {:.0} | {:.0} | {:.0} | {:.3e} ({:.1} %) | {} | {:.2} | {:.1} |",
                r.policy,
                r.overloaded_host_s,
                r.nic_overloaded_host_s,
                r.sla_violation_vm_s,
                r.cost_after,
                100.0 * r.reduction,
                r.migrations,
                r.bytes_moved / 1e9,
                r.planning_s * 1e3
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
            seed: 3,
            rounds: Some(3),
            hotspot: HotspotConfig::default(),
            options: PolicyOptions::default(),
        };
        let a = run(&cfg, &mut |_| {}).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].scenario, "dc-64");
        let names: Vec<&str> = a[0].results.iter().map(|r| r.policy.as_str()).collect();
        assert_eq!(names, POLICY_NAMES.to_vec());
        let b = run(&cfg, &mut |_| {}).unwrap();
        for (x, y) in a[0].results.iter().zip(&b[0].results) {
            assert_eq!(x.cost_after, y.cost_after, "{}", x.policy);
            assert_eq!(x.migrations, y.migrations, "{}", x.policy);
        }
        let md = markdown(&a);
        assert!(md.contains("**dc-64** (3 rounds of 10 s)"), "{md}");
        assert_eq!(md.matches("| `").count(), POLICY_NAMES.len());
        let bad = TournamentConfig {
            sizes: vec![70],
            ..cfg
        };
        assert!(run(&bad, &mut |_| {}).is_err());
    }
}
