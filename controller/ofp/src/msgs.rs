//! Small fixed-layout messages: HELLO, EXPERIMENTER, FEATURES, CONFIG, ROLE.

use crate::error::{DecodeError, EncodeError};
use crate::wire::{self, align8, put_fixed, View};
use crate::OFP_VERSION;

/// HELLO element types.
pub mod hello_elem {
    /// `OFPHET_VERSIONBITMAP`.
    pub const VERSIONBITMAP: u16 = 1;
}

/// Offsets of a HELLO element header.
mod helem {
    pub const TYPE: usize = 0;
    pub const LEN: usize = 2;
    pub const SIZE: usize = 4;
}

/// An OFPT_HELLO message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hello {
    /// The version in the message header (the highest the peer supports).
    pub version: u8,
    /// Words of the VERSIONBITMAP element, if the peer sent one (bit `v` of
    /// word `v / 32` set when version `v` is supported).
    pub bitmap: Option<Vec<u32>>,
    /// Raw bytes of every other element (with their padding), in order.
    pub other_elements: Vec<u8>,
}

impl Hello {
    /// Version 4 with a bitmap advertising only OpenFlow 1.3.
    pub fn of13() -> Hello {
        Hello {
            version: OFP_VERSION,
            bitmap: Some(vec![1 << OFP_VERSION]),
            other_elements: Vec::new(),
        }
    }

    /// Whether the sender supports version `v`: by the version bitmap when
    /// present, else (OpenFlow 1.3 §7.5.1) when `v <= version`.
    pub fn supports(&self, v: u8) -> bool {
        match &self.bitmap {
            Some(words) => words
                .get(usize::from(v / 32))
                .is_some_and(|w| w & (1u32 << (v % 32)) != 0),
            None => v <= self.version,
        }
    }

    pub(crate) fn decode(version: u8, body: &[u8]) -> Result<Self, DecodeError> {
        let mut bitmap = None;
        let mut other = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            if rest.len() < helem::SIZE {
                // Not even an element header: keep the bytes.
                other.extend_from_slice(rest);
                break;
            }
            let v = View::new(rest, helem::SIZE, "hello element")?;
            let ty = v.u16(helem::TYPE);
            let len = v.u16(helem::LEN) as usize;
            let Some(elem) = rest.get(..len).filter(|_| len >= helem::SIZE) else {
                // A malformed element (length below 4 or past the end): keep
                // the rest raw, so that a HELLO of any version still decodes
                // and the caller can negotiate (or refuse) on its version.
                other.extend_from_slice(rest);
                break;
            };
            // The padding of the last element may be missing.
            let used = align8(len).min(rest.len());
            let words = elem.get(helem::SIZE..).unwrap_or_default();
            if ty == hello_elem::VERSIONBITMAP && bitmap.is_none() && words.len() % 4 == 0 {
                bitmap = Some(
                    words
                        .chunks_exact(4)
                        .map(|c| u32::from_be_bytes(<[u8; 4]>::try_from(c).unwrap_or([0; 4])))
                        .collect(),
                );
            } else {
                other.extend_from_slice(rest.get(..used).unwrap_or_default());
            }
            rest = rest.get(used..).unwrap_or_default();
        }
        Ok(Hello {
            version,
            bitmap,
            other_elements: other,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if let Some(words) = &self.bitmap {
            let start = out.len();
            out.extend_from_slice(&hello_elem::VERSIONBITMAP.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
            for w in words {
                out.extend_from_slice(&w.to_be_bytes());
            }
            wire::finish_len(out, start, helem::LEN, true, "hello versionbitmap")?;
        }
        out.extend_from_slice(&self.other_elements);
        Ok(())
    }
}

/// Offsets of `ofp_experimenter_header` (after the OpenFlow header).
mod exp {
    pub const EXPERIMENTER: usize = 0;
    pub const EXP_TYPE: usize = 4;
    pub const SIZE: usize = 8;
}

/// An OFPT_EXPERIMENTER message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Experimenter {
    /// Experimenter id.
    pub experimenter: u32,
    /// Experimenter-defined type.
    pub exp_type: u32,
    /// Experimenter-defined data.
    pub data: Vec<u8>,
}

impl Experimenter {
    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let v = View::new(body, exp::SIZE, "experimenter")?;
        Ok(Experimenter {
            experimenter: v.u32(exp::EXPERIMENTER),
            exp_type: v.u32(exp::EXP_TYPE),
            data: v.tail(exp::SIZE).to_vec(),
        })
    }
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut f = put_fixed(out, exp::SIZE);
        f.u32(exp::EXPERIMENTER, self.experimenter);
        f.u32(exp::EXP_TYPE, self.exp_type);
        out.extend_from_slice(&self.data);
        Ok(())
    }
}

