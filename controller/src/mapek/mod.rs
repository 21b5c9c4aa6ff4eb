//! The MAPE-K loop that wires the stages at run time.
//!
//! - **Owns**: building the loop's state from the settings ([`state`]),
//!   the live policy state ([`live`]),
//!   the forwarding core and the statistics pollers ([`core`]: Monitor
//!   tasks), and one live round ([`round`]: snapshot → Analyze → Plan →
//!   Execute, or only record in a dry run or as recommendations), and the
//!   drain of hosts in maintenance ([`maintenance`]).
//! - **Reads**: every stage below it.
//! - **May not touch**: the API (which reads this state) or the process
//!   wiring in [`crate::app`].
//!
//! Lock order: see [`crate::knowledge::state`]; `live` is a leaf after the
//! knowledge locks.

pub mod core;
pub mod live;
pub mod maintenance;
pub mod round;
pub mod state;
