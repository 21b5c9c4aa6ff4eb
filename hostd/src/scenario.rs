//! Scenario time series for `netns` VMs: CPU, memory and dirty rate over
//! time (their network numbers are always measured for real).
//!
//! File format (JSON, one file per VM; docs/hostd.md has the full text):
//!
//! ```json
//! {
//!   "interpolation": "linear",
//!   "after_end": "hold",
//!   "points": [
//!     {"t": 0,  "cpu": 0.10, "mem_mb": 200, "dirty_mbps": 1.0},
//!     {"t": 60, "cpu": 0.90, "mem_mb": 480, "dirty_mbps": 8.0, "wait": 0.05}
//!   ]
//! }
//! ```
//!
//! `t` is seconds since the scenario epoch (the VM's first start, kept across
//! migrations), strictly increasing; `cpu` the utilisation of the VM's vCPUs
//! in [0, 1]; `mem_mb` used memory in MiB; `dirty_mbps` the page dirty rate in
//! MiB/s (default 0); `wait` the fraction of the interval spent waiting for a
//! CPU (default 0). Before the first point the first point holds.
//! `interpolation`: `linear` (default) or `hold` (step: the last point at or
//! before `t`). `after_end`: `hold` (default: the last point forever) or
//! `loop` (the series repeats with period = the last point's `t`).
//!
//! The files are read by [`crate::plan`] (confined to `scenario_dir`, size
//! capped, off the async runtime); this module only parses text.

use serde::Deserialize;

/// The scenario file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not valid JSON for the format.
    #[error("scenario {path}: {source}")]
    Json {
        /// Path of the file.
        path: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A value breaks a rule of the format.
    #[error("scenario {path}: {why}")]
    Invalid {
        /// Path of the file.
        path: String,
        /// The rule that was broken.
        why: String,
    },
}

/// How values between points are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Straight line between neighbouring points.
    #[default]
    Linear,
    /// The last point at or before `t`.
    Hold,
}

/// What happens after the last point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AfterEnd {
    /// The last point holds forever.
    #[default]
    Hold,
    /// The series repeats with period = last `t`.
    Loop,
}

/// One point of the series.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// Seconds since the scenario epoch.
    pub t: f64,
    /// vCPU utilisation in [0, 1].
    pub cpu: f64,
    /// Used memory, MiB.
    pub mem_mb: f64,
    /// Page dirty rate, MiB/s.
    #[serde(default)]
    pub dirty_mbps: f64,
    /// Fraction of the interval spent waiting on a run queue.
    #[serde(default)]
    pub wait: f64,
}

/// A validated scenario.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Scenario {
    /// Between points.
    #[serde(default)]
    pub interpolation: Interpolation,
    /// After the last point.
    #[serde(default)]
    pub after_end: AfterEnd,
    /// The points, `t` strictly increasing.
    pub points: Vec<Point>,
}

/// Values of the scenario at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// vCPU utilisation in [0, 1].
    pub cpu: f64,
    /// Used memory, MiB.
    pub mem_mb: f64,
    /// Dirty rate, MiB/s.
    pub dirty_mbps: f64,
    /// Run-queue wait fraction.
    pub wait: f64,
}

impl Scenario {
    /// Parses and validates scenario text; `path` is only for messages.
    pub fn parse(text: &str, path: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = serde_json::from_str(text).map_err(|source| ScenarioError::Json {
            path: path.to_string(),
            source,
        })?;
        let bad = |why: String| ScenarioError::Invalid {
            path: path.to_string(),
            why,
        };
        if s.points.is_empty() {
            return Err(bad("no points".into()));
        }
        let mut prev_t = f64::NEG_INFINITY;
        for (i, p) in s.points.iter().enumerate() {
            let ok = |v: f64| v.is_finite() && v >= 0.0;
            if !ok(p.t) || !ok(p.mem_mb) || !ok(p.dirty_mbps) {
                return Err(bad(format!(
                    "point {i}: t, mem_mb, dirty_mbps must be finite and >= 0"
                )));
            }
            if !(ok(p.cpu) && p.cpu <= 1.0 && ok(p.wait) && p.wait <= 1.0) {
                return Err(bad(format!("point {i}: cpu and wait must be in [0, 1]")));
            }
            if p.t <= prev_t {
                return Err(bad(format!("point {i}: t must be strictly increasing")));
            }
            prev_t = p.t;
        }
        if s.after_end == AfterEnd::Loop && prev_t <= 0.0 {
            return Err(bad("after_end = loop needs a last point with t > 0".into()));
        }
        Ok(s)
    }

