//! OpenFlow messages counted by type and direction, for `GET /metrics`.
//!
//! The connection tasks count every message after the handshake: a
//! received one when its frame is handled, a sent one once the socket
//! write that carried it succeeded (a write may carry several messages: the
//! header chain is walked, checking each length, never trusting it beyond
//! the buffer). Relaxed atomics: a scrape may see one message of a burst
//! before the next; every count only grows.

use std::sync::atomic::{AtomicU64, Ordering};

/// Message types of OpenFlow 1.3 (`OFPT_HELLO` 0 … `OFPT_METER_MOD` 29);
/// anything above is counted as `other`.
pub const TYPES: usize = 30;

/// Per-type counts of messages received from and sent to switches.
#[derive(Debug)]
pub struct OfMessageCounters {
    rx: [AtomicU64; TYPES + 1],
    tx: [AtomicU64; TYPES + 1],
}

impl Default for OfMessageCounters {
    fn default() -> Self {
        OfMessageCounters {
            rx: std::array::from_fn(|_| AtomicU64::new(0)),
            tx: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn slot(msg_type: u8) -> usize {
    usize::from(msg_type).min(TYPES)
}

impl OfMessageCounters {
    /// A message of type `msg_type` was received.
    pub fn received(&self, msg_type: u8) {
        self.rx[slot(msg_type)].fetch_add(1, Ordering::Relaxed);
    }

    /// `bytes` (one or more whole messages) were written to a switch. Stops
    /// at the first header that is short or whose length does not fit.
    pub fn sent(&self, bytes: &[u8]) {
        let mut rest = bytes;
        while rest.len() >= 8 {
            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            if len < 8 || len > rest.len() {
                break;
            }
            self.tx[slot(rest[1])].fetch_add(1, Ordering::Relaxed);
            rest = &rest[len..];
        }
    }

    /// `(type name, received, sent)` for every type seen in either
    /// direction; names as `ofp::msg_type::name` (`OFPT_FLOW_MOD`), `other`
    /// for unknown types.
    pub fn snapshot(&self) -> Vec<(&'static str, u64, u64)> {
        (0..=TYPES)
            .filter_map(|i| {
                let (r, t) = (
                    self.rx[i].load(Ordering::Relaxed),
                    self.tx[i].load(Ordering::Relaxed),
                );
                if r == 0 && t == 0 {
                    return None;
                }
                let name = if i < TYPES {
                    ofp::msg_type::name(i as u8)
                } else {
                    "other"
                };
                Some((name, r, t))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ty: u8, len: u16) -> Vec<u8> {
        let mut v = vec![4, ty];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 1]);
        v.resize(usize::from(len.max(8)), 0);
        v
    }

    #[test]
    fn counts_each_message_of_a_batch_and_stops_at_a_bad_length() {
        let c = OfMessageCounters::default();
        let mut b = header(14, 16);
        b.extend(header(14, 8));
        b.extend(header(20, 8));
        c.sent(&b);
        c.received(10);
        c.received(200);
        let s = c.snapshot();
        assert!(s.contains(&(ofp::msg_type::name(14), 0, 2)), "{s:?}");
        assert!(s.contains(&(ofp::msg_type::name(20), 0, 1)), "{s:?}");
        assert!(s.contains(&(ofp::msg_type::name(10), 1, 0)), "{s:?}");
        assert!(s.contains(&("other", 1, 0)), "{s:?}");
        // A length beyond the buffer, or below a header, ends the walk.
        let c = OfMessageCounters::default();
        let mut b = header(14, 8);
        b.extend_from_slice(&[4, 13, 0xff, 0xff, 0, 0, 0, 2]);
        c.sent(&b);
        c.sent(&[4, 13, 0, 4, 0, 0, 0, 3, 4, 13, 0, 8, 0, 0, 0, 4]);
        c.sent(&[4, 13, 0]);
        assert_eq!(c.snapshot(), vec![(ofp::msg_type::name(14), 0, 1)]);
    }
}