/// Capability bits of [`SwitchFeatures::capabilities`].
pub mod capabilities {
    /// Flow statistics.
    pub const FLOW_STATS: u32 = 1 << 0;
    /// Table statistics.
    pub const TABLE_STATS: u32 = 1 << 1;
    /// Port statistics.
    pub const PORT_STATS: u32 = 1 << 2;
    /// Group statistics.
    pub const GROUP_STATS: u32 = 1 << 3;
    /// Can reassemble IP fragments.
    pub const IP_REASM: u32 = 1 << 5;
    /// Queue statistics.
    pub const QUEUE_STATS: u32 = 1 << 6;
    /// Switch will block looping ports.
    pub const PORT_BLOCKED: u32 = 1 << 8;
}

/// Offsets of `ofp_switch_features` (after the OpenFlow header).
mod features {
    pub const DATAPATH_ID: usize = 0;
    pub const N_BUFFERS: usize = 8;
    pub const N_TABLES: usize = 12;
    pub const AUXILIARY_ID: usize = 13;
    pub const CAPABILITIES: usize = 16;
    // RESERVED at 20.
    pub const SIZE: usize = 24;
}

/// An OFPT_FEATURES_REPLY body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SwitchFeatures {
    /// Datapath id (lower 48 bits usually the bridge MAC).
    pub datapath_id: u64,
    /// Packets the switch can buffer.
    pub n_buffers: u32,
    /// Number of flow tables.
    pub n_tables: u8,
    /// Auxiliary connection id (0 for the main connection).
    pub auxiliary_id: u8,
    /// Capability bits ([`capabilities`]).
    pub capabilities: u32,
}

impl SwitchFeatures {
    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let v = View::exact(body, features::SIZE, "features_reply")?;
        Ok(SwitchFeatures {
            datapath_id: v.u64(features::DATAPATH_ID),
            n_buffers: v.u32(features::N_BUFFERS),
            n_tables: v.u8(features::N_TABLES),
            auxiliary_id: v.u8(features::AUXILIARY_ID),
            capabilities: v.u32(features::CAPABILITIES),
        })
    }
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut f = put_fixed(out, features::SIZE);
        f.u64(features::DATAPATH_ID, self.datapath_id);
        f.u32(features::N_BUFFERS, self.n_buffers);
        f.u8(features::N_TABLES, self.n_tables);
        f.u8(features::AUXILIARY_ID, self.auxiliary_id);
        f.u32(features::CAPABILITIES, self.capabilities);
        Ok(())
    }
}

/// Flag values of [`SwitchConfig::flags`].
pub mod config_flags {
    /// No special handling of IP fragments.
    pub const FRAG_NORMAL: u16 = 0;
    /// Drop fragments.
    pub const FRAG_DROP: u16 = 1;
    /// Reassemble (only if `IP_REASM` is set).
    pub const FRAG_REASM: u16 = 2;
}

/// Offsets of `ofp_switch_config` (after the OpenFlow header).
mod config {
    pub const FLAGS: usize = 0;
    pub const MISS_SEND_LEN: usize = 2;
    pub const SIZE: usize = 4;
}

/// OFPT_GET_CONFIG_REPLY / OFPT_SET_CONFIG body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SwitchConfig {
    /// [`config_flags`].
    pub flags: u16,
    /// Bytes of a table-miss packet sent to the controller.
    pub miss_send_len: u16,
}

