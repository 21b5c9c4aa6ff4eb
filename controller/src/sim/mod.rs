//! Data-center simulator running the same Analyze/Plan code as the live loop.
#![warn(missing_docs)]

pub mod physics;
