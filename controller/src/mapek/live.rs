//! The live loop's state shared with the API: the policy settings, the
//! latest hotspots, recent decisions and VF changes.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::analyze::{HotspotConfig, HotspotReport};
use crate::knowledge::snapshot::HotspotEvent;
use crate::plan::{self, Decision, Policy, PolicyOptions};

/// The policy configuration served at `/api/v1/policy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Policy name, or `none` (monitor only).
    pub name: String,
    /// Record decisions without executing them.
    #[serde(default)]
    pub dry_run: bool,
    /// Policy options.
    #[serde(default)]
    pub options: PolicyOptions,
    /// Hotspot detection.
    #[serde(default)]
    pub hotspot: HotspotConfig,
    /// No moving back to a host left less than this many intervals ago.
    #[serde(default = "default_pingpong")]
    pub pingpong_intervals: f64,
}

fn default_pingpong() -> f64 {
    30.0
}

/// A decision with what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionView {
    /// Store id (0 without a store).
    pub id: i64,
    /// Round.
    pub round: u64,
    /// Unix ms.
    pub at_unix_ms: i64,
    /// Policy.
    pub policy: String,
    /// The decision (action, reason, score, details).
    #[serde(flatten)]
    pub decision: Decision,
    /// `dry_run`, `queued as mig-…`, `rejected: …`, `sent`, …
    pub outcome: String,
}

/// VF assignment of one host.
#[derive(Debug, Clone, Serialize)]
pub struct VfAssignment {
    /// Host id.
    pub host: String,
    /// VFs available.
    pub vf_count: u32,
    /// VMs with a VF attached now (from the latest report).
    pub attached: Vec<String>,
    /// VMs the last decisions gave a VF to (or took it from), with round.
    pub last_changes: Vec<(u64, String, String)>,
}

/// State of the loop shared with the API.
#[derive(Debug)]
pub struct LiveState {
    /// Current settings.
    pub settings: PolicySettings,
    /// Latest hotspot report.
    pub hotspots: Option<HotspotReport>,
    /// Hotspot events of recent rounds.
    pub hotspot_history: VecDeque<HotspotEvent>,
    /// Recent decisions, oldest first.
    pub decisions: VecDeque<DecisionView>,
    /// Rounds evaluated.
    pub round: u64,
    /// Per host: VF changes decided (round, vm, action).
    pub vf_changes: BTreeMap<String, VecDeque<(u64, String, String)>>,
    /// Policy (rebuilt when the settings change).
    pub(crate) policy: Option<Box<dyn Policy>>,
}

impl std::fmt::Debug for dyn Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl LiveState {
    /// Builds the state from configured settings (validated already).
    pub fn new(settings: PolicySettings) -> Self {
        let policy = build(&settings).ok().flatten();
        LiveState {
            settings,
            hotspots: None,
            hotspot_history: VecDeque::new(),
            decisions: VecDeque::new(),
            round: 0,
            vf_changes: BTreeMap::new(),
            policy,
        }
    }

    /// Validates and applies new settings (the policy starts afresh).
    pub fn set(&mut self, settings: PolicySettings) -> Result<(), String> {
        let policy = build(&settings)?;
        self.policy = policy;
        self.settings = settings;
        Ok(())
    }
}

/// Validates settings and builds their policy (None for `none`).
pub fn build(s: &PolicySettings) -> Result<Option<Box<dyn Policy>>, String> {
    s.hotspot.validate().map_err(|e| format!("hotspot: {e}"))?;
    if !(s.pingpong_intervals.is_finite() && s.pingpong_intervals >= 0.0) {
        return Err(format!(
            "pingpong_intervals must be >= 0, got {}",
            s.pingpong_intervals
        ));
    }
    if s.name == "none" {
        s.options.validate().map_err(|e| e.to_string())?;
        return Ok(None);
    }
    plan::build_policy(&s.name, &s.options)
        .map(Some)
        .map_err(|e| e.to_string())
}
