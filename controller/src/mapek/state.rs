//! Building the loop's state from the settings: the [`Knowledge`], the live
//! policy state, and the host events the API hands to the loop. Each stage
//! then receives only its own handles (see [`crate::app`]).
//!
//! Lock order: the knowledge locks first, in the order documented in
//! [`crate::knowledge::state`], then `live`, then the orchestrator's own
//! table. Never hold one across `.await`.

use std::sync::Arc;

use crate::config::Settings;
use crate::knowledge::state::Knowledge;
use crate::knowledge::store::Store;
use crate::mapek::live::{LiveState, PolicySettings};

/// A new event reported by a host daemon.
#[derive(Debug, Clone)]
pub struct HostEvent {
    /// Host id.
    pub host: String,
    /// The event.
    pub event: shoal_common::proto::Event,
}

/// The live loop's state at start, from the settings' `[policy]`.
pub fn live_state(settings: &Settings) -> LiveState {
    let p = &settings.policy;
    LiveState::new(PolicySettings {
        name: p.name.clone(),
        dry_run: p.dry_run,
        options: p.options.clone(),
        hotspot: p.hotspot.clone(),
        pingpong_intervals: p.pingpong_intervals,
    })
}

/// The live knowledge of `settings`, with `store`.
pub fn knowledge(settings: &Settings, store: Option<Arc<dyn Store>>) -> Knowledge {
    Knowledge::new(
        &settings.knowledge_config(),
        settings.hypervisors.clone(),
        store,
    )
}
