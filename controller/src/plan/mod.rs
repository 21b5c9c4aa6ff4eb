//! Plan: migration / VF / memory policies, pure code.
//!
//! - **Owns**: the policies, their constraints and scores, the shared
//!   communication-cost physics ([`physics`]).
//! - **Reads**: a knowledge [`Snapshot`] and Analyze's [`HotspotReport`].
//! - **May not touch**: locks, the store, the network, the clock, or any
//!   stage above it (the simulator, execute, the loop, the API).
//!
//! Every policy implements [`Policy`]: it sees the whole knowledge
//! [`Snapshot`] and the [`HotspotReport`] of Analyze and returns an ordered
//! list of [`Decision`]s (migrate, attach VF, detach VF, resize memory), each
//! with its reason, a score and the numbers behind it ([`Details`]).
//! Policies are selected by name with [`build_policy`]:
//!
//! | name        | module         | published system |
//! |-------------|----------------|------------------|
//! | `sandpiper` | [`sandpiper`]  | Sandpiper (baseline) |
//! | `idc`       | [`idc`]        | IDC-aware migration |
//! | `score`     | [`score`]      | S-CORE |
//! | `sova`      | [`sova`]       | Sova |
//! | `violin`    | [`violin`]     | VIOLIN |
//! | `shoal`     | [`shoal`]      | none: Shoal's own cost-benefit policy |
//!
//! Each rule, its publication, section and equation, the choices where a
//! publication is ambiguous and Shoal's own additions: `docs/algorithms.md`.
//! A policy also tells Analyze what to observe for it
//! ([`Policy::detector_defaults`]); memory growth before migration is shared
//! in [`growth`].
//!
//! The constraints all policies share (room at the destination, one
//! migration per source host per round, cooldown, a migration that
//! converges under the VMPatrol model, and the operator's placement rules
//! of [`rules`]) live in [`constraints`]; the indexed view of a snapshot
//! that makes them fast lives in [`view`].
//!
//! No I/O, no clock, no global state: the time is [`Snapshot::now_s`], and
//! every ordering is explicit, so the same inputs give the same decisions.
#![warn(missing_docs)]

pub mod constraints;
pub mod growth;
pub mod idc;
pub mod physics;
pub mod repair;
#[cfg(test)]
mod rule_tests;
pub mod rules;
pub mod sandpiper;
pub mod score;
pub mod shoal;
pub mod sova;
#[cfg(test)]
pub(crate) mod testutil;
pub mod view;
pub mod violin;

use crate::analyze::{DetectorDefaults, HotspotReport};
use crate::knowledge::snapshot::Snapshot;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use constraints::{violations, ConstraintOptions};

/// Errors of policy construction.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// No policy has this name.
    #[error("unknown policy {0:?} (known: sandpiper, idc, score, sova, violin, shoal)")]
    UnknownPolicy(String),
    /// An option is out of range.
    #[error("{field}: {why}")]
    InvalidOption {
        /// Dotted option path, e.g. `score.cm`.
        field: String,
        /// What is expected.
        why: String,
    },
}

impl PlanError {
    pub(crate) fn invalid(field: &str, why: impl Into<String>) -> Self {
        PlanError::InvalidOption {
            field: field.to_string(),
            why: why.into(),
        }
    }
}

/// Names accepted by [`build_policy`].
pub const POLICY_NAMES: [&str; 6] = ["sandpiper", "idc", "score", "sova", "violin", "shoal"];

/// One action a policy asks the executor to carry out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Live-migrate `vm` from host `from` to host `to`.
    Migrate {
        /// VM name.
        vm: String,
        /// Source host.
        from: String,
        /// Destination host.
        to: String,
    },
    /// Attach an SR-IOV VF of `host` to `vm`.
    AttachVf {
        /// VM name.
        vm: String,
        /// Its host.
        host: String,
    },
    /// Detach `vm`'s VF (it falls back to the vNIC).
    DetachVf {
        /// VM name.
        vm: String,
        /// Its host.
        host: String,
    },
    /// Set `vm`'s memory allocation to `target_mb`.
    Resize {
        /// VM name.
        vm: String,
        /// Its host.
        host: String,
        /// New allocation, MB.
        target_mb: f64,
    },
}

impl Action {
    /// The VM the action is about.
    pub fn vm(&self) -> &str {
        match self {
            Action::Migrate { vm, .. }
            | Action::AttachVf { vm, .. }
            | Action::DetachVf { vm, .. }
            | Action::Resize { vm, .. } => vm,
        }
    }

    /// The kind of action: `migrate`, `attach_vf`, `detach_vf`, `resize`.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Migrate { .. } => "migrate",
            Action::AttachVf { .. } => "attach_vf",
            Action::DetachVf { .. } => "detach_vf",
            Action::Resize { .. } => "resize",
        }
    }
}

/// Another option a decision was compared with, and why it lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    /// The other VM, when the alternative is a different VM.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vm: Option<String>,
    /// The other host, when the alternative is a different destination.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub host: Option<String>,
    /// Its score, when it had one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub score: Option<f64>,
    /// Why it was not chosen (`lower score`, `no room: cpu`, ...).
    pub rejected: String,
}

/// VMPatrol estimate of a migration's cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MigrationCost {
    /// Bandwidth `L` assumed, MB/s.
    pub bandwidth_mbps: f64,
    /// Index of the stop-and-copy round.
    pub rounds: u32,
    /// Bytes moved.
    pub bytes: f64,
    /// Duration, seconds.
    pub time_s: f64,
    /// Downtime, seconds.
    pub downtime_s: f64,
}

