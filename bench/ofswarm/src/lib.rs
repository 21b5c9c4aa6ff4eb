//! `ofswarm`: an OpenFlow 1.3 switch emulator for benchmarking a
//! controller. It opens one TCP connection per emulated switch and answers
//! the controller as Open vSwitch does (handshake, multipart, echo,
//! barrier, role, config, meters, a real flow table with timeouts and
//! FLOW_REMOVED), forwards frames between the switches of an emulated
//! topology through their flow tables (so LLDP discovery works), and
//! generates PACKET_IN load (cbench-like throughput, or latency).
//!
//! Built on the project's codec crate [`ofp`].

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod churn;
pub mod frames;
pub mod load;
pub mod net;
pub mod procstat;
pub mod switch;
pub mod table;
pub mod topo;
pub mod traffic;
