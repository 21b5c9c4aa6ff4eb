//! The MAPE-K loop that wires the stages.

pub mod core;
pub mod live;
pub mod round;
pub mod state;
