//! OFPT_MULTIPART_REQUEST / OFPT_MULTIPART_REPLY bodies.

use crate::action::{decode_instructions, encode_instructions, Instruction};
use crate::error::{DecodeError, EncodeError};
use crate::flow::TABLE_ALL;
use crate::meter_group::{
    decode_bands, decode_buckets, encode_bands, encode_buckets, Bucket, GroupType, MeterBand,
};
use crate::oxm::Match;
use crate::port::PortDesc;
use crate::wire::{self, put_fixed, View};
use crate::{port_no, GROUP_ANY};

/// Multipart types (`OFPMP_*`).
pub mod multipart_type {
    /// Switch description.
    pub const DESC: u16 = 0;
    /// Individual flow statistics.
    pub const FLOW: u16 = 1;
    /// Aggregate flow statistics.
    pub const AGGREGATE: u16 = 2;
    /// Flow table statistics.
    pub const TABLE: u16 = 3;
    /// Port statistics.
    pub const PORT_STATS: u16 = 4;
    /// Queue statistics.
    pub const QUEUE: u16 = 5;
    /// Group counter statistics.
    pub const GROUP: u16 = 6;
    /// Group descriptions.
    pub const GROUP_DESC: u16 = 7;
    /// Group features.
    pub const GROUP_FEATURES: u16 = 8;
    /// Meter statistics.
    pub const METER: u16 = 9;
    /// Meter configuration.
    pub const METER_CONFIG: u16 = 10;
    /// Meter features.
    pub const METER_FEATURES: u16 = 11;
    /// Table features.
    pub const TABLE_FEATURES: u16 = 12;
    /// Port descriptions.
    pub const PORT_DESC: u16 = 13;
    /// Experimenter extension.
    pub const EXPERIMENTER: u16 = 0xffff;
}

/// Multipart flags.
pub mod multipart_flags {
    /// More requests/replies follow.
    pub const MORE: u16 = 1;
}

/// `OFPQ_ALL`: all queues.
pub const QUEUE_ALL: u32 = 0xffff_ffff;

/// Offsets of the multipart header (after the OpenFlow header).
pub(crate) mod mp {
    pub const TYPE: usize = 0;
    pub const FLAGS: usize = 2;
    pub const BODY: usize = 8;
}

/// Splits the entry at the start of `buf` whose u16 length sits at `len_at`;
/// returns (entry, rest).
#[inline]
pub(crate) fn next_entry<'a>(
    buf: &'a [u8],
    len_at: usize,
    min: usize,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), DecodeError> {
    let h = View::new(buf, len_at + 2, what)?;
    let len = h.u16(len_at) as usize;
    if len < min {
        return Err(DecodeError::BadLength { what, len });
    }
    let entry = wire::slice(buf, 0, len, what)?;
    Ok((entry, buf.get(len..).unwrap_or_default()))
}

/// Decodes a region of self-delimited entries.
fn entries<T>(
    mut buf: &[u8],
    len_at: usize,
    min: usize,
    what: &'static str,
    dec: impl Fn(&[u8]) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let mut v = Vec::new();
    while !buf.is_empty() {
        let (e, rest) = next_entry(buf, len_at, min, what)?;
        v.push(dec(e)?);
        buf = rest;
    }
    Ok(v)
}

/// Decodes a region of fixed-size records.
fn records<T>(
    buf: &[u8],
    size: usize,
    what: &'static str,
    dec: impl Fn(View<'_>) -> T,
) -> Result<Vec<T>, DecodeError> {
    if !buf.len().is_multiple_of(size) {
        return Err(DecodeError::BadLength {
            what,
            len: buf.len(),
        });
    }
    buf.chunks_exact(size)
        .map(|c| View::exact(c, size, what).map(&dec))
        .collect()
}

// ---------------------------------------------------------------- requests

/// Offsets of `ofp_flow_stats_request` / `ofp_aggregate_stats_request`.
mod fsr {
    pub const TABLE_ID: usize = 0;
    pub const OUT_PORT: usize = 4;
    pub const OUT_GROUP: usize = 8;
    pub const COOKIE: usize = 16;
    pub const COOKIE_MASK: usize = 24;
    pub const MATCH: usize = 32;
}

/// Body of a FLOW or AGGREGATE multipart request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowStatsRequest {
    /// Table to read ([`TABLE_ALL`] = 0xff for all).
    pub table_id: u8,
    /// Require an output to this port ([`port_no::ANY`]: no filter).
    pub out_port: u32,
    /// Require an output to this group ([`GROUP_ANY`]: no filter).
    pub out_group: u32,
    /// Cookie to match under `cookie_mask`.
    pub cookie: u64,
    /// Cookie bits that must match (0: no filter).
    pub cookie_mask: u64,
    /// Flows must match this (non-strictly).
    pub match_: Match,
}

impl Default for FlowStatsRequest {
    /// All tables, any port/group, no cookie filter, empty match.
    fn default() -> Self {
        FlowStatsRequest {
            table_id: TABLE_ALL,
            out_port: port_no::ANY,
            out_group: GROUP_ANY,
            cookie: 0,
            cookie_mask: 0,
            match_: Match::new(),
        }
    }
}