/// The numbers behind a decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Details {
    /// Named inputs and intermediate values (VSR, V_ijk, benefit, IF, ...).
    pub metrics: BTreeMap<String, f64>,
    /// The best few alternatives it beat, best first.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub alternatives: Vec<Alternative>,
    /// Migration cost (migrations only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub migration: Option<MigrationCost>,
}

/// How many alternatives a decision keeps.
pub const MAX_ALTERNATIVES: usize = 5;

impl Details {
    /// Adds a metric (builder style).
    pub fn metric(mut self, name: &str, value: f64) -> Self {
        self.metrics.insert(name.to_string(), value);
        self
    }

    /// Adds an alternative if fewer than [`MAX_ALTERNATIVES`] are kept.
    pub fn push_alternative(&mut self, alt: Alternative) {
        if self.alternatives.len() < MAX_ALTERNATIVES {
            self.alternatives.push(alt);
        }
    }
}

/// One planned action with its reason, score and the numbers behind it.
///
/// Serialises flat: `{"action":"migrate","vm":…,"from":…,"to":…,
/// "reason":…,"score":…,"details":{…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// What to do.
    #[serde(flatten)]
    pub action: Action,
    /// Human-readable reason.
    pub reason: String,
    /// The policy's score for it (higher is better; its meaning is per policy).
    pub score: f64,
    /// The numbers behind it.
    pub details: Details,
}

/// A planning policy. Implementations are pure: the same snapshot, report
/// and internal state give the same decisions.
pub trait Policy: Send {
    /// The policy's name (as accepted by [`build_policy`]).
    fn name(&self) -> &'static str;
    /// Decides the actions for this round, in the order to execute them.
    fn plan(&mut self, snap: &Snapshot, hot: &HotspotReport) -> Vec<Decision>;
    /// What the detector observes for this policy when the configuration
    /// leaves it open ([`crate::analyze::HotspotConfig::for_policy`]): the
    /// memory-utilisation trigger and whether the network observation
    /// counts IDC traffic.
    fn detector_defaults(&self) -> DetectorDefaults {
        DetectorDefaults::default()
    }
}

/// Options of all policies (the live controller serves them at
/// `GET/PUT /api/v1/policy`). Unknown fields are rejected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyOptions {
    /// Constraints shared by all policies.
    pub constraints: ConstraintOptions,
    /// Sandpiper.
    pub sandpiper: sandpiper::SandpiperOptions,
    /// IDC-aware.
    pub idc: idc::IdcOptions,
    /// S-CORE.
    pub score: score::ScoreOptions,
    /// Sova.
    pub sova: sova::SovaOptions,
    /// VIOLIN.
    pub violin: violin::ViolinOptions,
    /// Shoal's own cost-benefit policy.
    pub shoal: shoal::ShoalOptions,
}

impl PolicyOptions {
    /// Validates every section.
    pub fn validate(&self) -> Result<(), PlanError> {
        self.constraints.validate()?;
        self.sandpiper.validate()?;
        self.idc.validate()?;
        self.score.validate()?;
        self.sova.validate()?;
        self.violin.validate()?;
        self.shoal.validate()?;
        Ok(())
    }
}

/// Builds the policy called `name` with validated options.
pub fn build_policy(name: &str, opts: &PolicyOptions) -> Result<Box<dyn Policy>, PlanError> {
    opts.validate()?;
    let c = opts.constraints.clone();
    Ok(match name {
        "sandpiper" => Box::new(sandpiper::Sandpiper::new(c, opts.sandpiper.clone())),
        "idc" => Box::new(idc::Idc::new(c, opts.idc.clone())),
        "score" => Box::new(score::Score::new(c, opts.score.clone())),
        "sova" => Box::new(sova::Sova::new(c, opts.sova.clone())),
        "violin" => Box::new(violin::Violin::new(c, opts.violin.clone())),
        "shoal" => Box::new(shoal::Shoal::new(c, opts.shoal.clone())),
        other => return Err(PlanError::UnknownPolicy(other.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_serialises_flat() {
        let d = Decision {
            action: Action::Migrate {
                vm: "v1".into(),
                from: "h1".into(),
                to: "h2".into(),
            },
            reason: "r".into(),
            score: 1.5,
            details: Details::default().metric("x", 2.0),
        };
        let s = serde_json::to_string(&d).unwrap();
        assert_eq!(
            s,
            r#"{"action":"migrate","vm":"v1","from":"h1","to":"h2","reason":"r","score":1.5,"details":{"metrics":{"x":2.0}}}"#
        );
        let back: Decision = serde_json::from_str(&s).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn build_by_name_and_reject_unknown() {
        let o = PolicyOptions::default();
        for n in POLICY_NAMES {
            assert_eq!(build_policy(n, &o).unwrap().name(), n);
        }
        assert!(matches!(
            build_policy("nope", &o),
            Err(PlanError::UnknownPolicy(_))
        ));
        let bad: Result<PolicyOptions, _> = serde_json::from_str(r#"{"score":{"tokn":"global"}}"#);
        assert!(bad.is_err());
        let mut o = PolicyOptions::default();
        o.sova.epsilon = 2.0;
        let e = build_policy("sova", &o).err().unwrap();
        assert!(e.to_string().starts_with("sova.epsilon"), "{e}");
    }

    #[test]
    fn options_round_trip() {
        let o = PolicyOptions::default();
        let s = serde_json::to_string(&o).unwrap();
        let back: PolicyOptions = serde_json::from_str(&s).unwrap();
        assert_eq!(back, o);
        let part: PolicyOptions =
            serde_json::from_str(r#"{"score":{"token":"global","destination":"first-fit"}}"#)
                .unwrap();
        assert_eq!(part.score.token, score::TokenPolicy::Global);
    }
}
