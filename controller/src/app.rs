//! The running controller: wires the Monitor (OpenFlow listener, forwarding
//! core, statistics pollers), the knowledge, the orchestrator, the live
//! MAPE-K loop and the REST API together, and shuts them down gracefully.
//!
//! This is the only module that sees every stage; the stages themselves
//! only see the layers below them (docs/architecture.md).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::api::{self, ApiSettings, ApiState};
use crate::config::Settings;
use crate::execute::handles::{Handles, HttpHostd};
use crate::execute::orchestrator::{OrchConfig, Orchestrator};
use crate::knowledge::clock::now_unix_ms;
use crate::knowledge::cluster::Fence;
use crate::knowledge::state::Knowledge;
use crate::knowledge::store::{SqliteStore, Store, StoreExt};
use crate::mapek::core::{core_loop, CoreConfig};
use crate::mapek::live::{LiveState, PolicySettings};
use crate::mapek::round::RoundCtx;
use crate::mapek::state::{self, HostEvent};
use crate::monitor::lldp::LldpSecret;
use crate::monitor::openflow::{self, ConnConfig, ConnContext, SwitchEvent};

/// Errors starting the controller.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A task failed.
    #[error("controller task failed: {0}")]
    Task(String),
    /// No LLDP secret could be drawn.
    #[error("{0}")]
    Secret(#[from] crate::monitor::lldp::SecretError),
    /// The knowledge store could not be opened.
    #[error("cannot open the knowledge database {path}: {source}")]
    Store {
        /// Its path.
        path: String,
        /// Why.
        source: crate::knowledge::store::StoreError,
    },
}

fn open_store(path: &str) -> Result<Arc<dyn Store>, RunError> {
    let r = if path == ":memory:" {
        SqliteStore::open_in_memory()
    } else {
        SqliteStore::open(std::path::Path::new(path))
    };
    r.map(|s| Arc::new(s) as Arc<dyn Store>)
        .map_err(|source| RunError::Store {
            path: path.to_string(),
            source,
        })
}

/// Loads the hosts of an earlier run from the store, so that reports of
/// hosts registered before a restart are accepted at once. A stored
/// registration that no longer decodes (e.g. written by an older version)
/// is skipped with a warning: that host registers again on its next report.
/// Deletes history beyond the retention (on a blocking thread).
async fn prune_history(store: Arc<dyn Store>, r: &crate::config::RetentionConfig) {
    let retention = r.store_retention();
    let now = crate::knowledge::clock::now_unix_ms();
    match tokio::task::spawn_blocking(move || store.prune(&retention, now)).await {
        Ok(Ok(p)) if p.total() > 0 => info!(
            decisions = p.decisions,
            migrations = p.migrations,
            placements = p.placements,
            reservations = p.reservations,
            audit = p.audit,
            "knowledge store history pruned"
        ),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(error = %e, "cannot prune the knowledge store history"),
        Err(e) => warn!(error = %e, "knowledge store pruning task failed"),
    }
}

/// Prunes the history every `retention.prune_interval_s` until shutdown.
async fn prune_loop(
    store: Arc<dyn Store>,
    r: crate::config::RetentionConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(r.prune_interval());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: the start already pruned.
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => prune_history(store.clone(), &r).await,
            _ = shutdown.changed() => {
                if *shutdown.borrow() { break; }
            }
        }
    }
}

fn restore_hosts(knowledge: &Knowledge, store: &dyn Store) -> usize {
    let rows = match store.hosts_json() {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "cannot read hosts from the knowledge store");
            return 0;
        }
    };
    let Ok(mut hosts) = knowledge.hosts_write() else {
        return 0;
    };
    let mut restored = 0;
    for (id, json, _) in rows {
        let reg = match serde_json::from_str::<shoal_common::proto::Registration>(&json) {
            Ok(r) => r,
            Err(e) => {
                warn!(host = %id, error = %e, "stored registration does not decode; the host must register again");
                continue;
            }
        };
        match hosts.register(&id, reg, now_unix_ms()) {
            Ok(_) => {
                restored += 1;
                info!(host = %id, "host restored from the knowledge store");
            }
            Err(e) => warn!(host = %id, error = %e, "stored registration rejected"),
        }
    }
    restored
}

