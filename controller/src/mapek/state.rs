//! The loop's shared state: the [`Knowledge`] plus what only the loop and
//! the API use (settings, the live policy state, the orchestrator, the host
//! event channel).
//!
//! Lock order: the knowledge locks first, in the order documented in
//! [`crate::knowledge::state`], then `live`, then the orchestrator's own
//! table. Never hold one across `.await`.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::config::Settings;
use crate::execute::orchestrator::Orchestrator;
use crate::knowledge::state::{Knowledge, KnowledgeConfig};
use crate::knowledge::store::Store;
use crate::mapek::live::{LiveState, PolicySettings};

/// State shared by the core, the pollers, the live loop and the API.
#[derive(Debug)]
pub struct Shared {
    /// The live knowledge (topology, statistics, hosts, switches, store).
    pub knowledge: Arc<Knowledge>,
    /// Settings.
    pub settings: Settings,
    /// Bearer token shared with the host daemons.
    pub token: Option<String>,
    /// Where new host events (deduplicated) go.
    pub host_events: Option<mpsc::UnboundedSender<HostEvent>>,
    /// The live loop's state (policy, hotspots, decisions).
    pub live: Mutex<LiveState>,
    /// The migration orchestrator (set once at start).
    pub orchestrator: std::sync::OnceLock<Arc<Orchestrator>>,
}

/// A new event reported by a host daemon.
#[derive(Debug, Clone)]
pub struct HostEvent {
    /// Host id.
    pub host: String,
    /// The event.
    pub event: shoal_common::proto::Event,
}

/// The knowledge configuration of `settings`.
pub fn knowledge_config(settings: &Settings) -> KnowledgeConfig {
    KnowledgeConfig {
        link_capacity_bps: settings.link_capacity_bps,
        poll_interval: settings.poll_interval,
        window_intervals: settings.window_intervals,
        excluded_cookie: settings.excluded_cookie,
        excluded_cookie_mask: settings.excluded_cookie_mask,
        host_history: settings.host_history,
    }
}

impl Shared {
    /// Fresh state from settings, without a store.
    pub fn new(settings: Settings) -> Self {
        Self::with(settings, None, None)
    }

    /// Fresh state from settings, with a store and a host event channel.
    pub fn with(
        settings: Settings,
        store: Option<Arc<dyn Store>>,
        host_events: Option<mpsc::UnboundedSender<HostEvent>>,
    ) -> Self {
        let p = &settings.policy;
        let live_settings = PolicySettings {
            name: p.name.clone(),
            dry_run: p.dry_run,
            options: p.options.clone(),
            hotspot: p.hotspot.clone(),
            pingpong_intervals: p.pingpong_intervals,
        };
        let knowledge = Knowledge::new(
            &knowledge_config(&settings),
            settings.hypervisors.clone(),
            store,
        );
        Shared {
            knowledge: Arc::new(knowledge),
            token: settings.token.clone(),
            settings,
            host_events,
            live: Mutex::new(LiveState::new(live_settings)),
            orchestrator: std::sync::OnceLock::new(),
        }
    }

    /// The orchestrator (None before start completed).
    pub fn orchestrator(&self) -> Option<&Arc<Orchestrator>> {
        self.orchestrator.get()
    }
}
