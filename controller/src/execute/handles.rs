//! The narrow handles the orchestrator works through, so that a test, the
//! simulator or a cluster deployment can substitute them: the read-only
//! view of the fabric ([`FabricView`]: topology, hosts, statistics),
//! OpenFlow to the switches ([`Switches`], [`SwitchLink`]), the host
//! daemons ([`HostdClient`]), the knowledge store
//! ([`crate::knowledge::store::Store`]) and the clock
//! ([`crate::knowledge::clock::Clock`]).

use crate::knowledge::cluster::{Fence, NotLeader};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLockReadGuard};
use std::time::Duration;

use ofp::Message;
use shoal_common::http::{HttpClient, Method};
use shoal_common::proto::{self, CommandStatus};
use shoal_common::secret::Secret;

use crate::knowledge::clock::{Clock, SystemClock};
use crate::knowledge::snapshot::{HotspotEvent, MigrationRecord, Snapshot};
use crate::knowledge::state::{Knowledge, Poisoned};
use crate::knowledge::store::Store;
use crate::monitor::hosts::HostRegistry;
use crate::monitor::openflow::{OfError, SwitchHandle};
use crate::monitor::stats::PortRate;
use crate::monitor::topology::Topology;

/// A boxed, sendable future (the traits are object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One connected switch.
pub trait SwitchLink: Send + Sync {
    /// Sends a message that expects no reply.
    fn send(&self, msg: Message) -> BoxFuture<'_, Result<(), OfError>>;
    /// Sends a batch followed by a BARRIER_REQUEST (not awaited).
    fn send_batch(&self, msgs: Vec<Message>) -> BoxFuture<'_, Result<(), OfError>>;
    /// Waits until the switch has processed everything sent before.
    fn barrier(&self) -> BoxFuture<'_, Result<(), OfError>>;
    /// Sends a batch and its BARRIER and waits for the BARRIER_REPLY;
    /// fails when the switch answered any message of the batch with an
    /// ERROR before it. The default (for links that cannot match ERRORs
    /// to messages) is [`SwitchLink::send_batch`] then
    /// [`SwitchLink::barrier`].
    fn send_batch_confirmed(&self, msgs: Vec<Message>) -> BoxFuture<'_, Result<(), OfError>> {
        Box::pin(async move {
            self.send_batch(msgs).await?;
            self.barrier().await
        })
    }
}

impl SwitchLink for SwitchHandle {
    fn send(&self, msg: Message) -> BoxFuture<'_, Result<(), OfError>> {
        Box::pin(SwitchHandle::send(self, msg))
    }
    fn send_batch(&self, msgs: Vec<Message>) -> BoxFuture<'_, Result<(), OfError>> {
        Box::pin(SwitchHandle::send_batch(self, msgs))
    }
    fn barrier(&self) -> BoxFuture<'_, Result<(), OfError>> {
        Box::pin(SwitchHandle::barrier(self))
    }
    fn send_batch_confirmed(&self, msgs: Vec<Message>) -> BoxFuture<'_, Result<(), OfError>> {
        Box::pin(SwitchHandle::send_batch_confirmed(self, msgs))
    }
}

/// The connected switches.
pub trait Switches: Send + Sync {
    /// The switch `dpid`, if connected.
    fn switch(&self, dpid: u64) -> Option<Box<dyn SwitchLink>>;
}

impl Switches for Knowledge {
    /// A cluster node that does not lead (or whose lease ran out) gets no
    /// switch: the orchestrator's writes stop with its leadership.
    fn switch(&self, dpid: u64) -> Option<Box<dyn SwitchLink>> {
        if self.fence.may_lead().is_err() {
            return None;
        }
        self.switch_handle(dpid)
            .map(|h| Box::new(h) as Box<dyn SwitchLink>)
    }
}