impl FlowStatsRequest {
    fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let v = View::new(body, fsr::MATCH, "flow_stats_request")?;
        let (match_, mlen) = Match::decode(v.tail(fsr::MATCH))?;
        let extra = body.len().saturating_sub(fsr::MATCH + mlen);
        if extra != 0 {
            return Err(DecodeError::TrailingBytes {
                what: "flow_stats_request",
                extra,
            });
        }
        Ok(FlowStatsRequest {
            table_id: v.u8(fsr::TABLE_ID),
            out_port: v.u32(fsr::OUT_PORT),
            out_group: v.u32(fsr::OUT_GROUP),
            cookie: v.u64(fsr::COOKIE),
            cookie_mask: v.u64(fsr::COOKIE_MASK),
            match_,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut f = put_fixed(out, fsr::MATCH);
        f.u8(fsr::TABLE_ID, self.table_id);
        f.u32(fsr::OUT_PORT, self.out_port);
        f.u32(fsr::OUT_GROUP, self.out_group);
        f.u64(fsr::COOKIE, self.cookie);
        f.u64(fsr::COOKIE_MASK, self.cookie_mask);
        self.match_.encode(out)
    }
}

/// The 8-byte request bodies that carry one id first (port, group, meter)
/// or two (queue: port and queue id).
mod id_req {
    pub const FIRST: usize = 0;
    pub const SECOND: usize = 4;
    pub const SIZE: usize = 8;
}

/// Body of an OFPT_MULTIPART_REQUEST.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MultipartRequestBody {
    /// `OFPMP_DESC`.
    Desc,
    /// `OFPMP_FLOW`.
    Flow(FlowStatsRequest),
    /// `OFPMP_AGGREGATE`.
    Aggregate(FlowStatsRequest),
    /// `OFPMP_TABLE`.
    Table,
    /// `OFPMP_PORT_STATS` for one port or [`port_no::ANY`].
    PortStats {
        /// Port.
        port_no: u32,
    },
    /// `OFPMP_QUEUE`.
    Queue {
        /// Port ([`port_no::ANY`] for all).
        port_no: u32,
        /// Queue ([`QUEUE_ALL`] for all).
        queue_id: u32,
    },
    /// `OFPMP_GROUP`.
    Group {
        /// Group ([`crate::GROUP_ALL`] for all).
        group_id: u32,
    },
    /// `OFPMP_GROUP_DESC`.
    GroupDesc,
    /// `OFPMP_METER`.
    Meter {
        /// Meter ([`crate::METER_ALL`] for all).
        meter_id: u32,
    },
    /// `OFPMP_METER_CONFIG`.
    MeterConfig {
        /// Meter ([`crate::METER_ALL`] for all).
        meter_id: u32,
    },
    /// `OFPMP_METER_FEATURES`.
    MeterFeatures,
    /// `OFPMP_TABLE_FEATURES`: raw `ofp_table_features` entries (empty to
    /// just read them).
    TableFeatures(Vec<u8>),
    /// `OFPMP_PORT_DESC`.
    PortDesc,
    /// Any other type (or a known type with an unexpected body): kept raw.
    Other {
        /// Multipart type.
        mp_type: u16,
        /// Body.
        body: Vec<u8>,
    },
}

impl MultipartRequestBody {
    /// The multipart type number.
    pub fn mp_type(&self) -> u16 {
        use multipart_type as t;
        match self {
            Self::Desc => t::DESC,
            Self::Flow(_) => t::FLOW,
            Self::Aggregate(_) => t::AGGREGATE,
            Self::Table => t::TABLE,
            Self::PortStats { .. } => t::PORT_STATS,
            Self::Queue { .. } => t::QUEUE,
            Self::Group { .. } => t::GROUP,
            Self::GroupDesc => t::GROUP_DESC,
            Self::Meter { .. } => t::METER,
            Self::MeterConfig { .. } => t::METER_CONFIG,
            Self::MeterFeatures => t::METER_FEATURES,
            Self::TableFeatures(_) => t::TABLE_FEATURES,
            Self::PortDesc => t::PORT_DESC,
            Self::Other { mp_type, .. } => *mp_type,
        }
    }

    fn decode(ty: u16, body: &[u8]) -> Result<Self, DecodeError> {
        use multipart_type as t;
        let other = || Self::Other {
            mp_type: ty,
            body: body.to_vec(),
        };
        let empty = |b: Self| if body.is_empty() { b } else { other() };
        let ids = View::exact(body, id_req::SIZE, "multipart request").ok();
        let id1 = ids.map(|v| v.u32(id_req::FIRST));
        Ok(match ty {
            t::DESC => empty(Self::Desc),
            t::FLOW => Self::Flow(FlowStatsRequest::decode(body)?),
            t::AGGREGATE => Self::Aggregate(FlowStatsRequest::decode(body)?),
            t::TABLE => empty(Self::Table),
            t::GROUP_DESC => empty(Self::GroupDesc),
            t::METER_FEATURES => empty(Self::MeterFeatures),
            t::PORT_DESC => empty(Self::PortDesc),
            t::TABLE_FEATURES => Self::TableFeatures(body.to_vec()),
            t::PORT_STATS => id1.map_or_else(other, |port_no| Self::PortStats { port_no }),
            t::GROUP => id1.map_or_else(other, |group_id| Self::Group { group_id }),
            t::METER => id1.map_or_else(other, |meter_id| Self::Meter { meter_id }),
            t::METER_CONFIG => id1.map_or_else(other, |meter_id| Self::MeterConfig { meter_id }),
            t::QUEUE => ids.map_or_else(other, |v| Self::Queue {
                port_no: v.u32(id_req::FIRST),
                queue_id: v.u32(id_req::SECOND),
            }),
            _ => other(),
        })
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let ids = |out: &mut Vec<u8>, a: u32, b: u32| {
            let mut f = put_fixed(out, id_req::SIZE);
            f.u32(id_req::FIRST, a);
            f.u32(id_req::SECOND, b);
        };
        match self {
            Self::Desc | Self::Table | Self::GroupDesc | Self::MeterFeatures | Self::PortDesc => {}
            Self::Flow(r) | Self::Aggregate(r) => r.encode(out)?,
            Self::PortStats { port_no } => ids(out, *port_no, 0),
            Self::Queue { port_no, queue_id } => ids(out, *port_no, *queue_id),
            Self::Group { group_id } => ids(out, *group_id, 0),
            Self::Meter { meter_id } | Self::MeterConfig { meter_id } => ids(out, *meter_id, 0),
            Self::TableFeatures(b) | Self::Other { body: b, .. } => out.extend_from_slice(b),
        }
        Ok(())
    }
}