    /// The values at `t` seconds since the epoch (negative `t` = 0).
    pub fn at(&self, t: f64) -> Sample {
        let (first, last) = match (self.points.first(), self.points.last()) {
            (Some(f), Some(l)) => (*f, *l),
            _ => {
                return Sample {
                    cpu: 0.0,
                    mem_mb: 0.0,
                    dirty_mbps: 0.0,
                    wait: 0.0,
                }
            }
        };
        let mut t = if t.is_finite() { t.max(0.0) } else { 0.0 };
        if t > last.t {
            match self.after_end {
                AfterEnd::Hold => return sample(&last),
                AfterEnd::Loop => t %= last.t,
            }
        }
        if t <= first.t {
            return sample(&first);
        }
        // The last point at or before t (exists: t > first.t).
        let idx = self.points.partition_point(|p| p.t <= t);
        let a = match self.points.get(idx.saturating_sub(1)) {
            Some(a) => *a,
            None => return sample(&first),
        };
        let Some(b) = self.points.get(idx).copied() else {
            return sample(&a);
        };
        match self.interpolation {
            Interpolation::Hold => sample(&a),
            Interpolation::Linear => {
                let f = (t - a.t) / (b.t - a.t);
                let lerp = |x: f64, y: f64| x + (y - x) * f;
                Sample {
                    cpu: lerp(a.cpu, b.cpu),
                    mem_mb: lerp(a.mem_mb, b.mem_mb),
                    dirty_mbps: lerp(a.dirty_mbps, b.dirty_mbps),
                    wait: lerp(a.wait, b.wait),
                }
            }
        }
    }
}

fn sample(p: &Point) -> Sample {
    Sample {
        cpu: p.cpu,
        mem_mb: p.mem_mb,
        dirty_mbps: p.dirty_mbps,
        wait: p.wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"{"points": [
        {"t": 0, "cpu": 0.2, "mem_mb": 100, "dirty_mbps": 1},
        {"t": 10, "cpu": 0.6, "mem_mb": 200, "dirty_mbps": 3, "wait": 0.1}
    ]}"#;

    #[test]
    fn linear_between_points_and_hold_outside() {
        let s = Scenario::parse(TEXT, "x").unwrap();
        let m = s.at(5.0);
        assert!((m.cpu - 0.4).abs() < 1e-12);
        assert!((m.mem_mb - 150.0).abs() < 1e-12);
        assert!((m.dirty_mbps - 2.0).abs() < 1e-12);
        assert!((m.wait - 0.05).abs() < 1e-12);
        assert_eq!(s.at(-3.0).cpu, 0.2);
        assert_eq!(s.at(1e6).mem_mb, 200.0);
        assert_eq!(s.at(10.0).cpu, 0.6);
    }

    #[test]
    fn hold_and_loop() {
        let text = r#"{"interpolation": "hold", "after_end": "loop", "points": [
            {"t": 0, "cpu": 0.1, "mem_mb": 10}, {"t": 4, "cpu": 0.9, "mem_mb": 20}]}"#;
        let s = Scenario::parse(text, "x").unwrap();
        assert_eq!(s.at(3.9).cpu, 0.1);
        assert_eq!(s.at(4.0).cpu, 0.9);
        // 5 s = 1 s into the second period.
        assert_eq!(s.at(5.0).cpu, 0.1);
    }

    #[test]
    fn invalid_files_are_errors() {
        for bad in [
            r#"{"points": []}"#,
            r#"{"points": [{"t": 0, "cpu": 1.5, "mem_mb": 1}]}"#,
            r#"{"points": [{"t": 1, "cpu": 0.5, "mem_mb": 1}, {"t": 1, "cpu": 0.5, "mem_mb": 1}]}"#,
            r#"{"points": [{"t": 0, "cpu": 0.5, "mem_mb": -1}]}"#,
            r#"{"points": [{"t": 0, "cpu": 0.5, "mem_mb": 1, "bogus": 1}]}"#,
            r#"{"after_end": "loop", "points": [{"t": 0, "cpu": 0.5, "mem_mb": 1}]}"#,
            "not json",
        ] {
            assert!(Scenario::parse(bad, "x").is_err(), "{bad}");
        }
    }
}