/// The switches of a cluster node that leads: the local connection of a
/// switch the node masters (granted by the switch), and for a switch
/// another node masters a link whose writes that master sends
/// ([`crate::cluster::relay`]).
pub struct ClusterSwitches {
    /// The node's knowledge (switch handles, fence, granted masterships).
    pub knowledge: Arc<Knowledge>,
    /// The relay to the other masters.
    pub relay: Arc<crate::cluster::relay::Relay>,
}

impl Switches for ClusterSwitches {
    fn switch(&self, dpid: u64) -> Option<Box<dyn SwitchLink>> {
        let k = &self.knowledge;
        if k.fence.may_lead().is_err() {
            return None;
        }
        let granted = k
            .granted_masters
            .lock()
            .map(|g| g.contains(&dpid))
            .unwrap_or(false);
        if granted && k.fence.master_generation(dpid).is_some() {
            return k
                .switch_handle(dpid)
                .map(|h| Box::new(h) as Box<dyn SwitchLink>);
        }
        let mastered = k.fence.view().is_some_and(|v| v.master_of(dpid).is_some());
        mastered.then(|| {
            Box::new(RemoteSwitch {
                dpid,
                relay: self.relay.clone(),
            }) as Box<dyn SwitchLink>
        })
    }
}

/// A switch another cluster node masters: every batch goes through the
/// relay and is confirmed by that node's BARRIER before it returns.
struct RemoteSwitch {
    dpid: u64,
    relay: Arc<crate::cluster::relay::Relay>,
}

impl RemoteSwitch {
    async fn relay(&self, msgs: Vec<Message>) -> Result<(), OfError> {
        self.relay
            .call(self.dpid, msgs)
            .await
            .map_err(|why| OfError::BadReply {
                dpid: self.dpid,
                why: format!("relayed through its master: {why}"),
            })
    }
}

impl SwitchLink for RemoteSwitch {
    fn send(&self, msg: Message) -> BoxFuture<'_, Result<(), OfError>> {
        Box::pin(self.relay(vec![msg]))
    }
    fn send_batch(&self, msgs: Vec<Message>) -> BoxFuture<'_, Result<(), OfError>> {
        Box::pin(self.relay(msgs))
    }
    /// Every relayed batch was confirmed by a BARRIER already.
    fn barrier(&self) -> BoxFuture<'_, Result<(), OfError>> {
        Box::pin(async { Ok(()) })
    }
    fn send_batch_confirmed(&self, msgs: Vec<Message>) -> BoxFuture<'_, Result<(), OfError>> {
        Box::pin(self.relay(msgs))
    }
}

/// The read-only view of the fabric: what Monitor keeps current. Guards
/// are taken in the lock order of [`crate::knowledge::state`] (hosts
/// before topology) and never held across `.await`.
pub trait FabricView: Send + Sync {
    /// The LLDP topology (switches, links, endpoints, paths).
    fn topology(&self) -> Result<RwLockReadGuard<'_, Topology>, Poisoned>;
    /// The registered hosts with their latest reports.
    fn hosts(&self) -> Result<RwLockReadGuard<'_, HostRegistry>, Poisoned>;
    /// The latest rate of every switch port, sorted (empty if the
    /// statistics lock is poisoned).
    fn port_rates(&self) -> Vec<PortRate>;
    /// The configured link capacity, bit/s (None: each port's reported
    /// speed).
    fn link_capacity_bps(&self) -> Option<f64>;
    /// The knowledge snapshot the planners read (None if a lock is
    /// poisoned); see [`Knowledge::snapshot`].
    fn snapshot(
        &self,
        round: u64,
        history: usize,
        migrations: Vec<MigrationRecord>,
        hotspot_history: Vec<HotspotEvent>,
        last_migration_s: BTreeMap<String, f64>,
    ) -> Option<Snapshot>;
    /// Ok when this controller may act as the cluster's leader now (always
    /// for a single controller).
    fn may_lead(&self) -> Result<(), NotLeader> {
        Ok(())
    }
    /// Where migration and reservation events go (none: not published).
    fn events(&self) -> Option<Arc<crate::knowledge::events::EventBus>> {
        None
    }
    /// The operator's control state (automation levels, hosts in
    /// maintenance; default: none).
    fn control(&self) -> Arc<crate::knowledge::control::Control> {
        Arc::default()
    }
    /// The operator's placement rules in force (default: none).
    fn rules(&self) -> Arc<crate::knowledge::rules::RuleSet> {
        Arc::default()
    }
}

