//! Knowledge: state shared by the MAPE-K stages: the snapshot the
//! policies read and the persistent store.

pub mod clock;
pub mod live;
pub mod snapshot;
pub mod state;
pub mod store;