/// An OFPT_MULTIPART_REQUEST body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MultipartRequest {
    /// [`multipart_flags`].
    pub flags: u16,
    /// Typed body.
    pub body: MultipartRequestBody,
}

impl MultipartRequest {
    /// A request with no flags.
    pub fn new(body: MultipartRequestBody) -> Self {
        MultipartRequest { flags: 0, body }
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let v = View::new(body, mp::BODY, "multipart_request")?;
        Ok(MultipartRequest {
            flags: v.u16(mp::FLAGS),
            body: MultipartRequestBody::decode(v.u16(mp::TYPE), v.tail(mp::BODY))?,
        })
    }
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut f = put_fixed(out, mp::BODY);
        f.u16(mp::TYPE, self.body.mp_type());
        f.u16(mp::FLAGS, self.flags);
        self.body.encode(out)
    }
}

// ----------------------------------------------------------------- replies

/// Sizes of the `ofp_desc` strings.
mod desc {
    pub const MFR: usize = 0;
    pub const HW: usize = 256;
    pub const SW: usize = 512;
    pub const SERIAL: usize = 768;
    pub const DP: usize = 800;
    pub const STR_LEN: usize = 256;
    pub const SERIAL_LEN: usize = 32;
    pub const SIZE: usize = 1056;
}

/// `OFPMP_DESC` reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct DescStats {
    /// Manufacturer.
    pub mfr_desc: String,
    /// Hardware.
    pub hw_desc: String,
    /// Software.
    pub sw_desc: String,
    /// Serial number.
    pub serial_num: String,
    /// Human readable datapath description.
    pub dp_desc: String,
}

impl DescStats {
    fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let v = View::exact(b, desc::SIZE, "desc")?;
        let s = |at, len| wire::fixed_str(v.bytes(at, len));
        Ok(DescStats {
            mfr_desc: s(desc::MFR, desc::STR_LEN),
            hw_desc: s(desc::HW, desc::STR_LEN),
            sw_desc: s(desc::SW, desc::STR_LEN),
            serial_num: s(desc::SERIAL, desc::SERIAL_LEN),
            dp_desc: s(desc::DP, desc::STR_LEN),
        })
    }
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        wire::check_str(&self.mfr_desc, desc::STR_LEN, "mfr_desc")?;
        wire::check_str(&self.hw_desc, desc::STR_LEN, "hw_desc")?;
        wire::check_str(&self.sw_desc, desc::STR_LEN, "sw_desc")?;
        wire::check_str(&self.serial_num, desc::SERIAL_LEN, "serial_num")?;
        wire::check_str(&self.dp_desc, desc::STR_LEN, "dp_desc")?;
        let mut f = put_fixed(out, desc::SIZE);
        f.bytes(desc::MFR, self.mfr_desc.as_bytes());
        f.bytes(desc::HW, self.hw_desc.as_bytes());
        f.bytes(desc::SW, self.sw_desc.as_bytes());
        f.bytes(desc::SERIAL, self.serial_num.as_bytes());
        f.bytes(desc::DP, self.dp_desc.as_bytes());
        Ok(())
    }
}

/// Offsets of `ofp_flow_stats`.
pub(crate) mod fs {
    pub const LENGTH: usize = 0;
    pub const TABLE_ID: usize = 2;
    pub const DURATION_SEC: usize = 4;
    pub const DURATION_NSEC: usize = 8;
    pub const PRIORITY: usize = 12;
    pub const IDLE_TIMEOUT: usize = 14;
    pub const HARD_TIMEOUT: usize = 16;
    pub const FLAGS: usize = 18;
    pub const COOKIE: usize = 24;
    pub const PACKET_COUNT: usize = 32;
    pub const BYTE_COUNT: usize = 40;
    pub const MATCH: usize = 48;
}

