//! Zero-allocation iteration over the entries of a FLOW multipart reply.

use crate::error::DecodeError;
use crate::header::{msg_type, Header};
use crate::mac::MacAddr;
use crate::multipart::{fs, mp, multipart_type, next_entry, FlowStats};
use crate::oxm::{match_region, oxm_field, region_in_port, region_mac};
use crate::wire::View;
use crate::{HEADER_LEN, OFP_VERSION};

/// Iterates over the entries of a whole `OFPMP_FLOW` reply message (header
/// included) without allocating. Checks the header (version, type, length)
/// and the multipart type first. Each item is an entry whose fixed part and
/// match header were checked against its length field; after the first
/// error the iterator ends.
pub fn flow_stats_entries(msg: &[u8]) -> Result<FlowStatsEntries<'_>, DecodeError> {
    let h = Header::parse(msg)?;
    if h.version != OFP_VERSION {
        return Err(DecodeError::BadVersion(h.version));
    }
    if h.msg_type != msg_type::MULTIPART_REPLY {
        return Err(DecodeError::BadType {
            what: "message type (want MULTIPART_REPLY)",
            value: h.msg_type.into(),
        });
    }
    let len = usize::from(h.length);
    if len < HEADER_LEN {
        return Err(DecodeError::BadLength {
            what: "message",
            len,
        });
    }
    let msg = msg.get(..len).ok_or(DecodeError::Truncated {
        what: "message",
        need: len,
        have: msg.len(),
    })?;
    let body = msg.get(HEADER_LEN..).unwrap_or_default();
    let v = View::new(body, mp::BODY, "multipart_reply")?;
    let ty = v.u16(mp::TYPE);
    if ty != multipart_type::FLOW {
        return Err(DecodeError::BadType {
            what: "multipart type (want FLOW)",
            value: ty.into(),
        });
    }
    Ok(FlowStatsEntries {
        rest: v.tail(mp::BODY),
        flags: v.u16(mp::FLAGS),
    })
}

/// Iterator returned by [`flow_stats_entries`].
#[derive(Clone, Debug)]
pub struct FlowStatsEntries<'a> {
    rest: &'a [u8],
    flags: u16,
}

impl FlowStatsEntries<'_> {
    /// The multipart flags of the reply (MORE = 1).
    pub fn flags(&self) -> u16 {
        self.flags
    }
    /// Whether the MORE flag is set.
    pub fn more(&self) -> bool {
        self.flags & crate::multipart::multipart_flags::MORE != 0
    }
}

impl<'a> Iterator for FlowStatsEntries<'a> {
    type Item = Result<FlowStatsRef<'a>, DecodeError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = next_entry(self.rest, fs::LENGTH, fs::MATCH, "flow_stats").and_then(|(e, rest)| {
            let fields = FlowStatsRef::new(e)?;
            self.rest = rest;
            Ok(fields)
        });
        if r.is_err() {
            self.rest = &[];
        }
        Some(r)
    }
}

impl std::iter::FusedIterator for FlowStatsEntries<'_> {}

/// A borrowed, checked `ofp_flow_stats` entry.
#[derive(Clone, Copy, Debug)]
pub struct FlowStatsRef<'a> {
    entry: View<'a>,
    raw: &'a [u8],
    oxms: &'a [u8],
}

impl<'a> FlowStatsRef<'a> {
    #[inline]
    fn new(e: &'a [u8]) -> Result<Self, DecodeError> {
        let entry = View::new(e, fs::MATCH, "flow_stats")?;
        let (oxms, _) = match_region(entry.tail(fs::MATCH))?;
        Ok(FlowStatsRef {
            entry,
            raw: e,
            oxms,
        })
    }
    /// Cookie.
    #[inline]
    pub fn cookie(&self) -> u64 {
        self.entry.u64(fs::COOKIE)
    }
    /// Packets matched.
    #[inline]
    pub fn packet_count(&self) -> u64 {
        self.entry.u64(fs::PACKET_COUNT)
    }
    /// Bytes matched.
    #[inline]
    pub fn byte_count(&self) -> u64 {
        self.entry.u64(fs::BYTE_COUNT)
    }
    /// Table.
    #[inline]
    pub fn table_id(&self) -> u8 {
        self.entry.u8(fs::TABLE_ID)
    }
    /// Priority.
    #[inline]
    pub fn priority(&self) -> u16 {
        self.entry.u16(fs::PRIORITY)
    }
    /// Seconds alive.
    #[inline]
    pub fn duration_sec(&self) -> u32 {
        self.entry.u32(fs::DURATION_SEC)
    }
    /// Nanoseconds beyond `duration_sec`.
    #[inline]
    pub fn duration_nsec(&self) -> u32 {
        self.entry.u32(fs::DURATION_NSEC)
    }
    /// Idle timeout.
    #[inline]
    pub fn idle_timeout(&self) -> u16 {
        self.entry.u16(fs::IDLE_TIMEOUT)
    }
    /// Hard timeout.
    #[inline]
    pub fn hard_timeout(&self) -> u16 {
        self.entry.u16(fs::HARD_TIMEOUT)
    }
    /// Flags.
    #[inline]
    pub fn flags(&self) -> u16 {
        self.entry.u16(fs::FLAGS)
    }
    /// Unmasked `IN_PORT` of the match, if present.
    #[inline]
    pub fn in_port(&self) -> Option<u32> {
        region_in_port(self.oxms)
    }
    /// Unmasked `ETH_SRC` of the match, if present.
    #[inline]
    pub fn eth_src(&self) -> Option<MacAddr> {
        region_mac(self.oxms, oxm_field::ETH_SRC)
    }
    /// Unmasked `ETH_DST` of the match, if present.
    #[inline]
    pub fn eth_dst(&self) -> Option<MacAddr> {
        region_mac(self.oxms, oxm_field::ETH_DST)
    }
    /// The entry's wire bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
    /// Decodes the entry fully (match and instructions).
    pub fn to_owned(&self) -> Result<FlowStats, DecodeError> {
        FlowStats::decode(self.raw)
    }
}
