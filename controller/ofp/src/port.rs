//! Ports: `ofp_port` descriptions and OFPT_PORT_STATUS.

use crate::error::{DecodeError, EncodeError};
use crate::mac::MacAddr;
use crate::wire::{self, put_fixed, View};

/// Bits of [`PortDesc::config`] (`OFPPC_*`).
pub mod port_config {
    /// Port is administratively down.
    pub const PORT_DOWN: u32 = 1 << 0;
    /// Drop all packets received by the port.
    pub const NO_RECV: u32 = 1 << 2;
    /// Drop packets forwarded to the port.
    pub const NO_FWD: u32 = 1 << 5;
    /// Do not send packet-in messages for the port.
    pub const NO_PACKET_IN: u32 = 1 << 6;
}

/// Bits of [`PortDesc::state`] (`OFPPS_*`).
pub mod port_state {
    /// No physical link present.
    pub const LINK_DOWN: u32 = 1 << 0;
    /// Port is blocked.
    pub const BLOCKED: u32 = 1 << 1;
    /// Live for fast-failover groups.
    pub const LIVE: u32 = 1 << 2;
}

/// Length of the port name field (`OFP_MAX_PORT_NAME_LEN`).
pub const MAX_PORT_NAME_LEN: usize = 16;

/// Offsets of `ofp_port`.
pub(crate) mod field {
    pub const PORT_NO: usize = 0;
    pub const HW_ADDR: usize = 8;
    pub const NAME: usize = 16;
    pub const CONFIG: usize = 32;
    pub const STATE: usize = 36;
    pub const CURR: usize = 40;
    pub const ADVERTISED: usize = 44;
    pub const SUPPORTED: usize = 48;
    pub const PEER: usize = 52;
    pub const CURR_SPEED: usize = 56;
    pub const MAX_SPEED: usize = 60;
    pub const SIZE: usize = 64;
}

/// A port description (`ofp_port`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PortDesc {
    /// Port number.
    pub port_no: u32,
    /// MAC address.
    pub hw_addr: MacAddr,
    /// Name (NUL-trimmed, lossy UTF-8; at most 16 bytes on the wire).
    pub name: String,
    /// [`port_config`] bits.
    pub config: u32,
    /// [`port_state`] bits.
    pub state: u32,
    /// Current features (`OFPPF_*`).
    pub curr: u32,
    /// Advertised features.
    pub advertised: u32,
    /// Supported features.
    pub supported: u32,
    /// Features advertised by the peer.
    pub peer: u32,
    /// Current bit rate in kbit/s.
    pub curr_speed: u32,
    /// Maximum bit rate in kbit/s.
    pub max_speed: u32,
}

impl PortDesc {
    /// True when the port is neither administratively down nor without link.
    pub fn is_up(&self) -> bool {
        self.config & port_config::PORT_DOWN == 0 && self.state & port_state::LINK_DOWN == 0
    }

    /// Wire size of one `ofp_port`.
    pub const WIRE_LEN: usize = field::SIZE;

    /// Decodes one `ofp_port` (exactly 64 bytes).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let v = View::exact(buf, field::SIZE, "port")?;
        Ok(PortDesc {
            port_no: v.u32(field::PORT_NO),
            hw_addr: v.mac(field::HW_ADDR),
            name: wire::fixed_str(v.bytes(field::NAME, MAX_PORT_NAME_LEN)),
            config: v.u32(field::CONFIG),
            state: v.u32(field::STATE),
            curr: v.u32(field::CURR),
            advertised: v.u32(field::ADVERTISED),
            supported: v.u32(field::SUPPORTED),
            peer: v.u32(field::PEER),
            curr_speed: v.u32(field::CURR_SPEED),
            max_speed: v.u32(field::MAX_SPEED),
        })
    }

    /// Appends the 64-byte `ofp_port`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        wire::check_str(&self.name, MAX_PORT_NAME_LEN, "port name")?;
        let mut f = put_fixed(out, field::SIZE);
        f.u32(field::PORT_NO, self.port_no);
        f.bytes(field::HW_ADDR, &self.hw_addr.0);
        f.bytes(field::NAME, self.name.as_bytes());
        f.u32(field::CONFIG, self.config);
        f.u32(field::STATE, self.state);
        f.u32(field::CURR, self.curr);
        f.u32(field::ADVERTISED, self.advertised);
        f.u32(field::SUPPORTED, self.supported);
        f.u32(field::PEER, self.peer);
        f.u32(field::CURR_SPEED, self.curr_speed);
        f.u32(field::MAX_SPEED, self.max_speed);
        Ok(())
    }
}

wire_enum! {
    /// Why a port changed (`OFPPR_*`).
    PortReason: u8 {
        Add = 0 => "ADD",
        Delete = 1 => "DELETE",
        Modify = 2 => "MODIFY",
    }
}

/// Offsets of `ofp_port_status` (after the OpenFlow header).
mod status {
    pub const REASON: usize = 0;
    pub const DESC: usize = 8;
    pub const SIZE: usize = 8 + super::field::SIZE;
}

/// An OFPT_PORT_STATUS body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortStatus {
    /// What happened.
    pub reason: PortReason,
    /// The port (after the change).
    pub desc: PortDesc,
}

impl PortStatus {
    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let v = View::exact(body, status::SIZE, "port_status")?;
        Ok(PortStatus {
            reason: v.u8(status::REASON).into(),
            desc: PortDesc::decode(v.tail(status::DESC))?,
        })
    }
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_fixed(out, status::DESC).u8(status::REASON, self.reason.to_raw());
        self.desc.encode(out)
    }
}
