//! Flow table messages: FLOW_MOD, FLOW_REMOVED, PACKET_IN, PACKET_OUT.

use crate::action::{
    decode_actions, decode_instructions, encode_actions, encode_instructions, Action, Instruction,
};
use crate::error::{DecodeError, EncodeError};
use crate::oxm::Match;
use crate::wire::{self, put_fixed, View};
use crate::{port_no, GROUP_ANY, NO_BUFFER};

/// Bits of [`FlowMod::flags`] (`OFPFF_*`).
pub mod flow_mod_flags {
    /// Send a FLOW_REMOVED when the flow expires or is deleted.
    pub const SEND_FLOW_REM: u16 = 1 << 0;
    /// Check for overlapping entries first.
    pub const CHECK_OVERLAP: u16 = 1 << 1;
    /// Reset flow packet and byte counts.
    pub const RESET_COUNTS: u16 = 1 << 2;
    /// Don't keep track of packet count.
    pub const NO_PKT_COUNTS: u16 = 1 << 3;
    /// Don't keep track of byte count.
    pub const NO_BYT_COUNTS: u16 = 1 << 4;
}

/// `OFPTT_ALL`: all tables (flow stats requests, flow deletes).
pub const TABLE_ALL: u8 = 0xff;

wire_enum! {
    /// FLOW_MOD command (`OFPFC_*`).
    FlowModCommand: u8 {
        Add = 0 => "ADD",
        Modify = 1 => "MODIFY",
        ModifyStrict = 2 => "MODIFY_STRICT",
        Delete = 3 => "DELETE",
        DeleteStrict = 4 => "DELETE_STRICT",
    }
}

/// Offsets of `ofp_flow_mod` (after the OpenFlow header).
mod fm {
    pub const COOKIE: usize = 0;
    pub const COOKIE_MASK: usize = 8;
    pub const TABLE_ID: usize = 16;
    pub const COMMAND: usize = 17;
    pub const IDLE_TIMEOUT: usize = 18;
    pub const HARD_TIMEOUT: usize = 20;
    pub const PRIORITY: usize = 22;
    pub const BUFFER_ID: usize = 24;
    pub const OUT_PORT: usize = 28;
    pub const OUT_GROUP: usize = 32;
    pub const FLAGS: usize = 36;
    pub const MATCH: usize = 40;
}

/// An OFPT_FLOW_MOD body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowMod {
    /// Opaque controller-issued identifier.
    pub cookie: u64,
    /// Cookie bits that must match (modify/delete).
    pub cookie_mask: u64,
    /// Table ([`TABLE_ALL`] for deletes in all tables).
    pub table_id: u8,
    /// Command.
    pub command: FlowModCommand,
    /// Idle timeout in seconds (0: none).
    pub idle_timeout: u16,
    /// Hard timeout in seconds (0: none).
    pub hard_timeout: u16,
    /// Priority.
    pub priority: u16,
    /// Buffered packet to apply to, or [`NO_BUFFER`].
    pub buffer_id: u32,
    /// Deletes: require an output to this port ([`port_no::ANY`]: any).
    pub out_port: u32,
    /// Deletes: require an output to this group ([`GROUP_ANY`]: any).
    pub out_group: u32,
    /// [`flow_mod_flags`].
    pub flags: u16,
    /// The match.
    pub match_: Match,
    /// Instructions.
    pub instructions: Vec<Instruction>,
}

impl Default for FlowMod {
    /// ADD in table 0, priority 0, no timeouts, no buffer, out_port/out_group
    /// ANY, empty match, no instructions.
    fn default() -> Self {
        FlowMod {
            cookie: 0,
            cookie_mask: 0,
            table_id: 0,
            command: FlowModCommand::Add,
            idle_timeout: 0,
            hard_timeout: 0,
            priority: 0,
            buffer_id: NO_BUFFER,
            out_port: port_no::ANY,
            out_group: GROUP_ANY,
            flags: 0,
            match_: Match::new(),
            instructions: Vec::new(),
        }
    }
}