/// One entry of a `OFPMP_FLOW` reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowStats {
    /// Table.
    pub table_id: u8,
    /// Seconds the flow has been alive.
    pub duration_sec: u32,
    /// Nanoseconds beyond `duration_sec`.
    pub duration_nsec: u32,
    /// Priority.
    pub priority: u16,
    /// Idle timeout.
    pub idle_timeout: u16,
    /// Hard timeout.
    pub hard_timeout: u16,
    /// [`crate::flow_mod_flags`].
    pub flags: u16,
    /// Cookie.
    pub cookie: u64,
    /// Packets matched.
    pub packet_count: u64,
    /// Bytes matched.
    pub byte_count: u64,
    /// Match.
    pub match_: Match,
    /// Instructions.
    pub instructions: Vec<Instruction>,
}

impl FlowStats {
    /// Decodes one entry (exactly the bytes its length field delimits).
    pub(crate) fn decode(e: &[u8]) -> Result<Self, DecodeError> {
        let v = View::new(e, fs::MATCH, "flow_stats")?;
        let (match_, mlen) = Match::decode(v.tail(fs::MATCH))?;
        let instructions =
            decode_instructions(wire::rest(e, fs::MATCH + mlen, "flow_stats instructions")?)?;
        Ok(FlowStats {
            table_id: v.u8(fs::TABLE_ID),
            duration_sec: v.u32(fs::DURATION_SEC),
            duration_nsec: v.u32(fs::DURATION_NSEC),
            priority: v.u16(fs::PRIORITY),
            idle_timeout: v.u16(fs::IDLE_TIMEOUT),
            hard_timeout: v.u16(fs::HARD_TIMEOUT),
            flags: v.u16(fs::FLAGS),
            cookie: v.u64(fs::COOKIE),
            packet_count: v.u64(fs::PACKET_COUNT),
            byte_count: v.u64(fs::BYTE_COUNT),
            match_,
            instructions,
        })
    }

    /// Appends the entry.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let mut f = put_fixed(out, fs::MATCH);
        f.u8(fs::TABLE_ID, self.table_id);
        f.u32(fs::DURATION_SEC, self.duration_sec);
        f.u32(fs::DURATION_NSEC, self.duration_nsec);
        f.u16(fs::PRIORITY, self.priority);
        f.u16(fs::IDLE_TIMEOUT, self.idle_timeout);
        f.u16(fs::HARD_TIMEOUT, self.hard_timeout);
        f.u16(fs::FLAGS, self.flags);
        f.u64(fs::COOKIE, self.cookie);
        f.u64(fs::PACKET_COUNT, self.packet_count);
        f.u64(fs::BYTE_COUNT, self.byte_count);
        self.match_.encode(out)?;
        encode_instructions(&self.instructions, out)?;
        wire::finish_len(out, start, fs::LENGTH, false, "flow_stats")
    }
}

/// Offsets of `ofp_aggregate_stats_reply`.
mod agg {
    pub const PACKET_COUNT: usize = 0;
    pub const BYTE_COUNT: usize = 8;
    pub const FLOW_COUNT: usize = 16;
    pub const SIZE: usize = 24;
}

/// `OFPMP_AGGREGATE` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AggregateStats {
    /// Packets matched by the flows.
    pub packet_count: u64,
    /// Bytes matched by the flows.
    pub byte_count: u64,
    /// Number of flows.
    pub flow_count: u32,
}

/// Offsets of `ofp_table_stats`.
mod ts {
    pub const TABLE_ID: usize = 0;
    pub const ACTIVE_COUNT: usize = 4;
    pub const LOOKUP_COUNT: usize = 8;
    pub const MATCHED_COUNT: usize = 16;
    pub const SIZE: usize = 24;
}

/// One entry of a `OFPMP_TABLE` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TableStats {
    /// Table.
    pub table_id: u8,
    /// Active entries.
    pub active_count: u32,
    /// Packets looked up.
    pub lookup_count: u64,
    /// Packets that hit.
    pub matched_count: u64,
}

/// Offsets of `ofp_port_stats`.
mod ps {
    pub const PORT_NO: usize = 0;
    pub const RX_PACKETS: usize = 8;
    pub const TX_PACKETS: usize = 16;
    pub const RX_BYTES: usize = 24;
    pub const TX_BYTES: usize = 32;
    pub const RX_DROPPED: usize = 40;
    pub const TX_DROPPED: usize = 48;
    pub const RX_ERRORS: usize = 56;
    pub const TX_ERRORS: usize = 64;
    pub const RX_FRAME_ERR: usize = 72;
    pub const RX_OVER_ERR: usize = 80;
    pub const RX_CRC_ERR: usize = 88;
    pub const COLLISIONS: usize = 96;
    pub const DURATION_SEC: usize = 104;
    pub const DURATION_NSEC: usize = 108;
    pub const SIZE: usize = 112;
}

/// One entry of a `OFPMP_PORT_STATS` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PortStats {
    /// Port.
    pub port_no: u32,
    /// Received packets.
    pub rx_packets: u64,
    /// Transmitted packets.
    pub tx_packets: u64,
    /// Received bytes.
    pub rx_bytes: u64,
    /// Transmitted bytes.
    pub tx_bytes: u64,
    /// Packets dropped by RX.
    pub rx_dropped: u64,
    /// Packets dropped by TX.
    pub tx_dropped: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Frame alignment errors.
    pub rx_frame_err: u64,
    /// Packets with RX overrun.
    pub rx_over_err: u64,
    /// CRC errors.
    pub rx_crc_err: u64,
    /// Collisions.
    pub collisions: u64,
    /// Seconds the port has been alive.
    pub duration_sec: u32,
    /// Nanoseconds beyond `duration_sec`.
    pub duration_nsec: u32,
}

