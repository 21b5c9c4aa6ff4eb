//! METER_MOD and GROUP_MOD with their meter bands and group buckets.

use crate::action::{decode_actions, encode_actions, Action};
use crate::error::{DecodeError, EncodeError};
use crate::wire::{self, put_fixed, View};
use crate::{port_no, GROUP_ANY};

/// Bits of [`MeterMod::flags`] (`OFPMF_*`).
pub mod meter_flags {
    /// Rates in kbit/s.
    pub const KBPS: u16 = 1 << 0;
    /// Rates in packets/s.
    pub const PKTPS: u16 = 1 << 1;
    /// Use the burst size.
    pub const BURST: u16 = 1 << 2;
    /// Collect statistics.
    pub const STATS: u16 = 1 << 3;
}

/// Meter band types (`OFPMBT_*`).
pub mod band_type {
    /// Drop packets.
    pub const DROP: u16 = 1;
    /// Remark the DSCP.
    pub const DSCP_REMARK: u16 = 2;
    /// Experimenter band.
    pub const EXPERIMENTER: u16 = 0xffff;
}

wire_enum! {
    /// METER_MOD command (`OFPMC_*`).
    MeterModCommand: u16 {
        Add = 0 => "ADD",
        Modify = 1 => "MODIFY",
        Delete = 2 => "DELETE",
    }
}

/// Offsets of `ofp_meter_band_header` and its subtypes.
mod band {
    pub const TYPE: usize = 0;
    pub const LEN: usize = 2;
    pub const RATE: usize = 4;
    pub const BURST_SIZE: usize = 8;
    pub const HEADER: usize = 12;
    /// `ofp_meter_band_dscp_remark.prec_level`.
    pub const PREC_LEVEL: usize = 12;
    /// Length of the DROP and DSCP_REMARK bands (and the minimum length).
    pub const SIZE: usize = 16;
}

/// A meter band.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MeterBand {
    /// Drop packets above `rate`.
    Drop {
        /// Rate (kbit/s or packets/s per the meter flags).
        rate: u32,
        /// Burst size.
        burst_size: u32,
    },
    /// Raise the drop precedence of packets above `rate`.
    DscpRemark {
        /// Rate.
        rate: u32,
        /// Burst size.
        burst_size: u32,
        /// Precedence levels to add.
        prec_level: u8,
    },
    /// Any other band (or a known one with an unexpected length): kept raw.
    Raw {
        /// Band type.
        band_type: u16,
        /// Rate.
        rate: u32,
        /// Burst size.
        burst_size: u32,
        /// Everything after the 12-byte band header.
        payload: Vec<u8>,
    },
}

impl MeterBand {
    /// Decodes one band at the start of `buf`; returns it and its length.
    pub fn decode(buf: &[u8]) -> Result<(MeterBand, usize), DecodeError> {
        let h = View::new(buf, band::HEADER, "meter band")?;
        let len = h.u16(band::LEN) as usize;
        if len < band::SIZE {
            return Err(DecodeError::BadLength {
                what: "meter band",
                len,
            });
        }
        let b = View::new(
            wire::slice(buf, 0, len, "meter band")?,
            band::SIZE,
            "meter band",
        )?;
        let (ty, rate, burst_size) = (
            b.u16(band::TYPE),
            b.u32(band::RATE),
            b.u32(band::BURST_SIZE),
        );
        let m = match (ty, len) {
            (band_type::DROP, band::SIZE) => MeterBand::Drop { rate, burst_size },
            (band_type::DSCP_REMARK, band::SIZE) => MeterBand::DscpRemark {
                rate,
                burst_size,
                prec_level: b.u8(band::PREC_LEVEL),
            },
            _ => MeterBand::Raw {
                band_type: ty,
                rate,
                burst_size,
                payload: b.tail(band::HEADER).to_vec(),
            },
        };
        Ok((m, len))
    }

