//! Data-center simulator running the same Analyze/Plan code as the live loop.
//!
//! - **Owns**: scenarios, the simulated data center, the reference optimum.
//! - **Reads**: knowledge snapshot types, analyze and plan.
//! - **May not touch**: execute, the loop, the API (nothing live).
//!
//! `shoal-controller simulate --scenario FILE --policy NAME [options]
//! [--rounds N] [--seed S]` loads and validates a scenario
//! ([`scenario`], format in `docs/scenario.md`), runs rounds
//! ([`engine`]), prints one JSON object per decision and one summary line.
//! `--generate dc` builds S-CORE's setting instead ([`generate`]);
//! `--emit-scenario FILE` writes the generated scenario; `--reference`
//! adds the reference optimum ([`reference`]) to the summary.
//! `--tournament` runs every policy on the scenarios of `--scenario-dir`
//! and on generated data centers of `--sizes` ([`tournament`]).
//! `--from-live URL` simulates the live data center a controller exports
//! (`GET /api/v1/scenario`, built by [`export`]); the binary fetches it
//! and hands it to [`run_cli_with`] (this module does no network I/O).
//!
//! Everything is deterministic: the same scenario, options and seed give
//! byte-identical output.
#![warn(missing_docs)]

pub mod engine;
pub mod export;
pub mod generate;
pub mod links;
/// The physics (moved to [`crate::plan::physics`], shared with Execute).
pub use crate::plan::physics;
pub mod reference;
pub mod rng;
#[cfg(test)]
mod rules_prop;
pub mod scenario;
pub mod tournament;

pub use engine::{simulate, SimConfig, Summary};
pub use scenario::Scenario;

use crate::analyze::HotspotConfig;
use crate::plan::{PlanError, PolicyOptions};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;