/// Offsets of `ofp_queue_stats`.
mod qs {
    pub const PORT_NO: usize = 0;
    pub const QUEUE_ID: usize = 4;
    pub const TX_BYTES: usize = 8;
    pub const TX_PACKETS: usize = 16;
    pub const TX_ERRORS: usize = 24;
    pub const DURATION_SEC: usize = 32;
    pub const DURATION_NSEC: usize = 36;
    pub const SIZE: usize = 40;
}

/// One entry of a `OFPMP_QUEUE` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct QueueStats {
    /// Port.
    pub port_no: u32,
    /// Queue.
    pub queue_id: u32,
    /// Transmitted bytes.
    pub tx_bytes: u64,
    /// Transmitted packets.
    pub tx_packets: u64,
    /// Packets dropped due to overrun.
    pub tx_errors: u64,
    /// Seconds the queue has been alive.
    pub duration_sec: u32,
    /// Nanoseconds beyond `duration_sec`.
    pub duration_nsec: u32,
}

/// Offsets of `ofp_group_stats`.
mod gs {
    pub const LENGTH: usize = 0;
    pub const GROUP_ID: usize = 4;
    pub const REF_COUNT: usize = 8;
    pub const PACKET_COUNT: usize = 16;
    pub const BYTE_COUNT: usize = 24;
    pub const DURATION_SEC: usize = 32;
    pub const DURATION_NSEC: usize = 36;
    pub const BUCKET_STATS: usize = 40;
}

/// Offsets of `ofp_bucket_counter` and `ofp_meter_band_stats` (same layout).
mod counter {
    pub const PACKETS: usize = 0;
    pub const BYTES: usize = 8;
    pub const SIZE: usize = 16;
}

/// Per-bucket counters of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BucketCounter {
    /// Packets processed by the bucket.
    pub packet_count: u64,
    /// Bytes processed by the bucket.
    pub byte_count: u64,
}

/// One entry of a `OFPMP_GROUP` reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct GroupStats {
    /// Group.
    pub group_id: u32,
    /// Flows or groups that forward to it.
    pub ref_count: u32,
    /// Packets processed.
    pub packet_count: u64,
    /// Bytes processed.
    pub byte_count: u64,
    /// Seconds the group has been alive.
    pub duration_sec: u32,
    /// Nanoseconds beyond `duration_sec`.
    pub duration_nsec: u32,
    /// Per-bucket counters.
    pub bucket_stats: Vec<BucketCounter>,
}

/// Offsets of `ofp_group_desc`.
mod gd {
    pub const LENGTH: usize = 0;
    pub const TYPE: usize = 2;
    pub const GROUP_ID: usize = 4;
    pub const BUCKETS: usize = 8;
}

/// One entry of a `OFPMP_GROUP_DESC` reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupDesc {
    /// Group type.
    pub group_type: GroupType,
    /// Group.
    pub group_id: u32,
    /// Buckets.
    pub buckets: Vec<Bucket>,
}

/// Offsets of `ofp_meter_stats`.
mod ms {
    pub const METER_ID: usize = 0;
    pub const LEN: usize = 4;
    pub const FLOW_COUNT: usize = 12;
    pub const PACKET_IN_COUNT: usize = 16;
    pub const BYTE_IN_COUNT: usize = 24;
    pub const DURATION_SEC: usize = 32;
    pub const DURATION_NSEC: usize = 36;
    pub const BAND_STATS: usize = 40;
}

/// Per-band counters of a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BandStats {
    /// Packets in the band.
    pub packet_band_count: u64,
    /// Bytes in the band.
    pub byte_band_count: u64,
}

/// One entry of a `OFPMP_METER` reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MeterStats {
    /// Meter.
    pub meter_id: u32,
    /// Flows bound to the meter.
    pub flow_count: u32,
    /// Packets in input.
    pub packet_in_count: u64,
    /// Bytes in input.
    pub byte_in_count: u64,
    /// Seconds the meter has been alive.
    pub duration_sec: u32,
    /// Nanoseconds beyond `duration_sec`.
    pub duration_nsec: u32,
    /// Per-band counters.
    pub band_stats: Vec<BandStats>,
}

/// Offsets of `ofp_meter_config`.
mod mc {
    pub const LENGTH: usize = 0;
    pub const FLAGS: usize = 2;
    pub const METER_ID: usize = 4;
    pub const BANDS: usize = 8;
}

/// One entry of a `OFPMP_METER_CONFIG` reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeterConfig {
    /// [`crate::meter_flags`].
    pub flags: u16,
    /// Meter.
    pub meter_id: u32,
    /// Bands.
    pub bands: Vec<MeterBand>,
}

/// Offsets of `ofp_meter_features`.
mod mf {
    pub const MAX_METER: usize = 0;
    pub const BAND_TYPES: usize = 4;
    pub const CAPABILITIES: usize = 8;
    pub const MAX_BANDS: usize = 12;
    pub const MAX_COLOR: usize = 13;
    pub const SIZE: usize = 16;
}