    /// Appends the band.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            MeterBand::Drop { rate, burst_size } => {
                let mut f = put_fixed(out, band::SIZE);
                f.u16(band::TYPE, band_type::DROP);
                f.u16(band::LEN, band::SIZE as u16);
                f.u32(band::RATE, *rate);
                f.u32(band::BURST_SIZE, *burst_size);
            }
            MeterBand::DscpRemark {
                rate,
                burst_size,
                prec_level,
            } => {
                let mut f = put_fixed(out, band::SIZE);
                f.u16(band::TYPE, band_type::DSCP_REMARK);
                f.u16(band::LEN, band::SIZE as u16);
                f.u32(band::RATE, *rate);
                f.u32(band::BURST_SIZE, *burst_size);
                f.u8(band::PREC_LEVEL, *prec_level);
            }
            MeterBand::Raw {
                band_type,
                rate,
                burst_size,
                payload,
            } => {
                let len = band::HEADER + payload.len();
                if len < band::SIZE {
                    return Err(EncodeError::Misaligned {
                        what: "raw meter band (min 16 bytes)",
                        len,
                    });
                }
                let l = wire::len16(len, "meter band")?;
                let mut f = put_fixed(out, band::HEADER);
                f.u16(band::TYPE, *band_type);
                f.u16(band::LEN, l);
                f.u32(band::RATE, *rate);
                f.u32(band::BURST_SIZE, *burst_size);
                out.extend_from_slice(payload);
            }
        }
        Ok(())
    }
}

/// Decodes a band list (a region delimited by an enclosing length).
pub(crate) fn decode_bands(mut buf: &[u8]) -> Result<Vec<MeterBand>, DecodeError> {
    let mut v = Vec::new();
    while !buf.is_empty() {
        let (b, n) = MeterBand::decode(buf)?;
        v.push(b);
        buf = buf.get(n..).unwrap_or_default();
    }
    Ok(v)
}

pub(crate) fn encode_bands(bands: &[MeterBand], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    bands.iter().try_for_each(|b| b.encode(out))
}

/// Offsets of `ofp_meter_mod` (after the OpenFlow header).
mod mm {
    pub const COMMAND: usize = 0;
    pub const FLAGS: usize = 2;
    pub const METER_ID: usize = 4;
    pub const BANDS: usize = 8;
}

/// Meter ids with a special meaning.
pub mod meter_id {
    /// Last usable meter.
    pub const MAX: u32 = 0xffff_0000;
    /// Meter for slow datapath.
    pub const SLOWPATH: u32 = 0xffff_fffd;
    /// Meter for the controller connection.
    pub const CONTROLLER: u32 = 0xffff_fffe;
    /// All meters (stats requests, deletes).
    pub const ALL: u32 = 0xffff_ffff;
}

/// An OFPT_METER_MOD body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeterMod {
    /// Command.
    pub command: MeterModCommand,
    /// [`meter_flags`].
    pub flags: u16,
    /// Meter id.
    pub meter_id: u32,
    /// Bands.
    pub bands: Vec<MeterBand>,
}

impl MeterMod {
    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let v = View::new(body, mm::BANDS, "meter_mod")?;
        Ok(MeterMod {
            command: v.u16(mm::COMMAND).into(),
            flags: v.u16(mm::FLAGS),
            meter_id: v.u32(mm::METER_ID),
            bands: decode_bands(v.tail(mm::BANDS))?,
        })
    }
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut f = put_fixed(out, mm::BANDS);
        f.u16(mm::COMMAND, self.command.to_raw());
        f.u16(mm::FLAGS, self.flags);
        f.u32(mm::METER_ID, self.meter_id);
        encode_bands(&self.bands, out)
    }
}

wire_enum! {
    /// GROUP_MOD command (`OFPGC_*`).
    GroupModCommand: u16 {
        Add = 0 => "ADD",
        Modify = 1 => "MODIFY",
        Delete = 2 => "DELETE",
    }
}

wire_enum! {
    /// Group type (`OFPGT_*`).
    GroupType: u8 {
        All = 0 => "ALL",
        Select = 1 => "SELECT",
        Indirect = 2 => "INDIRECT",
        FastFailover = 3 => "FF",
    }
}

