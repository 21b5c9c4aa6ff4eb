//! What this node knows about its cluster, and the fence every act passes.
//!
//! A single controller (the default) is always allowed to act: its
//! [`Fence`] is [`Fence::single`]. A cluster node (`[cluster]` in the
//! configuration, `crate::cluster` drives it from etcd) publishes a
//! [`ClusterView`] on a watch channel; the forwarding core, the live round,
//! the orchestrator and the API read it through the fence:
//!
//! - [`Fence::may_lead`]: this node is the elected leader *and* its etcd
//!   lease is still valid by the local monotonic clock. Checked before every
//!   leader-only act (a live round, a command to a host daemon, a
//!   reservation). A node paused (SIGSTOP) past its lease finds the deadline
//!   passed the instant it runs again, before its etcd task could tell it.
//! - [`Fence::master_generation`]: the mastership of one switch assigned to
//!   this node, with its OpenFlow role generation id (the etcd revision of
//!   the assignment), again only while the lease is valid.
//!
//! The view is data only; nothing here talks to etcd.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::watch;

/// One node of the cluster, as registered in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// The node's id.
    pub id: String,
    /// Where its REST API is reached (for redirects and the cluster view).
    pub api: String,
}

/// The master of one switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mastership<'a> {
    /// The node that masters it.
    pub node: &'a str,
    /// OpenFlow role generation id: the etcd revision of the assignment.
    pub generation: u64,
}

/// The cluster as this node sees it.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// This node's id.
    pub node_id: String,
    /// The etcd lease of this node's session (0: none).
    pub lease_id: i64,
    /// Lease time-to-live, seconds.
    pub lease_ttl_s: u64,
    /// Until when the lease is certainly valid (local monotonic clock):
    /// the send time of the last acknowledged keep-alive plus the TTL the
    /// server granted. None: no valid lease.
    pub lease_valid_until: Option<Instant>,
    /// This node won the election (and holds the leader key).
    pub is_leader: bool,
    /// The leader's node id, when there is one.
    pub leader: Option<String>,
    /// The leader's election key and its create revision (what the
    /// leader's etcd writes are conditioned on, and what a switch's master
    /// checks a relayed request against).
    pub leader_key: Option<(String, i64)>,
    /// Live nodes (registered under a valid lease), by id.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Datapath id → (master node, generation id).
    pub masters: BTreeMap<u64, (String, u64)>,
    /// Datapath id → nodes that have it connected.
    pub connected: BTreeMap<u64, Vec<String>>,
    /// Why this node does not act, when it does not (for `/healthz` and
    /// the log).
    pub not_acting: Option<String>,
    /// The etcd revision this view reflects.
    pub revision: i64,
}

impl ClusterView {
    /// The lease is valid at `now`.
    pub fn lease_valid(&self, now: Instant) -> bool {
        self.lease_valid_until.is_some_and(|t| now < t)
    }

    /// The master of `dpid`, if assigned.
    pub fn master_of(&self, dpid: u64) -> Option<Mastership<'_>> {
        self.masters.get(&dpid).map(|(n, g)| Mastership {
            node: n.as_str(),
            generation: *g,
        })
    }
}

/// Why a leader-only act was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotLeader {
    /// Another node leads (or none does yet).
    #[error("this node is not the cluster leader (leader: {})", leader.as_deref().unwrap_or("none elected"))]
    Follower {
        /// The leader's node id.
        leader: Option<String>,
        /// The leader's API address, when known.
        api: Option<String>,
    },
    /// This node was the leader but its etcd lease is no longer valid.
    #[error("this node's etcd lease is not valid: it does not act")]
    LeaseLost,
}

/// The check every act of a cluster node passes (always open for a single
/// controller). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Fence {
    view: Option<watch::Receiver<ClusterView>>,
}

impl Default for Fence {
    fn default() -> Self {
        Fence::single()
    }
}

impl Fence {
    /// A single controller: everything is allowed.
    pub fn single() -> Self {
        Fence { view: None }
    }

    /// A cluster node following `view`.
    pub fn cluster(view: watch::Receiver<ClusterView>) -> Self {
        Fence { view: Some(view) }
    }

    /// This node runs in a cluster.
    pub fn is_cluster(&self) -> bool {
        self.view.is_some()
    }

