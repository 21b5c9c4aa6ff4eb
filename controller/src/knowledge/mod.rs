//! Knowledge: state shared by the MAPE-K stages.

pub mod snapshot;