/// `OFPMP_METER_FEATURES` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MeterFeatures {
    /// Maximum number of meters.
    pub max_meter: u32,
    /// Bitmap of `1 << OFPMBT_*` supported.
    pub band_types: u32,
    /// Bitmap of [`crate::meter_flags`] supported.
    pub capabilities: u32,
    /// Maximum bands per meter.
    pub max_bands: u8,
    /// Maximum color value.
    pub max_color: u8,
}

/// Body of an OFPT_MULTIPART_REPLY.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MultipartReplyBody {
    /// `OFPMP_DESC`.
    Desc(DescStats),
    /// `OFPMP_FLOW`.
    Flow(Vec<FlowStats>),
    /// `OFPMP_AGGREGATE`.
    Aggregate(AggregateStats),
    /// `OFPMP_PORT_STATS`.
    PortStats(Vec<PortStats>),
    /// `OFPMP_QUEUE`.
    Queue(Vec<QueueStats>),
    /// `OFPMP_METER`.
    Meter(Vec<MeterStats>),
    /// `OFPMP_METER_CONFIG`.
    MeterConfig(Vec<MeterConfig>),
    /// `OFPMP_PORT_DESC`.
    PortDesc(Vec<PortDesc>),
    /// `OFPMP_TABLE_FEATURES`: raw `ofp_table_features` entries.
    TableFeatures(Vec<u8>),
    /// `OFPMP_TABLE`.
    Table(Vec<TableStats>),
    /// `OFPMP_GROUP`.
    Group(Vec<GroupStats>),
    /// `OFPMP_GROUP_DESC`.
    GroupDesc(Vec<GroupDesc>),
    /// `OFPMP_METER_FEATURES`.
    MeterFeatures(MeterFeatures),
    /// Any other type: kept raw.
    Other {
        /// Multipart type.
        mp_type: u16,
        /// Body.
        body: Vec<u8>,
    },
}

impl MultipartReplyBody {
    /// The multipart type number.
    pub fn mp_type(&self) -> u16 {
        use multipart_type as t;
        match self {
            Self::Desc(_) => t::DESC,
            Self::Flow(_) => t::FLOW,
            Self::Aggregate(_) => t::AGGREGATE,
            Self::PortStats(_) => t::PORT_STATS,
            Self::Queue(_) => t::QUEUE,
            Self::Meter(_) => t::METER,
            Self::MeterConfig(_) => t::METER_CONFIG,
            Self::PortDesc(_) => t::PORT_DESC,
            Self::TableFeatures(_) => t::TABLE_FEATURES,
            Self::Table(_) => t::TABLE,
            Self::Group(_) => t::GROUP,
            Self::GroupDesc(_) => t::GROUP_DESC,
            Self::MeterFeatures(_) => t::METER_FEATURES,
            Self::Other { mp_type, .. } => *mp_type,
        }
    }