/// Consumes host events until a later stage takes them over.
async fn drain_host_events(
    mut rx: mpsc::UnboundedReceiver<HostEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            ev = rx.recv() => if ev.is_none() { return },
            _ = shutdown.changed() => if *shutdown.borrow() { return },
        }
    }
}

/// A running controller.
pub struct Running {
    /// The live knowledge (for in-process callers and tests).
    pub knowledge: Arc<Knowledge>,
    /// The loop's live state.
    pub live: Arc<Mutex<LiveState>>,
    /// The migration orchestrator.
    pub orchestrator: Arc<Orchestrator>,
    /// Where switches connect.
    pub of_addr: SocketAddr,
    /// Where the API listens.
    pub api_addr: SocketAddr,
    api_state: Arc<ApiState>,
    hostd: Arc<HttpHostd>,
    store: Arc<dyn Store>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// What [`Running::reload`] put in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Operators the API now accepts.
    pub operators: usize,
    /// Host daemons the API now accepts.
    pub hosts: usize,
    /// Whether the controller now presents a token to host daemons.
    pub controller_token: bool,
    /// The policy put in force (None: the policy was left as it was).
    pub policy: Option<String>,
    /// Whether any domain or environment is configured now.
    pub groups: bool,
}

/// Why a reload was refused (nothing of it was applied).
#[derive(Debug, thiserror::Error)]
#[error("the new policy cannot be built: {0}")]
pub struct ReloadError(String);

impl Running {
    /// Applies what `new` (validated) changes that takes effect without a
    /// restart: the API's credentials (operators and every
    /// `<host-id>.token` of `host_tokens_dir`), the token presented to host
    /// daemons, the `[groups]` (domains and environments), the placement
    /// rules and automation levels (unless the API set them: the store's
    /// stay), and — when `policy` is true — the `[policy]` section (stored
    /// like a `PUT /api/v1/policy`, so it also survives a restart). Either
    /// everything is applied or, on error, nothing.
    pub fn reload(&self, new: &Settings, policy: bool) -> Result<Reloaded, ReloadError> {
        let mut applied_policy = None;
        if policy {
            let p = state::live_state(new).settings;
            {
                let mut live = self
                    .live
                    .lock()
                    .map_err(|_| ReloadError("live state lock poisoned".into()))?;
                live.set(p.clone()).map_err(ReloadError)?;
            }
            if let Err(e) = self.store.set_config("policy", &p) {
                warn!(error = %e, "cannot store the reloaded policy");
            }
            self.knowledge.events.publish(
                "policy_changed",
                serde_json::json!({"policy": p.name, "dry_run": p.dry_run, "by": "sighup"}),
            );
            applied_policy = Some(p.name);
        }
        let auth = api::auth::Auth::new(&new.auth);
        let (operators, hosts) = auth.counts();
        self.api_state.auth.replace(auth);
        self.hostd.set_token(new.token.clone());
        self.knowledge.set_groups(new.groups.clone());
        // Placement rules and automation levels: the file's, unless the API
        // set them (kept in the store, which takes precedence as at start).
        match self
            .store
            .config::<crate::knowledge::rules::RuleSet>("rules")
        {
            Ok(None) => self.knowledge.set_rules(new.rules.clone()),
            Ok(Some(_)) => {
                info!("SIGHUP: placement rules set through the API stay in force")
            }
            Err(e) => warn!(error = %e, "cannot read the stored placement rules"),
        }
        match self
            .store
            .config::<crate::knowledge::control::Control>(api::control::STORE_KEY)
        {
            Ok(None) => {
                self.knowledge
                    .update_control(|c| c.automation = new.automation.clone());
            }
            Ok(Some(_)) => {
                info!("SIGHUP: automation levels set through the API stay in force")
            }
            Err(e) => warn!(error = %e, "cannot read the stored automation levels"),
        }
        Ok(Reloaded {
            operators,
            hosts,
            controller_token: new.token.is_some(),
            policy: applied_policy,
            groups: !new.groups.is_empty(),
        })
    }

