//! Test-bed support for Shoal's end-to-end tests: network namespaces,
//! Open vSwitch bridges and child processes that clean up after themselves.