    fn decode(ty: u16, b: &[u8]) -> Result<Self, DecodeError> {
        use multipart_type as t;
        Ok(match ty {
            t::DESC => Self::Desc(DescStats::decode(b)?),
            t::FLOW => Self::Flow(entries(
                b,
                fs::LENGTH,
                fs::MATCH,
                "flow_stats",
                FlowStats::decode,
            )?),
            t::AGGREGATE => {
                let v = View::exact(b, agg::SIZE, "aggregate_stats")?;
                Self::Aggregate(AggregateStats {
                    packet_count: v.u64(agg::PACKET_COUNT),
                    byte_count: v.u64(agg::BYTE_COUNT),
                    flow_count: v.u32(agg::FLOW_COUNT),
                })
            }
            t::TABLE => Self::Table(records(b, ts::SIZE, "table_stats", |v| TableStats {
                table_id: v.u8(ts::TABLE_ID),
                active_count: v.u32(ts::ACTIVE_COUNT),
                lookup_count: v.u64(ts::LOOKUP_COUNT),
                matched_count: v.u64(ts::MATCHED_COUNT),
            })?),
            t::PORT_STATS => Self::PortStats(records(b, ps::SIZE, "port_stats", |v| PortStats {
                port_no: v.u32(ps::PORT_NO),
                rx_packets: v.u64(ps::RX_PACKETS),
                tx_packets: v.u64(ps::TX_PACKETS),
                rx_bytes: v.u64(ps::RX_BYTES),
                tx_bytes: v.u64(ps::TX_BYTES),
                rx_dropped: v.u64(ps::RX_DROPPED),
                tx_dropped: v.u64(ps::TX_DROPPED),
                rx_errors: v.u64(ps::RX_ERRORS),
                tx_errors: v.u64(ps::TX_ERRORS),
                rx_frame_err: v.u64(ps::RX_FRAME_ERR),
                rx_over_err: v.u64(ps::RX_OVER_ERR),
                rx_crc_err: v.u64(ps::RX_CRC_ERR),
                collisions: v.u64(ps::COLLISIONS),
                duration_sec: v.u32(ps::DURATION_SEC),
                duration_nsec: v.u32(ps::DURATION_NSEC),
            })?),
            t::QUEUE => Self::Queue(records(b, qs::SIZE, "queue_stats", |v| QueueStats {
                port_no: v.u32(qs::PORT_NO),
                queue_id: v.u32(qs::QUEUE_ID),
                tx_bytes: v.u64(qs::TX_BYTES),
                tx_packets: v.u64(qs::TX_PACKETS),
                tx_errors: v.u64(qs::TX_ERRORS),
                duration_sec: v.u32(qs::DURATION_SEC),
                duration_nsec: v.u32(qs::DURATION_NSEC),
            })?),
            t::GROUP => Self::Group(entries(
                b,
                gs::LENGTH,
                gs::BUCKET_STATS,
                "group_stats",
                |e| {
                    let v = View::new(e, gs::BUCKET_STATS, "group_stats")?;
                    Ok(GroupStats {
                        group_id: v.u32(gs::GROUP_ID),
                        ref_count: v.u32(gs::REF_COUNT),
                        packet_count: v.u64(gs::PACKET_COUNT),
                        byte_count: v.u64(gs::BYTE_COUNT),
                        duration_sec: v.u32(gs::DURATION_SEC),
                        duration_nsec: v.u32(gs::DURATION_NSEC),
                        bucket_stats: records(
                            v.tail(gs::BUCKET_STATS),
                            counter::SIZE,
                            "bucket_counter",
                            |c| BucketCounter {
                                packet_count: c.u64(counter::PACKETS),
                                byte_count: c.u64(counter::BYTES),
                            },
                        )?,
                    })
                },
            )?),
            t::GROUP_DESC => {
                Self::GroupDesc(entries(b, gd::LENGTH, gd::BUCKETS, "group_desc", |e| {
                    let v = View::new(e, gd::BUCKETS, "group_desc")?;
                    Ok(GroupDesc {
                        group_type: v.u8(gd::TYPE).into(),
                        group_id: v.u32(gd::GROUP_ID),
                        buckets: decode_buckets(v.tail(gd::BUCKETS))?,
                    })
                })?)
            }
            t::METER => Self::Meter(entries(b, ms::LEN, ms::BAND_STATS, "meter_stats", |e| {
                let v = View::new(e, ms::BAND_STATS, "meter_stats")?;
                Ok(MeterStats {
                    meter_id: v.u32(ms::METER_ID),
                    flow_count: v.u32(ms::FLOW_COUNT),
                    packet_in_count: v.u64(ms::PACKET_IN_COUNT),
                    byte_in_count: v.u64(ms::BYTE_IN_COUNT),
                    duration_sec: v.u32(ms::DURATION_SEC),
                    duration_nsec: v.u32(ms::DURATION_NSEC),
                    band_stats: records(
                        v.tail(ms::BAND_STATS),
                        counter::SIZE,
                        "meter_band_stats",
                        |c| BandStats {
                            packet_band_count: c.u64(counter::PACKETS),
                            byte_band_count: c.u64(counter::BYTES),
                        },
                    )?,
                })
            })?),
            t::METER_CONFIG => {
                Self::MeterConfig(entries(b, mc::LENGTH, mc::BANDS, "meter_config", |e| {
                    let v = View::new(e, mc::BANDS, "meter_config")?;
                    Ok(MeterConfig {
                        flags: v.u16(mc::FLAGS),
                        meter_id: v.u32(mc::METER_ID),
                        bands: decode_bands(v.tail(mc::BANDS))?,
                    })
                })?)
            }
            t::METER_FEATURES => {
                let v = View::exact(b, mf::SIZE, "meter_features")?;
                Self::MeterFeatures(MeterFeatures {
                    max_meter: v.u32(mf::MAX_METER),
                    band_types: v.u32(mf::BAND_TYPES),
                    capabilities: v.u32(mf::CAPABILITIES),
                    max_bands: v.u8(mf::MAX_BANDS),
                    max_color: v.u8(mf::MAX_COLOR),
                })
            }
            t::PORT_DESC => Self::PortDesc(
                b.chunks(PortDesc::WIRE_LEN)
                    .map(PortDesc::decode)
                    .collect::<Result<_, _>>()?,
            ),
            t::TABLE_FEATURES => Self::TableFeatures(b.to_vec()),
            _ => Self::Other {
                mp_type: ty,
                body: b.to_vec(),
            },
        })
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Self::Desc(d) => d.encode(out)?,
            Self::Flow(v) => v.iter().try_for_each(|e| e.encode(out))?,
            Self::Aggregate(a) => {
                let mut f = put_fixed(out, agg::SIZE);
                f.u64(agg::PACKET_COUNT, a.packet_count);
                f.u64(agg::BYTE_COUNT, a.byte_count);
                f.u32(agg::FLOW_COUNT, a.flow_count);
            }
            Self::Table(v) => {
                for t in v {
                    let mut f = put_fixed(out, ts::SIZE);
                    f.u8(ts::TABLE_ID, t.table_id);
                    f.u32(ts::ACTIVE_COUNT, t.active_count);
                    f.u64(ts::LOOKUP_COUNT, t.lookup_count);
                    f.u64(ts::MATCHED_COUNT, t.matched_count);
                }
            }
            Self::PortStats(v) => {
                for p in v {
                    let mut f = put_fixed(out, ps::SIZE);
                    f.u32(ps::PORT_NO, p.port_no);
                    f.u64(ps::RX_PACKETS, p.rx_packets);
                    f.u64(ps::TX_PACKETS, p.tx_packets);
                    f.u64(ps::RX_BYTES, p.rx_bytes);
                    f.u64(ps::TX_BYTES, p.tx_bytes);
                    f.u64(ps::RX_DROPPED, p.rx_dropped);
                    f.u64(ps::TX_DROPPED, p.tx_dropped);
                    f.u64(ps::RX_ERRORS, p.rx_errors);
                    f.u64(ps::TX_ERRORS, p.tx_errors);
                    f.u64(ps::RX_FRAME_ERR, p.rx_frame_err);
                    f.u64(ps::RX_OVER_ERR, p.rx_over_err);
                    f.u64(ps::RX_CRC_ERR, p.rx_crc_err);
                    f.u64(ps::COLLISIONS, p.collisions);
                    f.u32(ps::DURATION_SEC, p.duration_sec);
                    f.u32(ps::DURATION_NSEC, p.duration_nsec);
                }
            }
            Self::Queue(v) => {
                for q in v {
                    let mut f = put_fixed(out, qs::SIZE);
                    f.u32(qs::PORT_NO, q.port_no);
                    f.u32(qs::QUEUE_ID, q.queue_id);
                    f.u64(qs::TX_BYTES, q.tx_bytes);
                    f.u64(qs::TX_PACKETS, q.tx_packets);
                    f.u64(qs::TX_ERRORS, q.tx_errors);
                    f.u32(qs::DURATION_SEC, q.duration_sec);
                    f.u32(qs::DURATION_NSEC, q.duration_nsec);
                }
            }
            Self::Group(v) => {
                for g in v {
                    let start = out.len();
                    let mut f = put_fixed(out, gs::BUCKET_STATS);
                    f.u32(gs::GROUP_ID, g.group_id);
                    f.u32(gs::REF_COUNT, g.ref_count);
                    f.u64(gs::PACKET_COUNT, g.packet_count);
                    f.u64(gs::BYTE_COUNT, g.byte_count);
                    f.u32(gs::DURATION_SEC, g.duration_sec);
                    f.u32(gs::DURATION_NSEC, g.duration_nsec);
                    for c in &g.bucket_stats {
                        let mut f = put_fixed(out, counter::SIZE);
                        f.u64(counter::PACKETS, c.packet_count);
                        f.u64(counter::BYTES, c.byte_count);
                    }
                    wire::finish_len(out, start, gs::LENGTH, false, "group_stats")?;
                }
            }
            Self::GroupDesc(v) => {
                for g in v {
                    let start = out.len();
                    let mut f = put_fixed(out, gd::BUCKETS);
                    f.u8(gd::TYPE, g.group_type.to_raw());
                    f.u32(gd::GROUP_ID, g.group_id);
                    encode_buckets(&g.buckets, out)?;
                    wire::finish_len(out, start, gd::LENGTH, false, "group_desc")?;
                }
            }
            Self::Meter(v) => {
                for m in v {
                    let start = out.len();
                    let mut f = put_fixed(out, ms::BAND_STATS);
                    f.u32(ms::METER_ID, m.meter_id);
                    f.u32(ms::FLOW_COUNT, m.flow_count);
                    f.u64(ms::PACKET_IN_COUNT, m.packet_in_count);
                    f.u64(ms::BYTE_IN_COUNT, m.byte_in_count);
                    f.u32(ms::DURATION_SEC, m.duration_sec);
                    f.u32(ms::DURATION_NSEC, m.duration_nsec);
                    for b in &m.band_stats {
                        let mut f = put_fixed(out, counter::SIZE);
                        f.u64(counter::PACKETS, b.packet_band_count);
                        f.u64(counter::BYTES, b.byte_band_count);
                    }
                    wire::finish_len(out, start, ms::LEN, false, "meter_stats")?;
                }
            }
            Self::MeterConfig(v) => {
                for m in v {
                    let start = out.len();
                    let mut f = put_fixed(out, mc::BANDS);
                    f.u16(mc::FLAGS, m.flags);
                    f.u32(mc::METER_ID, m.meter_id);
                    encode_bands(&m.bands, out)?;
                    wire::finish_len(out, start, mc::LENGTH, false, "meter_config")?;
                }
            }
            Self::MeterFeatures(m) => {
                let mut f = put_fixed(out, mf::SIZE);
                f.u32(mf::MAX_METER, m.max_meter);
                f.u32(mf::BAND_TYPES, m.band_types);
                f.u32(mf::CAPABILITIES, m.capabilities);
                f.u8(mf::MAX_BANDS, m.max_bands);
                f.u8(mf::MAX_COLOR, m.max_color);
            }
            Self::PortDesc(v) => v.iter().try_for_each(|p| p.encode(out))?,
            Self::TableFeatures(b) | Self::Other { body: b, .. } => out.extend_from_slice(b),
        }
        Ok(())
    }
}

/// An OFPT_MULTIPART_REPLY body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MultipartReply {
    /// [`multipart_flags`].
    pub flags: u16,
    /// Typed body.
    pub body: MultipartReplyBody,
}

impl MultipartReply {
    /// Whether the MORE flag is set (more parts of this reply follow).
    pub fn more(&self) -> bool {
        self.flags & multipart_flags::MORE != 0
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let v = View::new(body, mp::BODY, "multipart_reply")?;
        Ok(MultipartReply {
            flags: v.u16(mp::FLAGS),
            body: MultipartReplyBody::decode(v.u16(mp::TYPE), v.tail(mp::BODY))?,
        })
    }
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut f = put_fixed(out, mp::BODY);
        f.u16(mp::TYPE, self.body.mp_type());
        f.u16(mp::FLAGS, self.flags);
        self.body.encode(out)
    }
}
