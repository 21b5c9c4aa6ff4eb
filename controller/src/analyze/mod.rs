//! Analyze: hotspot detection (k-of-n + AR(1)), pure code.
