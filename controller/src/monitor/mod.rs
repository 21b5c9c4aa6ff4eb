//! Monitor: switch connections, forwarding, topology, statistics polling,
//! packet parsing, cookies and host reports.

pub mod cookie;
pub mod dpid;
pub mod forwarding;
pub mod hosts;
pub mod macser;
pub mod openflow;
pub mod packet;
pub mod stats;
pub mod topology;