/// Offsets of `ofp_bucket`.
mod bucket {
    pub const LEN: usize = 0;
    pub const WEIGHT: usize = 2;
    pub const WATCH_PORT: usize = 4;
    pub const WATCH_GROUP: usize = 8;
    pub const ACTIONS: usize = 16;
}

/// A group bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bucket {
    /// Relative weight (select groups).
    pub weight: u16,
    /// Port whose liveness is watched (fast-failover), or [`port_no::ANY`].
    pub watch_port: u32,
    /// Group whose liveness is watched, or [`GROUP_ANY`].
    pub watch_group: u32,
    /// Actions.
    pub actions: Vec<Action>,
}

impl Bucket {
    /// A bucket with the given actions, weight 0 and nothing watched.
    pub fn new(actions: Vec<Action>) -> Self {
        Bucket {
            weight: 0,
            watch_port: port_no::ANY,
            watch_group: GROUP_ANY,
            actions,
        }
    }

    /// Decodes one bucket at the start of `buf`; returns it and its length.
    pub fn decode(buf: &[u8]) -> Result<(Bucket, usize), DecodeError> {
        let h = View::new(buf, bucket::ACTIONS, "bucket")?;
        let len = h.u16(bucket::LEN) as usize;
        if len < bucket::ACTIONS {
            return Err(DecodeError::BadLength {
                what: "bucket",
                len,
            });
        }
        let b = wire::slice(buf, 0, len, "bucket")?;
        Ok((
            Bucket {
                weight: h.u16(bucket::WEIGHT),
                watch_port: h.u32(bucket::WATCH_PORT),
                watch_group: h.u32(bucket::WATCH_GROUP),
                actions: decode_actions(b.get(bucket::ACTIONS..).unwrap_or_default())?,
            },
            len,
        ))
    }

    /// Appends the bucket.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let mut f = put_fixed(out, bucket::ACTIONS);
        f.u16(bucket::WEIGHT, self.weight);
        f.u32(bucket::WATCH_PORT, self.watch_port);
        f.u32(bucket::WATCH_GROUP, self.watch_group);
        encode_actions(&self.actions, out)?;
        wire::finish_len(out, start, bucket::LEN, false, "bucket")
    }
}

pub(crate) fn decode_buckets(mut buf: &[u8]) -> Result<Vec<Bucket>, DecodeError> {
    let mut v = Vec::new();
    while !buf.is_empty() {
        let (b, n) = Bucket::decode(buf)?;
        v.push(b);
        buf = buf.get(n..).unwrap_or_default();
    }
    Ok(v)
}

pub(crate) fn encode_buckets(buckets: &[Bucket], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    buckets.iter().try_for_each(|b| b.encode(out))
}

/// Offsets of `ofp_group_mod` (after the OpenFlow header).
mod gm {
    pub const COMMAND: usize = 0;
    pub const TYPE: usize = 2;
    pub const GROUP_ID: usize = 4;
    pub const BUCKETS: usize = 8;
}

/// An OFPT_GROUP_MOD body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupMod {
    /// Command.
    pub command: GroupModCommand,
    /// Group type.
    pub group_type: GroupType,
    /// Group id.
    pub group_id: u32,
    /// Buckets.
    pub buckets: Vec<Bucket>,
}

impl GroupMod {
    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let v = View::new(body, gm::BUCKETS, "group_mod")?;
        Ok(GroupMod {
            command: v.u16(gm::COMMAND).into(),
            group_type: v.u8(gm::TYPE).into(),
            group_id: v.u32(gm::GROUP_ID),
            buckets: decode_buckets(v.tail(gm::BUCKETS))?,
        })
    }
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut f = put_fixed(out, gm::BUCKETS);
        f.u16(gm::COMMAND, self.command.to_raw());
        f.u8(gm::TYPE, self.group_type.to_raw());
        f.u32(gm::GROUP_ID, self.group_id);
        encode_buckets(&self.buckets, out)
    }
}