impl FlowMod {
    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let v = View::new(body, fm::MATCH, "flow_mod")?;
        let (match_, mlen) = Match::decode(v.tail(fm::MATCH))?;
        let instructions =
            decode_instructions(wire::rest(body, fm::MATCH + mlen, "flow_mod instructions")?)?;
        Ok(FlowMod {
            cookie: v.u64(fm::COOKIE),
            cookie_mask: v.u64(fm::COOKIE_MASK),
            table_id: v.u8(fm::TABLE_ID),
            command: v.u8(fm::COMMAND).into(),
            idle_timeout: v.u16(fm::IDLE_TIMEOUT),
            hard_timeout: v.u16(fm::HARD_TIMEOUT),
            priority: v.u16(fm::PRIORITY),
            buffer_id: v.u32(fm::BUFFER_ID),
            out_port: v.u32(fm::OUT_PORT),
            out_group: v.u32(fm::OUT_GROUP),
            flags: v.u16(fm::FLAGS),
            match_,
            instructions,
        })
    }
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut f = put_fixed(out, fm::MATCH);
        f.u64(fm::COOKIE, self.cookie);
        f.u64(fm::COOKIE_MASK, self.cookie_mask);
        f.u8(fm::TABLE_ID, self.table_id);
        f.u8(fm::COMMAND, self.command.to_raw());
        f.u16(fm::IDLE_TIMEOUT, self.idle_timeout);
        f.u16(fm::HARD_TIMEOUT, self.hard_timeout);
        f.u16(fm::PRIORITY, self.priority);
        f.u32(fm::BUFFER_ID, self.buffer_id);
        f.u32(fm::OUT_PORT, self.out_port);
        f.u32(fm::OUT_GROUP, self.out_group);
        f.u16(fm::FLAGS, self.flags);
        self.match_.encode(out)?;
        encode_instructions(&self.instructions, out)
    }
}

wire_enum! {
    /// Why a flow was removed (`OFPRR_*`).
    FlowRemovedReason: u8 {
        IdleTimeout = 0 => "IDLE_TIMEOUT",
        HardTimeout = 1 => "HARD_TIMEOUT",
        Delete = 2 => "DELETE",
        GroupDelete = 3 => "GROUP_DELETE",
        MeterDelete = 4 => "METER_DELETE",
    }
}

/// Offsets of `ofp_flow_removed` (after the OpenFlow header).
mod fr {
    pub const COOKIE: usize = 0;
    pub const PRIORITY: usize = 8;
    pub const REASON: usize = 10;
    pub const TABLE_ID: usize = 11;
    pub const DURATION_SEC: usize = 12;
    pub const DURATION_NSEC: usize = 16;
    pub const IDLE_TIMEOUT: usize = 20;
    pub const HARD_TIMEOUT: usize = 22;
    pub const PACKET_COUNT: usize = 24;
    pub const BYTE_COUNT: usize = 32;
    pub const MATCH: usize = 40;
}

/// An OFPT_FLOW_REMOVED body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowRemoved {
    /// Cookie of the removed flow.
    pub cookie: u64,
    /// Its priority.
    pub priority: u16,
    /// Why it was removed.
    pub reason: FlowRemovedReason,
    /// Its table.
    pub table_id: u8,
    /// Seconds it was alive.
    pub duration_sec: u32,
    /// Nanoseconds beyond `duration_sec`.
    pub duration_nsec: u32,
    /// Its idle timeout.
    pub idle_timeout: u16,
    /// Its hard timeout.
    pub hard_timeout: u16,
    /// Packets it matched.
    pub packet_count: u64,
    /// Bytes it matched.
    pub byte_count: u64,
    /// Its match.
    pub match_: Match,
}

impl FlowRemoved {
    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let v = View::new(body, fr::MATCH, "flow_removed")?;
        let (match_, mlen) = Match::decode(v.tail(fr::MATCH))?;
        let extra = body.len().saturating_sub(fr::MATCH + mlen);
        if extra != 0 {
            return Err(DecodeError::TrailingBytes {
                what: "flow_removed",
                extra,
            });
        }
        Ok(FlowRemoved {
            cookie: v.u64(fr::COOKIE),
            priority: v.u16(fr::PRIORITY),
            reason: v.u8(fr::REASON).into(),
            table_id: v.u8(fr::TABLE_ID),
            duration_sec: v.u32(fr::DURATION_SEC),
            duration_nsec: v.u32(fr::DURATION_NSEC),
            idle_timeout: v.u16(fr::IDLE_TIMEOUT),
            hard_timeout: v.u16(fr::HARD_TIMEOUT),
            packet_count: v.u64(fr::PACKET_COUNT),
            byte_count: v.u64(fr::BYTE_COUNT),
            match_,
        })
    }
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut f = put_fixed(out, fr::MATCH);
        f.u64(fr::COOKIE, self.cookie);
        f.u16(fr::PRIORITY, self.priority);
        f.u8(fr::REASON, self.reason.to_raw());
        f.u8(fr::TABLE_ID, self.table_id);
        f.u32(fr::DURATION_SEC, self.duration_sec);
        f.u32(fr::DURATION_NSEC, self.duration_nsec);
        f.u16(fr::IDLE_TIMEOUT, self.idle_timeout);
        f.u16(fr::HARD_TIMEOUT, self.hard_timeout);
        f.u64(fr::PACKET_COUNT, self.packet_count);
        f.u64(fr::BYTE_COUNT, self.byte_count);
        self.match_.encode(out)
    }
}