impl FabricView for Knowledge {
    fn may_lead(&self) -> Result<(), NotLeader> {
        self.fence.may_lead()
    }
    fn control(&self) -> Arc<crate::knowledge::control::Control> {
        Knowledge::control(self)
    }
    fn rules(&self) -> Arc<crate::knowledge::rules::RuleSet> {
        Knowledge::rules(self)
    }
    fn events(&self) -> Option<Arc<crate::knowledge::events::EventBus>> {
        Some(self.events.clone())
    }
    fn topology(&self) -> Result<RwLockReadGuard<'_, Topology>, Poisoned> {
        self.topo_read()
    }
    fn hosts(&self) -> Result<RwLockReadGuard<'_, HostRegistry>, Poisoned> {
        self.hosts_read()
    }
    fn port_rates(&self) -> Vec<PortRate> {
        self.monitor_lock()
            .map(|m| m.port_rates())
            .unwrap_or_default()
    }
    fn link_capacity_bps(&self) -> Option<f64> {
        self.link_capacity_bps
    }
    fn snapshot(
        &self,
        round: u64,
        history: usize,
        migrations: Vec<MigrationRecord>,
        hotspot_history: Vec<HotspotEvent>,
        last_migration_s: BTreeMap<String, f64>,
    ) -> Option<Snapshot> {
        Knowledge::snapshot(
            self,
            round,
            history,
            migrations,
            hotspot_history,
            last_migration_s,
        )
    }
}

/// Why a host daemon did not take or answer a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostdError {
    /// The command could not be encoded.
    #[error("cannot encode the command: {0}")]
    Encode(String),
    /// No answer (connection, timeout).
    #[error("{url}: {reason}")]
    Transport {
        /// The URL asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The daemon answered with an unexpected status.
    #[error("{url} answered {code}: {body}")]
    Refused {
        /// The URL asked.
        url: String,
        /// HTTP status.
        code: u16,
        /// The start of the answer (at most 300 characters).
        body: String,
    },
    /// A cluster node that does not lead sends no command.
    #[error("not sent: {0}")]
    Fenced(NotLeader),
    /// The answer did not parse.
    #[error("bad status from {url}: {reason}")]
    BadReply {
        /// The URL asked.
        url: String,
        /// The parse error.
        reason: String,
    },
}

/// The host daemons' effector API (commands and their status).
pub trait HostdClient: Send + Sync {
    /// `PUT`s command `id` to the daemon at `api` (base URL); accepted
    /// (200/202) or an error.
    fn put_command<'a>(
        &'a self,
        api: &'a str,
        id: &'a str,
        cmd: &'a proto::Command,
    ) -> BoxFuture<'a, Result<(), HostdError>>;
    /// The status of command `id` at `api` (None: the daemon does not know
    /// it).
    fn command_status<'a>(
        &'a self,
        api: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<CommandStatus>, HostdError>>;
}

/// [`HostdClient`] over HTTP with the shared bearer token (clones share
/// the token; [`HttpHostd::set_token`] replaces it for all of them).
#[derive(Clone)]
pub struct HttpHostd {
    http: HttpClient,
    token: Arc<std::sync::RwLock<Option<Secret>>>,
    fence: Fence,
}

impl std::fmt::Debug for HttpHostd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpHostd")
    }
}

impl HttpHostd {
    /// A client with per-request `timeout` and bearer `token`.
    pub fn new(timeout: Duration, token: Option<Secret>) -> Self {
        Self::with_tls(timeout, token, None)
    }

    /// Like [`HttpHostd::new`]; `https://` host daemons are verified
    /// against the CA of `tls`.
    pub fn with_tls(
        timeout: Duration,
        token: Option<Secret>,
        tls: Option<rustls::ClientConfig>,
    ) -> Self {
        HttpHostd {
            http: HttpClient::with_tls(timeout, tls),
            token: Arc::new(std::sync::RwLock::new(token)),
            fence: Fence::single(),
        }
    }

