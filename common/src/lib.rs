//! What Shoal's controller and host daemon share.
//!
//! - [`arp`]: the gratuitous ARP frame;
//! - [`confdiff`]: which configuration fields (and named files) changed,
//!   for reloads on SIGHUP;
//! - [`http`]: a small HTTP/1 client with timeouts and retry backoff, used
//!   between controller and host daemons;
//! - [`secret`]: bearer tokens (files only the owner may read, never
//!   printed, compared in constant time);
//! - [`tls`]: rustls server and client configurations from PEM files, and
//!   a listener that completes TLS handshakes concurrently;
//! - [`proto`]: the JSON wire types exchanged between `shoal-hostd` and the
//!   controller (registration, reports, commands, command status);
//! - [`vmpatrol`]: the VMPatrol pre-copy live-migration model,
//!   used by the controller's planner and orchestrator and by hostd's
//!   namespace backend, which sends the modelled pre-copy stream for real.

#![warn(missing_docs)]

pub mod arp;
pub mod confdiff;
pub mod http;
pub mod proto;
pub mod secret;
pub mod tls;
pub mod vmpatrol;
