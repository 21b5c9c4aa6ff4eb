//! Knowledge: what the stages know, and what survives a restart.
//!
//! - **Owns**: the live knowledge and its locks ([`state::Knowledge`], with
//!   the one lock order of the controller), the [`snapshot::Snapshot`] the
//!   policies read and its builder from live data ([`live`]), the
//!   configured groups ([`groups::Groups`]: VIOLIN's domains and
//!   environments) and the operator's placement rules ([`rules::RuleSet`],
//!   as data), the persistent store ([`store::Store`]: SQLite, or etcd in a cluster ([`etcd_store`])) and the
//!   queue of host reports on their way to it ([`reports`]), and the clock
//!   ([`clock`]).
//! - **Reads**: the Monitor's types (topology, statistics, host registry,
//!   switch handles).
//! - **May not touch**: analyze, plan, execute, the loop or the API.

pub mod clock;
pub mod cluster;
pub mod control;
pub mod etcd_store;
pub mod events;
pub mod groups;
pub mod history;
pub mod live;
pub mod reports;
pub mod rules;
pub mod snapshot;
pub mod state;
pub mod store;
#[cfg(test)]
mod store_suite;
