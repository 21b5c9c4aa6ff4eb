//! The MAPE-K loop that wires the stages.

pub mod core;
pub mod round;
pub mod state;
