//! Running as one node of a cluster coordinated through etcd.
//!
//! - **Owns**: the node's etcd session ([`etcd`]: lease, registration,
//!   election, the mirror of the cluster's keys, and — on the leader — the
//!   assignment of switch masterships) and the assignment rule itself
//!   ([`assign`], pure), and the following of the hosts other nodes
//!   received ([`hosts`]: the shared store's host rows applied to this
//!   node's registry), and the relay of the leader's reservation writes to
//!   the masters of other switches ([`relay`]).
//! - **Reads**: the settings (`[cluster]`) and the knowledge, into which it
//!   publishes the [`crate::knowledge::cluster::ClusterView`] that the
//!   fence, the forwarding core, the live round and the API read.
//! - **May not touch**: execute, the loop or the API (they read the view;
//!   this module never calls them).
//!
//! Keys, all under the configured prefix `P`:
//!
//! | key | value | lease |
//! |---|---|---|
//! | `P/nodes/ID` | `{"id", "api"}` | the node's |
//! | `P/conns/ID` | the datapath ids the node has connected (JSON) | the node's |
//! | `P/election/…` | etcd's election keys (value: node id) | the candidate's |
//! | `P/masters/DPID` | the master node's id; its revision is the OpenFlow generation id | none (written by the leader, fenced by its leader key) |
//! | `P/relay/req/DPID/ID`, `P/relay/ack/DPID/ID` | a batch of the leader's reservation writes for a switch another node masters, and its answer | the leader's |
//! | `P/store/…` | the knowledge store ([`crate::knowledge::etcd_store`]) | none |

pub mod assign;
pub mod etcd;
pub mod hosts;
pub mod relay;