    /// The same client for a cluster node: commands are sent only while
    /// `fence` says this node leads (status reads are always allowed).
    pub fn fenced(mut self, fence: Fence) -> Self {
        self.fence = fence;
        self
    }

    /// Presents `token` from the next request on (the controller's token
    /// rotated on reload).
    pub fn set_token(&self, token: Option<Secret>) {
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = token;
    }

    fn token(&self) -> Option<Secret> {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn clip(b: &[u8]) -> String {
    String::from_utf8_lossy(b).chars().take(300).collect()
}

impl HttpHostd {
    /// One request to command `id` at `api`: the status and body, or the
    /// transport error.
    async fn call(
        &self,
        method: Method,
        api: &str,
        id: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(String, u16, bytes::Bytes), HostdError> {
        let url = format!("{api}{}", proto::command_path(id));
        let token = self.token();
        match self
            .http
            .send(method, &url, token.as_ref().map(Secret::expose), body)
            .await
        {
            Ok((code, b)) => Ok((url, code, b)),
            Err(e) => Err(HostdError::Transport {
                url,
                reason: e.to_string(),
            }),
        }
    }
}

impl HostdClient for HttpHostd {
    fn put_command<'a>(
        &'a self,
        api: &'a str,
        id: &'a str,
        cmd: &'a proto::Command,
    ) -> BoxFuture<'a, Result<(), HostdError>> {
        Box::pin(async move {
            self.fence.may_lead().map_err(HostdError::Fenced)?;
            let body = serde_json::to_vec(cmd).map_err(|e| HostdError::Encode(e.to_string()))?;
            match self.call(Method::PUT, api, id, Some(body)).await? {
                (_, 200 | 202, _) => Ok(()),
                (url, code, b) => Err(HostdError::Refused {
                    url,
                    code,
                    body: clip(&b),
                }),
            }
        })
    }

    fn command_status<'a>(
        &'a self,
        api: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<CommandStatus>, HostdError>> {
        Box::pin(async move {
            match self.call(Method::GET, api, id, None).await? {
                (url, 200, body) => {
                    serde_json::from_slice(&body)
                        .map(Some)
                        .map_err(|e| HostdError::BadReply {
                            url,
                            reason: e.to_string(),
                        })
                }
                (_, 404, _) => Ok(None),
                (url, code, b) => Err(HostdError::Refused {
                    url,
                    code,
                    body: clip(&b),
                }),
            }
        })
    }
}

/// No switch is connected (tests of the logic above OpenFlow).
#[cfg(test)]
pub(crate) struct NoSwitches;

#[cfg(test)]
impl Switches for NoSwitches {
    fn switch(&self, _dpid: u64) -> Option<Box<dyn SwitchLink>> {
        None
    }
}

/// Everything the orchestrator reads, writes to or waits on.
#[derive(Clone)]
pub struct Handles {
    /// The fabric it reads (held weakly by the orchestrator).
    pub fabric: Arc<dyn FabricView>,
    /// OpenFlow to the switches.
    pub switches: Arc<dyn Switches>,
    /// The host daemons.
    pub hostd: Arc<dyn HostdClient>,
    /// Where migrations, reservations and decision outcomes are recorded.
    pub store: Option<Arc<dyn Store>>,
    /// Wall-clock time of records.
    pub clock: Arc<dyn Clock>,
}

impl Handles {
    /// The handles of the running controller: its knowledge and switches,
    /// host daemons over HTTP, its store, the system clock.
    pub fn of(knowledge: &Arc<Knowledge>, hostd: Arc<dyn HostdClient>) -> Self {
        Handles {
            fabric: knowledge.clone(),
            switches: knowledge.clone(),
            hostd,
            store: knowledge.store.clone(),
            clock: Arc::new(SystemClock),
        }
    }
}