    /// The current view (None for a single controller).
    pub fn view(&self) -> Option<ClusterView> {
        self.view.as_ref().map(|v| v.borrow().clone())
    }

    /// A receiver of view changes (None for a single controller).
    pub fn subscribe(&self) -> Option<watch::Receiver<ClusterView>> {
        self.view.clone()
    }

    /// Ok when this node may do what only the leader does, now.
    pub fn may_lead(&self) -> Result<(), NotLeader> {
        let Some(v) = &self.view else { return Ok(()) };
        let v = v.borrow();
        if !v.lease_valid(Instant::now()) {
            return Err(NotLeader::LeaseLost);
        }
        if !v.is_leader {
            let api = v
                .leader
                .as_ref()
                .and_then(|l| v.nodes.get(l))
                .map(|n| n.api.clone());
            return Err(NotLeader::Follower {
                leader: v.leader.clone(),
                api,
            });
        }
        Ok(())
    }

    /// Whether this node is acting at all (a valid lease), with the reason
    /// when not; always `Ok` for a single controller.
    pub fn acting(&self) -> Result<(), String> {
        let Some(v) = &self.view else { return Ok(()) };
        let v = v.borrow();
        if v.lease_valid(Instant::now()) {
            Ok(())
        } else {
            Err(v
                .not_acting
                .clone()
                .unwrap_or_else(|| "no valid etcd lease".to_string()))
        }
    }

    /// The generation id under which this node masters `dpid`, if it does
    /// now (its lease valid); for a single controller `Some(0)`.
    pub fn master_generation(&self, dpid: u64) -> Option<u64> {
        let Some(v) = &self.view else { return Some(0) };
        let v = v.borrow();
        if !v.lease_valid(Instant::now()) {
            return None;
        }
        v.masters
            .get(&dpid)
            .filter(|(n, _)| *n == v.node_id)
            .map(|(_, g)| *g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn view(leader: bool, valid_for: Option<Duration>) -> ClusterView {
        let mut v = ClusterView {
            node_id: "a".into(),
            is_leader: leader,
            leader: Some(if leader { "a" } else { "b" }.into()),
            lease_valid_until: valid_for.map(|d| Instant::now() + d),
            ..ClusterView::default()
        };
        v.nodes.insert(
            "b".into(),
            NodeInfo {
                id: "b".into(),
                api: "http://b:1".into(),
            },
        );
        v.masters.insert(1, ("a".into(), 7));
        v.masters.insert(2, ("b".into(), 9));
        v
    }

    #[test]
    fn a_single_controller_may_do_everything() {
        let f = Fence::single();
        assert!(f.may_lead().is_ok());
        assert_eq!(f.master_generation(42), Some(0));
        assert!(f.acting().is_ok());
    }

    #[test]
    fn only_a_leader_with_a_valid_lease_leads() {
        let (_tx, rx) = watch::channel(view(true, Some(Duration::from_secs(5))));
        assert!(Fence::cluster(rx).may_lead().is_ok());
        let (_tx, rx) = watch::channel(view(false, Some(Duration::from_secs(5))));
        assert_eq!(
            Fence::cluster(rx).may_lead(),
            Err(NotLeader::Follower {
                leader: Some("b".into()),
                api: Some("http://b:1".into())
            })
        );
        let (_tx, rx) = watch::channel(view(true, None));
        assert_eq!(Fence::cluster(rx).may_lead(), Err(NotLeader::LeaseLost));
    }

    #[test]
    fn a_lease_that_ran_out_while_paused_closes_the_fence_at_once() {
        // The view still says "leader" (the etcd task has not run since),
        // but the deadline passed: nothing may be done.
        let (_tx, rx) = watch::channel(view(true, Some(Duration::from_millis(30))));
        let f = Fence::cluster(rx);
        assert!(f.may_lead().is_ok());
        assert_eq!(f.master_generation(1), Some(7));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(f.may_lead(), Err(NotLeader::LeaseLost));
        assert_eq!(f.master_generation(1), None);
        assert!(f.acting().is_err());
    }

    #[test]
    fn masterships_of_other_nodes_are_not_ours() {
        let (_tx, rx) = watch::channel(view(false, Some(Duration::from_secs(5))));
        let f = Fence::cluster(rx);
        assert_eq!(f.master_generation(1), Some(7));
        assert_eq!(f.master_generation(2), None);
        assert_eq!(f.master_generation(3), None);
    }
}