/// Simulator errors. The messages name the offending field or option.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// Malformed JSON or a wrong type, at `path`.
    #[error("{path}: {msg}")]
    Json {
        /// JSON path (`vms[3].memory_mb`).
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// A semantic rule of the scenario is broken.
    #[error("{field}: {why}")]
    Scenario {
        /// Field path.
        field: String,
        /// What is wrong.
        why: String,
    },
    /// Bad command-line arguments or options.
    #[error("{0}")]
    Args(String),
    /// Policy construction failed.
    #[error(transparent)]
    Policy(#[from] PlanError),
    /// A policy produced a decision that cannot be applied (a bug).
    #[error("invalid decision {0}")]
    InvalidDecision(String),
    /// Reading or writing failed.
    #[error("i/o: {0}")]
    Io(String),
}

impl SimError {
    pub(crate) fn scenario(field: impl Into<String>, why: impl Into<String>) -> Self {
        SimError::Scenario {
            field: field.into(),
            why: why.into(),
        }
    }
}

/// Arguments of `shoal-controller simulate`.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct SimulateArgs {
    /// Scenario file (JSON, see docs/scenario.md).
    #[arg(long, value_name = "FILE", conflicts_with = "generate")]
    pub scenario: Option<PathBuf>,
    /// Simulate the live data center of the controller at URL
    /// (`http://HOST:PORT` or `https://HOST:PORT`): its
    /// `GET /api/v1/scenario` export, as a scenario file would be.
    #[arg(long, value_name = "URL", conflicts_with_all = ["scenario", "generate", "tournament"])]
    pub from_live: Option<String>,
    /// --from-live: file whose first line is an operator token (mode 0600).
    #[arg(long, value_name = "FILE", requires = "from_live")]
    pub token_file: Option<PathBuf>,
    /// --from-live: CA certificate that signed the controller's (https://).
    #[arg(long, value_name = "FILE", requires = "from_live")]
    pub ca_file: Option<PathBuf>,
    /// --from-live: also write the exported scenario to FILE (without
    /// --policy, only that).
    #[arg(long, value_name = "FILE", requires = "from_live")]
    pub save: Option<PathBuf>,
    /// Run every policy on the scenarios of --scenario-dir and on data
    /// centers generated at --sizes; print a Markdown table per scenario.
    #[arg(long, conflicts_with_all = ["scenario", "generate", "policy"])]
    pub tournament: bool,
    /// Tournament: directory of scenario files.
    #[arg(long, value_name = "DIR", default_value = "examples/scenarios")]
    pub scenario_dir: PathBuf,
    /// Tournament: sizes (hosts) of the generated data centers, e.g.
    /// `64,640,2560` (empty: none).
    #[arg(long, value_name = "N,N", default_value = "64,640")]
    pub sizes: String,
    /// Load mixes of the generated data centers (comm, hot, nic, mixed;
    /// one with --generate dc).
    #[arg(
        long,
        value_name = "MIX,MIX",
        value_delimiter = ',',
        default_value = "comm"
    )]
    pub mixes: Vec<String>,
    /// Tournament: also write every result as JSON to FILE (for plots).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Intervals the situation has lasted before round 0 (observed, not
    /// planned; default: 0, and the detector's window `n` in a tournament).
    #[arg(long, value_name = "N")]
    pub warmup: Option<u32>,
    /// Generate a scenario instead: `dc` (S-CORE's data center).
    #[arg(long, value_name = "KIND", value_parser = ["dc"])]
    pub generate: Option<String>,
    /// Policy: sandpiper, idc, score, sova, violin, shoal.
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// Rounds (default: the scenario's, else 10). One S-CORE round is one
    /// token iteration.
    #[arg(long, value_name = "N")]
    pub rounds: Option<u32>,
    /// Seed of the generator and of the reference optimiser.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Generator: hosts.
    #[arg(long, default_value_t = 2560)]
    pub hosts: usize,
    /// Generator: hosts per rack.
    #[arg(long, default_value_t = 20)]
    pub rack_size: usize,
    /// Generator: VMs per host in the initial placement.
    #[arg(long, default_value_t = 16)]
    pub vms_per_host: usize,
    /// Generator: VM slots per host (default 1.25 × --vms-per-host).
    #[arg(long)]
    pub max_vms_per_host: Option<usize>,
    /// Generator: racks per pod.
    #[arg(long, default_value_t = 16)]
    pub racks_per_pod: usize,
    /// Write the (generated or loaded) scenario to FILE.
    #[arg(long, value_name = "FILE")]
    pub emit_scenario: Option<PathBuf>,
    /// Write the JSON lines to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also compute the reference optimum (minutes at full scale).
    #[arg(long)]
    pub reference: bool,
    /// S-CORE token policy: round-robin, global, distributed, load-aware.
    #[arg(long, value_name = "POLICY")]
    pub token: Option<String>,
    /// S-CORE destination pick: first-fit (default), best.
    #[arg(long, value_name = "PICK")]
    pub destination: Option<String>,
    /// S-CORE migration cost threshold c_m.
    #[arg(long, value_name = "CM")]
    pub cm: Option<f64>,
    /// Any option as a dotted path, e.g. `score.token=global`,
    /// `hotspot.k=2`, `constraints.cooldown_intervals=5` (value: JSON,
    /// else a string). Repeatable.
    #[arg(long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// Options as a JSON file: `{"hotspot": {...}, "score": {...}, ...}`.
    #[arg(long, value_name = "FILE")]
    pub options_file: Option<PathBuf>,
}

