//! Flow cookie layout: which of Shoal's flows a cookie belongs to.
//!
//! ```text
//!  63            48 47    40 39                                   0
//! +----------------+--------+--------------------------------------+
//! | 0x5348 ("SH")  |  kind  |  sequence (unique per installation)  |
//! +----------------+--------+--------------------------------------+
//! ```
//!
//! Kinds `0x10..=0x1f` are reserved for migration traffic (reservations
//! made by the orchestrator); the monitor excludes them from λ.

/// The namespace tag in the top 16 bits of every Shoal cookie.
pub const TAG: u64 = 0x5348 << 48;
/// Mask selecting the tag.
pub const TAG_MASK: u64 = 0xffff << 48;
/// Mask selecting tag and kind.
pub const KIND_MASK: u64 = 0x00ff_ffff << 40;
/// Mask selecting the sequence number.
pub const SEQ_MASK: u64 = (1 << 40) - 1;

/// Base flows: table-miss, LLDP to controller, inter-switch port dispatch.
pub const KIND_BASE: u8 = 0x01;
/// Broadcast flows along the spanning tree.
pub const KIND_BCAST: u8 = 0x02;
/// First-hop (source MAC, destination MAC) flows: the flows λ is read from.
pub const KIND_PAIR: u8 = 0x03;
/// Destination-based flows on the other switches of a path.
pub const KIND_DEST: u8 = 0x04;
/// First migration kind (the reserved range is `0x10..=0x1f`).
pub const KIND_MIGRATION_FIRST: u8 = 0x10;

/// Value of the reserved migration range (with [`MIGRATION_MASK`]).
pub const MIGRATION_VALUE: u64 = TAG | ((KIND_MIGRATION_FIRST as u64) << 40);
/// Mask of the reserved migration range: tag plus the kind's high nibble.
pub const MIGRATION_MASK: u64 = TAG_MASK | (0xf0 << 40);

/// The cookie of kind `kind` with sequence `seq` (truncated to 40 bits).
pub const fn make(kind: u8, seq: u64) -> u64 {
    TAG | ((kind as u64) << 40) | (seq & SEQ_MASK)
}

/// The value to match all cookies of `kind` (use with [`KIND_MASK`]).
pub const fn kind_value(kind: u8) -> u64 {
    make(kind, 0)
}

/// The kind of a Shoal cookie, or `None` for a foreign cookie.
pub const fn kind_of(cookie: u64) -> Option<u8> {
    if cookie & TAG_MASK == TAG {
        Some(((cookie >> 40) & 0xff) as u8)
    } else {
        None
    }
}

/// Hands out unique sequence numbers for cookies.
#[derive(Debug, Default, Clone)]
pub struct CookieJar {
    next: u64,
}

impl CookieJar {
    /// A jar starting at `start` (e.g. derived from the start time, so a
    /// restarted controller does not reuse cookies of flows still installed).
    pub fn starting_at(start: u64) -> Self {
        CookieJar {
            next: start & SEQ_MASK,
        }
    }

    /// A fresh cookie of `kind`.
    pub fn next(&mut self, kind: u8) -> u64 {
        self.next = (self.next + 1) & SEQ_MASK;
        if self.next == 0 {
            self.next = 1;
        }
        make(kind, self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let c = make(KIND_PAIR, 7);
        assert_eq!(c, 0x5348_0300_0000_0007);
        assert_eq!(kind_of(c), Some(KIND_PAIR));
        assert_eq!(c & KIND_MASK, kind_value(KIND_PAIR));
        assert_eq!(kind_of(0x1234), None);
        // Migration range: every kind 0x10..=0x1f matches, nothing else.
        for k in 0u8..=0xff {
            let hit = make(k, 99) & MIGRATION_MASK == MIGRATION_VALUE;
            assert_eq!(hit, (0x10..=0x1f).contains(&k), "kind {k:#x}");
        }
    }

    #[test]
    fn jar_is_unique_and_wraps_past_zero() {
        let mut j = CookieJar::starting_at(SEQ_MASK - 1);
        let a = j.next(KIND_PAIR);
        let b = j.next(KIND_PAIR);
        assert_ne!(a, b);
        assert_eq!(b & SEQ_MASK, 1);
    }
}