impl SwitchConfig {
    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let v = View::exact(body, config::SIZE, "switch_config")?;
        Ok(SwitchConfig {
            flags: v.u16(config::FLAGS),
            miss_send_len: v.u16(config::MISS_SEND_LEN),
        })
    }
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut f = put_fixed(out, config::SIZE);
        f.u16(config::FLAGS, self.flags);
        f.u16(config::MISS_SEND_LEN, self.miss_send_len);
        Ok(())
    }
}

wire_enum! {
    /// Controller role (`OFPCR_ROLE_*`).
    ControllerRole: u32 {
        NoChange = 0 => "NOCHANGE",
        Equal = 1 => "EQUAL",
        Master = 2 => "MASTER",
        Slave = 3 => "SLAVE",
    }
}

/// Offsets of `ofp_role_request` (after the OpenFlow header).
mod role {
    pub const ROLE: usize = 0;
    pub const GENERATION_ID: usize = 8;
    pub const SIZE: usize = 16;
}

/// OFPT_ROLE_REQUEST / OFPT_ROLE_REPLY body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoleMsg {
    /// The role.
    pub role: ControllerRole,
    /// Master election generation id.
    pub generation_id: u64,
}

impl RoleMsg {
    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let v = View::exact(body, role::SIZE, "role")?;
        Ok(RoleMsg {
            role: v.u32(role::ROLE).into(),
            generation_id: v.u64(role::GENERATION_ID),
        })
    }
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut f = put_fixed(out, role::SIZE);
        f.u32(role::ROLE, self.role.to_raw());
        f.u64(role::GENERATION_ID, self.generation_id);
        Ok(())
    }
}

/// Offsets of `ofp_async_config` (after the OpenFlow header).
mod async_config {
    pub const PACKET_IN: usize = 0;
    pub const PORT_STATUS: usize = 8;
    pub const FLOW_REMOVED: usize = 16;
    pub const SIZE: usize = 24;
}

/// OFPT_GET_ASYNC_REPLY / OFPT_SET_ASYNC body: which asynchronous messages
/// a connection receives, as bitmaps of reasons (`1 << OFPR_*`,
/// `1 << OFPPR_*`, `1 << OFPRR_*`). Index 0 applies while the controller is
/// master or equal, index 1 while it is slave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AsyncConfig {
    /// PACKET_IN reasons, [master/equal, slave].
    pub packet_in_mask: [u32; 2],
    /// PORT_STATUS reasons, [master/equal, slave].
    pub port_status_mask: [u32; 2],
    /// FLOW_REMOVED reasons, [master/equal, slave].
    pub flow_removed_mask: [u32; 2],
}

impl AsyncConfig {
    /// Every PACKET_IN (no match, action, invalid TTL), PORT_STATUS (add,
    /// delete, modify) and FLOW_REMOVED (idle, hard, delete, group delete)
    /// in every role: what a cluster node holding a switch as slave asks
    /// for, so that it follows the switch as closely as its master does.
    pub const ALL: AsyncConfig = AsyncConfig {
        packet_in_mask: [0b111, 0b111],
        port_status_mask: [0b111, 0b111],
        flow_removed_mask: [0b1111, 0b1111],
    };

    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let v = View::exact(body, async_config::SIZE, "async_config")?;
        let pair = |at: usize| [v.u32(at), v.u32(at + 4)];
        Ok(AsyncConfig {
            packet_in_mask: pair(async_config::PACKET_IN),
            port_status_mask: pair(async_config::PORT_STATUS),
            flow_removed_mask: pair(async_config::FLOW_REMOVED),
        })
    }
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut f = put_fixed(out, async_config::SIZE);
        for (at, m) in [
            (async_config::PACKET_IN, self.packet_in_mask),
            (async_config::PORT_STATUS, self.port_status_mask),
            (async_config::FLOW_REMOVED, self.flow_removed_mask),
        ] {
            f.u32(at, m[0]);
            f.u32(at + 4, m[1]);
        }
        Ok(())
    }
}