/// Builds the detector configuration and policy options from the
/// arguments (options file, then `--option`, then the S-CORE shortcuts).
pub fn options_from_args(args: &SimulateArgs) -> Result<(HotspotConfig, PolicyOptions), SimError> {
    let mut hotspot = serde_json::to_value(HotspotConfig::default())
        .map_err(|e| SimError::Args(e.to_string()))?;
    let mut policy = serde_json::to_value(PolicyOptions::default())
        .map_err(|e| SimError::Args(e.to_string()))?;
    if let Some(path) = &args.options_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::Io(format!("{}: {e}", path.display())))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| SimError::Json {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        let Value::Object(map) = v else {
            return Err(SimError::Args(format!(
                "{}: must be a JSON object",
                path.display()
            )));
        };
        for (k, v) in map {
            if k == "hotspot" {
                hotspot = v;
            } else {
                set_path(&mut policy, &[k.as_str()], v)?;
            }
        }
    }
    let mut sets: Vec<(String, Value)> = Vec::new();
    for o in &args.options {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| SimError::Args(format!("--option {o}: expected KEY=VALUE")))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        sets.push((k.to_string(), value));
    }
    if let Some(t) = &args.token {
        sets.push(("score.token".into(), Value::String(t.clone())));
    }
    if let Some(d) = &args.destination {
        sets.push(("score.destination".into(), Value::String(d.clone())));
    }
    if let Some(cm) = args.cm {
        sets.push(("score.cm".into(), serde_json::json!(cm)));
    }
    for (k, v) in sets {
        let parts: Vec<&str> = k.split('.').collect();
        match parts.split_first() {
            Some((&"hotspot", rest)) if !rest.is_empty() => set_path(&mut hotspot, rest, v)?,
            Some(_) => set_path(&mut policy, &parts, v)?,
            None => return Err(SimError::Args("--option: empty key".into())),
        }
    }
    let hotspot: HotspotConfig = from_value("hotspot", hotspot)?;
    hotspot
        .validate()
        .map_err(|e| SimError::Args(e.to_string()))?;
    let policy: PolicyOptions = from_value("", policy)?;
    policy.validate()?;
    Ok((hotspot, policy))
}

fn from_value<T: serde::de::DeserializeOwned>(prefix: &str, v: Value) -> Result<T, SimError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let full = match (prefix.is_empty(), path == ".") {
            (true, _) => path,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{path}"),
        };
        SimError::Args(format!("option {full}: {}", e.into_inner()))
    })
}

fn set_path(root: &mut Value, path: &[&str], v: Value) -> Result<(), SimError> {
    let mut cur = root;
    let Some((last, init)) = path.split_last() else {
        return Err(SimError::Args("empty option key".into()));
    };
    for p in init {
        let Value::Object(map) = cur else {
            return Err(SimError::Args(format!(
                "option {}: {p} is not a section",
                path.join(".")
            )));
        };
        cur = map
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    let Value::Object(map) = cur else {
        return Err(SimError::Args(format!(
            "option {}: not a section",
            path.join(".")
        )));
    };
    map.insert(last.to_string(), v);
    Ok(())
}

/// `--sizes`: comma-separated numbers of hosts (empty: none).
fn parse_sizes(s: &str) -> Result<Vec<usize>, SimError> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.parse()
                .map_err(|_| SimError::Args(format!("--sizes: {x:?} is not a number of hosts")))
        })
        .collect()
}

/// Runs `simulate` with `args`, writing the JSON lines to `out`. Returns
/// the summary (`None` when only a scenario was emitted).
pub fn run(args: &SimulateArgs, out: &mut dyn Write) -> Result<Option<Summary>, SimError> {
    run_with(args, None, out)
}

