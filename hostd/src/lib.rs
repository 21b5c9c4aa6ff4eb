//! Shoal host daemon (`shoal-hostd`): sensors and effectors of one hypervisor.