    /// Stops accepting, closes switch connections and the API, and waits
    /// for the tasks (at most `grace`).
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let all = futures_join(self.tasks);
        if tokio::time::timeout(grace, all).await.is_err() {
            warn!("shutdown grace period over; leaving remaining tasks");
        }
        info!("controller stopped");
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// Binds the listeners and starts every task.
pub async fn start(settings: Settings) -> Result<Running, RunError> {
    let of_listener = TcpListener::bind(settings.of_listen)
        .await
        .map_err(|source| RunError::Bind {
            what: "OpenFlow",
            addr: settings.of_listen,
            source,
        })?;
    let api_listener = TcpListener::bind(settings.api_listen)
        .await
        .map_err(|source| RunError::Bind {
            what: "REST API",
            addr: settings.api_listen,
            source,
        })?;
    let of_addr = of_listener.local_addr().unwrap_or(settings.of_listen);
    let api_addr = api_listener.local_addr().unwrap_or(settings.api_listen);
    let mut etcd_store = None;
    let store = match &settings.cluster {
        None => open_store(&settings.db)?,
        Some(c) => {
            let tls = crate::cluster::etcd::tls_options(c);
            let s = crate::knowledge::etcd_store::EtcdStore::connect(&c.endpoints, &c.prefix, tls)
                .map_err(|source| RunError::Store {
                    path: format!("etcd {} (prefix {})", c.endpoints.join(","), c.prefix),
                    source,
                })?;
            let s = Arc::new(s);
            etcd_store = Some(s.clone());
            s as Arc<dyn Store>
        }
    };
    let (host_tx, host_rx) = mpsc::unbounded_channel::<HostEvent>();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut cluster_task = None;
    let knowledge = {
        let k = state::knowledge(&settings, Some(store.clone()));
        match &settings.cluster {
            None => k,
            Some(c) => {
                let (conn_tx, conn_rx) = watch::channel(std::collections::BTreeSet::new());
                let (view, task) =
                    crate::cluster::etcd::spawn(c.clone(), conn_rx, shutdown_rx.clone());
                cluster_task = Some(task);
                // The leader's tables take writes only under its election key.
                if let Some(s) = &etcd_store {
                    s.fence_leader_writes(view.clone());
                }
                info!(node = %c.node_id, etcd = %c.endpoints.join(","), prefix = %c.prefix, "cluster node: coordinating through etcd");
                k.with_cluster(Fence::cluster(view), conn_tx)
            }
        }
    };
    let knowledge = Arc::new(knowledge);
    restore_hosts(&knowledge, store.as_ref());
    // Placement rules: the configuration's, unless the API changed them
    // (kept in the store, and valid).
    knowledge.set_rules(settings.rules.clone());
    match store.config::<crate::knowledge::rules::RuleSet>("rules") {
        Ok(Some(r)) => match r.validate() {
            Ok(()) => {
                info!(
                    rules = r.len(),
                    "placement rules restored from the knowledge store"
                );
                knowledge.set_rules(r);
            }
            Err(e) => {
                warn!(error = %e, "stored placement rules rejected; the configuration's apply")
            }
        },
        Ok(None) => {}
        Err(e) => warn!(error = %e, "cannot read the stored placement rules"),
    }
    // Automation levels and hosts in maintenance: kept in the store by the
    // API (`control`); the configuration's `[automation]` otherwise.
    knowledge.update_control(|c| c.automation = settings.automation.clone());
    match store.config::<crate::knowledge::control::Control>(crate::api::control::STORE_KEY) {
        Ok(Some(c)) => match c.automation.validate() {
            Ok(()) => {
                info!(
                    level = c.automation.level.as_str(),
                    vms = c.automation.vms.len(),
                    maintenance = c.maintenance.len(),
                    "automation levels and maintenance restored from the knowledge store"
                );
                knowledge.update_control(|k| *k = c);
            }
            Err(e) => {
                warn!(error = %e, "stored automation levels rejected; the configuration's apply")
            }
        },
        Ok(None) => {}
        Err(e) => warn!(error = %e, "cannot read the stored automation levels"),
    }
    // Domains and environments: the configuration's `[groups]`, unless the
    // API put a set (kept in the store, and valid): it replaces them.
    match store.config::<Option<crate::knowledge::groups::GroupsSpec>>(api::groups::STORE_KEY) {
        Ok(Some(Some(spec))) => match spec.check() {
            Ok(g) => {
                info!(
                    domains = spec.domains.len(),
                    environments = spec.environments.len(),
                    "domains and environments restored from the knowledge store"
                );
                knowledge.set_api_groups(Some(g));
            }
            Err(e) => {
                warn!(error = %e, "stored domains and environments rejected; the configuration's apply")
            }
        },
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot read the stored domains and environments"),
    }
    let mut live = state::live_state(&settings);
    if !settings.policy_pinned {
        match store.config::<PolicySettings>("policy") {
            Ok(Some(p)) => {
                let name = p.name.clone();
                match live.set(p) {
                    Ok(()) => info!(policy = %name, "policy restored from the knowledge store"),
                    Err(e) => warn!(error = %e, "stored policy rejected"),
                }
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "cannot read the stored policy"),
        }
    }
    match crate::mapek::round::restore_pending(&mut live.pending, store.as_ref()) {
        Ok(0) => {}
        Ok(n) => info!(
            recommendations = n,
            "recommendations still waiting for an operator"
        ),
        Err(e) => warn!(error = %e, "cannot read the waiting recommendations"),
    }
    let live = Arc::new(Mutex::new(live));
    // Droppable events (a bounded queue per connection, served in turn)
    // and connect/disconnect events (unbounded: at most two per accepted
    // connection, never dropped).
    let (ev_tx, ev_rx) = crate::monitor::fair::fair_queues::<SwitchEvent>(
        openflow::EVENT_QUEUE,
        openflow::CONN_EVENT_QUEUE,
    );
    let (control_tx, control_rx) = mpsc::unbounded_channel::<SwitchEvent>();

    let ctx = ConnContext {
        cfg: ConnConfig {
            echo_interval: settings.echo_interval,
            request_timeout: settings.request_timeout,
            multipart_cap_bytes: settings.multipart_cap_bytes,
            write_timeout: settings.write_timeout,
            send_queue_bytes: settings.send_queue_bytes,
            allowed_dpids: settings.allowed_dpids.clone().map(Arc::new),
            cluster: settings.cluster.is_some(),
        },
        events: ev_tx,
        control: control_tx,
        monitor: knowledge.monitor.clone(),
        shutdown: shutdown_rx.clone(),
        packet_in_drops: knowledge.packet_in_drops.clone(),
        event_drops: knowledge.event_drops.clone(),
        not_reading: knowledge.not_reading_disconnects.clone(),
        messages: knowledge.of_messages.clone(),
    };
    let mut tasks = Vec::new();
    tasks.extend(cluster_task);
    if let Some(c) = &settings.cluster {
        tasks.push(tokio::spawn(crate::cluster::hosts::follow(
            knowledge.clone(),
            c.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(crate::cluster::relay::serve(
            knowledge.clone(),
            c.clone(),
            shutdown_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(openflow::serve(
        of_listener,
        ctx,
        settings.tls.openflow.clone(),
    )));
    let lldp_secret = match settings.lldp_secret.clone() {
        Some(s) => s,
        None => LldpSecret::random()?,
    };
    info!(source = ?lldp_secret.source(), "LLDP probes are authenticated (HMAC-SHA256)");
    tasks.push(tokio::spawn(core_loop(
        knowledge.clone(),
        CoreConfig::from_settings(&settings, lldp_secret),
        control_rx,
        ev_rx,
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(drain_host_events(
        host_rx,
        shutdown_rx.clone(),
    )));
    let hostd = Arc::new(
        HttpHostd::with_tls(
            Duration::from_secs_f64(settings.execute.hostd_timeout_s),
            settings.token.clone(),
            settings.tls.hostd.clone(),
        )
        .fenced(knowledge.fence.clone()),
    );
    let mut handles = Handles::of(&knowledge, hostd.clone());
    if let Some(c) = &settings.cluster {
        handles.switches = Arc::new(crate::execute::handles::ClusterSwitches {
            knowledge: knowledge.clone(),
            relay: Arc::new(crate::cluster::relay::Relay::new(
                c.clone(),
                knowledge.fence.clone(),
            )),
        });
    }
    let orch = Orchestrator::with_handles(OrchConfig::from_settings(&settings), handles).await;
    prune_history(store.clone(), &settings.retention).await;
    orch.restore();
    tasks.push(tokio::spawn(prune_loop(
        store.clone(),
        settings.retention.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(crate::knowledge::reports::write_loop(
        knowledge.report_queue.clone(),
        store.clone(),
        crate::knowledge::reports::FLUSH_INTERVAL,
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(orch.clone().run(shutdown_rx.clone())));
    let hostd_client = hostd.clone();
    let round_ctx = RoundCtx {
        fabric: knowledge.clone(),
        store: Some(store.clone()),
        start_unix_ms: knowledge.start_unix_ms,
        poll_interval: settings.poll_interval,
        live: live.clone(),
        hostd,
    };
    tasks.push(tokio::spawn(crate::mapek::round::run(
        round_ctx.clone(),
        orch.clone(),
        shutdown_rx.clone(),
    )));
    let api_state = Arc::new(ApiState {
        knowledge: knowledge.clone(),
        live: live.clone(),
        orchestrator: orch.clone(),
        settings: ApiSettings::of(&settings),
        auth: api::auth::SharedAuth::new(api::auth::Auth::new(&settings.auth)),
        host_events: Some(host_tx),
        round: Some(round_ctx),
    });
    let app = api::router(api_state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let mut api_shutdown = shutdown_rx.clone();
    let stopped = async move {
        while api_shutdown.changed().await.is_ok() {
            if *api_shutdown.borrow() {
                break;
            }
        }
    };
    match settings.tls.api.clone() {
        Some(cfg) => {
            let tls = shoal_common::tls::TlsListener::new(api_listener, cfg).map_err(|source| {
                RunError::Bind {
                    what: "REST API (TLS)",
                    addr: settings.api_listen,
                    source,
                }
            })?;
            tasks.push(tokio::spawn(async move {
                // `tap_io` gives the connections' peer addresses to
                // `ConnectInfo<SocketAddr>` (axum implements that for
                // tapped listeners).
                use axum::serve::ListenerExt;
                let r = axum::serve(tls.tap_io(|_| {}), app)
                    .with_graceful_shutdown(stopped)
                    .await;
                if let Err(e) = r {
                    warn!(error = %e, "REST API server failed");
                }
            }));
        }
        None => tasks.push(tokio::spawn(async move {
            let r = axum::serve(api_listener, app)
                .with_graceful_shutdown(stopped)
                .await;
            if let Err(e) = r {
                warn!(error = %e, "REST API server failed");
            }
        })),
    }
    info!(%of_addr, %api_addr, api_tls = settings.tls.api.is_some(), openflow_tls = settings.tls.openflow.is_some(), "controller started");
    Ok(Running {
        knowledge,
        live,
        orchestrator: orch,
        of_addr,
        api_addr,
        api_state,
        hostd: hostd_client,
        store,
        shutdown: shutdown_tx,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::hosts::tests::{reg, vm};

    /// One registration that no longer decodes does not keep the others
    /// from being restored.
    #[test]
    fn an_undecodable_registration_skips_only_its_host() {
        let store = SqliteStore::open_in_memory().expect("store");
        store
            .put_host_json("old", r#"{"host_id":"old","args":["-m","64"]}"#, 1)
            .expect("put");
        let good = reg("h1", 7, vec![vm("v1", "02:00:00:00:00:01")]);
        store
            .put_host_json("h1", &serde_json::to_string(&good).expect("json"), 1)
            .expect("put");
        let settings = crate::config::Config::default()
            .validate()
            .expect("settings");
        let k = crate::mapek::state::knowledge(&settings, None);
        assert_eq!(restore_hosts(&k, &store), 1);
        assert!(k.hosts_read().expect("hosts").host("h1").is_some());
    }
}