/// Like [`run`]; `loaded`, when given, is the (validated) scenario to
/// simulate instead of `--scenario` or `--generate` (`--from-live`).
pub fn run_with(
    args: &SimulateArgs,
    loaded: Option<Scenario>,
    out: &mut dyn Write,
) -> Result<Option<Summary>, SimError> {
    if args.tournament {
        let (hotspot, options) = options_from_args(args)?;
        let mixes = args
            .mixes
            .iter()
            .map(|m| generate::Mix::parse(m))
            .collect::<Result<Vec<_>, _>>()?;
        let cfg = tournament::TournamentConfig {
            scenario_dir: Some(args.scenario_dir.clone()),
            sizes: parse_sizes(&args.sizes)?,
            mixes,
            seed: args.seed,
            rounds: args.rounds,
            warmup: args.warmup.unwrap_or(hotspot.n as u32),
            reference: args.reference,
            hotspot,
            options,
        };
        let entries = tournament::run(&cfg, &mut |name| {
            eprintln!("tournament: {name}");
        })?;
        if let Some(path) = &args.json {
            let text =
                serde_json::to_string_pretty(&entries).map_err(|e| SimError::Io(e.to_string()))?;
            std::fs::write(path, text + "\n")
                .map_err(|e| SimError::Io(format!("{}: {e}", path.display())))?;
        }
        out.write_all(tournament::markdown(&entries).as_bytes())
            .map_err(|e| SimError::Io(e.to_string()))?;
        out.flush().map_err(|e| SimError::Io(e.to_string()))?;
        return Ok(None);
    }
    let scn = match (loaded, &args.scenario, &args.generate) {
        (Some(s), _, _) => s,
        (None, Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| SimError::Io(format!("{}: {e}", path.display())))?;
            Scenario::load(&text)?
        }
        (None, None, Some(kind)) if kind == "dc" => {
            let s = generate::generate_dc(&generate::GenerateOptions {
                hosts: args.hosts,
                rack_size: args.rack_size,
                vms_per_host: args.vms_per_host,
                max_vms_per_host: args.max_vms_per_host,
                racks_per_pod: args.racks_per_pod,
                seed: args.seed,
                mix: match args.mixes.as_slice() {
                    [] => generate::Mix::Comm,
                    [m] => generate::Mix::parse(m)?,
                    _ => {
                        return Err(SimError::Args(
                            "--generate dc takes one --mixes value".into(),
                        ))
                    }
                },
            })?;
            s.validate()?;
            s
        }
        (None, None, Some(kind)) => {
            return Err(SimError::Args(format!(
                "--generate {kind}: only `dc` is known"
            )))
        }
        _ => {
            return Err(SimError::Args(
                "one of --scenario FILE, --generate dc or --from-live URL is required".into(),
            ))
        }
    };
    if let Some(path) = &args.emit_scenario {
        let f = std::fs::File::create(path)
            .map_err(|e| SimError::Io(format!("{}: {e}", path.display())))?;
        let mut w = std::io::BufWriter::new(f);
        serde_json::to_writer(&mut w, &scn).map_err(|e| SimError::Io(e.to_string()))?;
        w.write_all(b"\n")
            .map_err(|e| SimError::Io(e.to_string()))?;
        w.flush().map_err(|e| SimError::Io(e.to_string()))?;
    }
    let Some(policy) = &args.policy else {
        if args.emit_scenario.is_some() || args.save.is_some() {
            return Ok(None);
        }
        return Err(SimError::Args(
            "--policy NAME is required (sandpiper, idc, score, sova, violin, shoal)".into(),
        ));
    };
    let (hotspot, options) = options_from_args(args)?;
    let cfg = SimConfig {
        policy: policy.clone(),
        options,
        hotspot,
        rounds: args.rounds.or(scn.rounds).unwrap_or(10),
        reference: args.reference,
        seed: args.seed,
        warmup: args.warmup.unwrap_or(0),
    };
    simulate(&scn, &cfg, out).map(Some)
}

/// Entry point of `shoal-controller simulate`: output to `--output` or
/// standard output.
pub fn run_cli(args: &SimulateArgs) -> Result<(), SimError> {
    run_cli_with(args, None)
}

/// [`run_cli`] on an already loaded scenario (`--from-live`; see
/// [`run_with`]).
pub fn run_cli_with(args: &SimulateArgs, loaded: Option<Scenario>) -> Result<(), SimError> {
    match &args.output {
        Some(path) => {
            let f = std::fs::File::create(path)
                .map_err(|e| SimError::Io(format!("{}: {e}", path.display())))?;
            let mut w = std::io::BufWriter::new(f);
            run_with(args, loaded, &mut w)?;
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            run_with(args, loaded, &mut w)?;
        }
    }
    Ok(())
}
