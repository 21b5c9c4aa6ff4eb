//! Monitor: the lowest stage of the MAPE-K loop.
//!
//! - **Owns**: the switch connections ([`openflow`]: listener, handshake,
//!   xid-matched requests), forwarding decisions ([`forwarding`], pure:
//!   returns OpenFlow messages), LLDP link discovery and endpoint location
//!   ([`topology`]), LLDP probe authentication and the checks received
//!   LLDP must pass ([`lldp`]), statistics accounting and the traffic matrix λ(u,v)
//!   ([`stats`]), packet parsing ([`packet`]), flow cookies ([`cookie`]),
//!   the host registry fed by the host daemons' reports ([`hosts`]),
//!   OpenFlow messages counted by type ([`ofcount`]), the fair per-switch
//!   event queues to the forwarding core ([`fair`]), and datapath-id
//!   formatting ([`dpid`]).
//! - **Reads**: OpenFlow messages, host reports, `ofp` and `shoal-common`.
//! - **May not touch**: anything above it — knowledge, analyze, plan,
//!   execute, the loop or the API. The tasks that drive these types (the
//!   forwarding core and the pollers) live in [`crate::mapek::core`].

pub mod cookie;
pub mod dpid;
pub mod fair;
pub mod forwarding;
pub mod hosts;
pub mod lldp;
pub mod macser;
pub mod ofcount;
pub mod openflow;
pub mod packet;
pub mod stats;
pub mod topology;
