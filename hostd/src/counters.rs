//! What the daemon counts as it works, for its `GET /metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the daemon counts as it works.
#[derive(Debug, Default)]
pub struct HostdCounters {
    /// Sensor passes (one per interval).
    pub sensor_passes: AtomicU64,
    /// Time spent sampling, µs, all passes.
    pub sensor_micros: AtomicU64,
    /// The last pass, µs.
    pub sensor_last_micros: AtomicU64,
    /// Reports the controller accepted.
    pub reports_sent: AtomicU64,
    /// Reports refused (an answer other than 2xx) or not delivered.
    pub reports_failed: AtomicU64,
    /// Registrations the controller accepted.
    pub registrations: AtomicU64,
    /// Switches from one controller to the next of `controllers`.
    pub failovers: AtomicU64,
}

impl HostdCounters {
    /// Adds one sensor pass that took `d`.
    pub fn sensed(&self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sensor_passes.fetch_add(1, Ordering::Relaxed);
        self.sensor_micros.fetch_add(us, Ordering::Relaxed);
        self.sensor_last_micros.store(us, Ordering::Relaxed);
    }
}