wire_enum! {
    /// Why a packet was sent to the controller (`OFPR_*`).
    PacketInReason: u8 {
        NoMatch = 0 => "NO_MATCH",
        Action = 1 => "ACTION",
        InvalidTtl = 2 => "INVALID_TTL",
    }
}

/// Offsets of `ofp_packet_in` (after the OpenFlow header).
mod pin {
    pub const BUFFER_ID: usize = 0;
    pub const TOTAL_LEN: usize = 4;
    pub const REASON: usize = 6;
    pub const TABLE_ID: usize = 7;
    pub const COOKIE: usize = 8;
    pub const MATCH: usize = 16;
    /// Two pad bytes follow the (padded) match, then the frame.
    pub const PAD_AFTER_MATCH: usize = 2;
}

/// An OFPT_PACKET_IN body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PacketIn {
    /// Buffer id on the switch, or [`NO_BUFFER`].
    pub buffer_id: u32,
    /// Full length of the frame.
    pub total_len: u16,
    /// Why it was sent.
    pub reason: PacketInReason,
    /// Table that was looked up.
    pub table_id: u8,
    /// Cookie of the flow that sent it.
    pub cookie: u64,
    /// Packet metadata (in_port, ...).
    pub match_: Match,
    /// The Ethernet frame (possibly truncated to `max_len`/`miss_send_len`).
    pub data: Vec<u8>,
}

impl PacketIn {
    /// The `IN_PORT` of the match, if present.
    pub fn in_port(&self) -> Option<u32> {
        self.match_.get_in_port()
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let v = View::new(body, pin::MATCH, "packet_in")?;
        let (match_, mlen) = Match::decode(v.tail(pin::MATCH))?;
        let data = wire::rest(
            body,
            pin::MATCH + mlen + pin::PAD_AFTER_MATCH,
            "packet_in data",
        )?;
        Ok(PacketIn {
            buffer_id: v.u32(pin::BUFFER_ID),
            total_len: v.u16(pin::TOTAL_LEN),
            reason: v.u8(pin::REASON).into(),
            table_id: v.u8(pin::TABLE_ID),
            cookie: v.u64(pin::COOKIE),
            match_,
            data: data.to_vec(),
        })
    }
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut f = put_fixed(out, pin::MATCH);
        f.u32(pin::BUFFER_ID, self.buffer_id);
        f.u16(pin::TOTAL_LEN, self.total_len);
        f.u8(pin::REASON, self.reason.to_raw());
        f.u8(pin::TABLE_ID, self.table_id);
        f.u64(pin::COOKIE, self.cookie);
        self.match_.encode(out)?;
        out.extend_from_slice(&[0; pin::PAD_AFTER_MATCH]);
        out.extend_from_slice(&self.data);
        Ok(())
    }
}

/// Offsets of `ofp_packet_out` (after the OpenFlow header).
mod pout {
    pub const BUFFER_ID: usize = 0;
    pub const IN_PORT: usize = 4;
    pub const ACTIONS_LEN: usize = 8;
    pub const ACTIONS: usize = 16;
}

/// An OFPT_PACKET_OUT body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PacketOut {
    /// Buffer id, or [`NO_BUFFER`] when `data` carries the frame.
    pub buffer_id: u32,
    /// Input port for the actions ([`port_no::CONTROLLER`] if none).
    pub in_port: u32,
    /// Actions to apply.
    pub actions: Vec<Action>,
    /// The frame (when `buffer_id` is [`NO_BUFFER`]).
    pub data: Vec<u8>,
}

impl PacketOut {
    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let v = View::new(body, pout::ACTIONS, "packet_out")?;
        let alen = v.u16(pout::ACTIONS_LEN) as usize;
        let actions = decode_actions(wire::slice(
            body,
            pout::ACTIONS,
            alen,
            "packet_out actions",
        )?)?;
        Ok(PacketOut {
            buffer_id: v.u32(pout::BUFFER_ID),
            in_port: v.u32(pout::IN_PORT),
            actions,
            data: v.tail(pout::ACTIONS + alen).to_vec(),
        })
    }
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let mut f = put_fixed(out, pout::ACTIONS);
        f.u32(pout::BUFFER_ID, self.buffer_id);
        f.u32(pout::IN_PORT, self.in_port);
        encode_actions(&self.actions, out)?;
        let alen = wire::len16(out.len() - start - pout::ACTIONS, "packet_out actions")?;
        wire::patch_u16(out, start + pout::ACTIONS_LEN, alen);
        out.extend_from_slice(&self.data);
        Ok(())
    }
}
