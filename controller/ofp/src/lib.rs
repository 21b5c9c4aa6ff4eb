//! OpenFlow 1.3 wire codec for Shoal.
//!
//! No I/O and no clock: bytes in, typed messages out, and back.
