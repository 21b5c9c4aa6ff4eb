//! `hostswarm`: emulates H host daemons (`shoal-hostd`) with V VMs in all
//! against a Shoal controller, through its real REST API: each host
//! registers (`PUT /api/v1/hosts/{id}`) and then posts a report
//! (`POST /api/v1/hosts/{id}/reports`) every `interval_s`, so that the
//! aggregate is the target rate. The metrics come from a seeded,
//! deterministic generator ([`gen`]) with some hot hosts, so the live
//! loop's detector raises hotspots and its policy has work.
//!
//! It measures the latency of every report `POST` ([`hist`]), the rate
//! achieved and, at the end, the loop's round times from
//! `GET /api/v1/loop` ([`run`]).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod gen;
pub mod hist;
pub mod run;
