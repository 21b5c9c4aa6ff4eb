//! The MAPE-K loop that wires the stages at run time.
//!
//! - **Owns**: the loop's shared state ([`state::Shared`]: the knowledge,
//!   the settings, the live policy state of [`live`], the orchestrator),
//!   the forwarding core and the statistics pollers ([`core`]: Monitor
//!   tasks), and one live round ([`round`]: snapshot → Analyze → Plan →
//!   Execute, or only record in a dry run).
//! - **Reads**: every stage below it.
//! - **May not touch**: the API (which reads this state) or the process
//!   wiring in [`crate::app`].
//!
//! Lock order: see [`crate::knowledge::state`]; `live` is a leaf after the
//! knowledge locks.

pub mod core;
pub mod live;
pub mod round;
pub mod state;
