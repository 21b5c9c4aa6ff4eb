//! Actions and instructions.

use crate::error::{DecodeError, EncodeError};
use crate::oxm::OxmField;
use crate::wire::{self, align8, put_fixed, Fixed, View};
use crate::{port_no, CONTROLLER_MAX_LEN_NO_BUFFER};

/// Action type numbers (`OFPAT_*`).
pub mod action_type {
    /// Output to a port.
    pub const OUTPUT: u16 = 0;
    /// Push a VLAN tag.
    pub const PUSH_VLAN: u16 = 17;
    /// Pop the outer VLAN tag.
    pub const POP_VLAN: u16 = 18;
    /// Set the output queue.
    pub const SET_QUEUE: u16 = 21;
    /// Apply a group.
    pub const GROUP: u16 = 22;
    /// Set a header field from an OXM.
    pub const SET_FIELD: u16 = 25;
    /// Experimenter action.
    pub const EXPERIMENTER: u16 = 0xffff;
}

/// Instruction type numbers (`OFPIT_*`).
pub mod instruction_type {
    /// Continue in a later table.
    pub const GOTO_TABLE: u16 = 1;
    /// Write metadata.
    pub const WRITE_METADATA: u16 = 2;
    /// Merge actions into the action set.
    pub const WRITE_ACTIONS: u16 = 3;
    /// Apply actions now.
    pub const APPLY_ACTIONS: u16 = 4;
    /// Clear the action set.
    pub const CLEAR_ACTIONS: u16 = 5;
    /// Apply a meter.
    pub const METER: u16 = 6;
    /// Experimenter instruction.
    pub const EXPERIMENTER: u16 = 0xffff;
}

/// Offsets of the common TLV header of actions and instructions.
mod tlv {
    pub const TYPE: usize = 0;
    pub const LEN: usize = 2;
    pub const SIZE: usize = 4;
    /// Minimum length of an action or instruction.
    pub const MIN: usize = 8;
}

/// `ofp_action_output`.
mod output {
    pub const PORT: usize = 4;
    pub const MAX_LEN: usize = 8;
    pub const SIZE: usize = 16;
}

/// The 8-byte actions with one 16- or 32-bit argument at offset 4.
mod arg_action {
    pub const ARG: usize = 4;
    pub const SIZE: usize = 8;
}

/// `ofp_instruction_goto_table`, `_meter`, `_actions` (8-byte header forms).
mod instr8 {
    pub const ARG: usize = 4;
    pub const SIZE: usize = 8;
}

/// `ofp_instruction_write_metadata`.
mod write_md {
    pub const METADATA: usize = 8;
    pub const MASK: usize = 16;
    pub const SIZE: usize = 24;
}

/// An action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// `OUTPUT` to `port`, sending at most `max_len` bytes when the port is
    /// the controller.
    Output {
        /// Output port.
        port: u32,
        /// Bytes to send to the controller.
        max_len: u16,
    },
    /// `SET_QUEUE`.
    SetQueue(u32),
    /// `GROUP`.
    Group(u32),
    /// `SET_FIELD` with one OXM.
    SetField(OxmField),
    /// `PUSH_VLAN` with the given ethertype (0x8100 or 0x88a8).
    PushVlan(u16),
    /// `POP_VLAN`.
    PopVlan,
    /// Any other action (or a known one with an unexpected length): kept
    /// raw, re-encoded byte-exact.
    Raw {
        /// Action type.
        action_type: u16,
        /// Everything after the 4-byte type/length header.
        payload: Vec<u8>,
    },
}

impl Action {
    /// `OUTPUT` to `port`; `max_len` is [`CONTROLLER_MAX_LEN_NO_BUFFER`] for
    /// [`port_no::CONTROLLER`] and 0 otherwise.
    pub fn output(port: u32) -> Action {
        Action::Output {
            port,
            max_len: if port == port_no::CONTROLLER {
                CONTROLLER_MAX_LEN_NO_BUFFER
            } else {
                0
            },
        }
    }

    /// Decodes one action at the start of `buf`; returns it and its length.
    pub fn decode(buf: &[u8]) -> Result<(Action, usize), DecodeError> {
        let (ty, body) = tlv_split(buf, "action")?;
        let len = body.len();
        let v = View::new(body, 0, "action")?;
        let a = match (ty, len) {
            (action_type::OUTPUT, output::SIZE) => Action::Output {
                port: v.u32(output::PORT),
                max_len: v.u16(output::MAX_LEN),
            },
            (action_type::SET_QUEUE, arg_action::SIZE) => Action::SetQueue(v.u32(arg_action::ARG)),
            (action_type::GROUP, arg_action::SIZE) => Action::Group(v.u32(arg_action::ARG)),
            (action_type::PUSH_VLAN, arg_action::SIZE) => Action::PushVlan(v.u16(arg_action::ARG)),
            (action_type::POP_VLAN, arg_action::SIZE) => Action::PopVlan,
            (action_type::SET_FIELD, _) => match set_field(body) {
                Some(f) => Action::SetField(f),
                None => raw_action(ty, body),
            },
            _ => raw_action(ty, body),
        };
        Ok((a, len))
    }

    /// Appends the action.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Action::Output { port, max_len } => {
                let mut f = put_fixed(out, output::SIZE);
                f.u16(tlv::TYPE, action_type::OUTPUT);
                f.u16(tlv::LEN, output::SIZE as u16);
                f.u32(output::PORT, *port);
                f.u16(output::MAX_LEN, *max_len);
            }
            Action::SetQueue(q) => arg32(out, action_type::SET_QUEUE, *q),
            Action::Group(g) => arg32(out, action_type::GROUP, *g),
            Action::PushVlan(t) => {
                let mut f = put_fixed(out, arg_action::SIZE);
                f.u16(tlv::TYPE, action_type::PUSH_VLAN);
                f.u16(tlv::LEN, arg_action::SIZE as u16);
                f.u16(arg_action::ARG, *t);
            }
            Action::PopVlan => {
                let mut f = put_fixed(out, arg_action::SIZE);
                f.u16(tlv::TYPE, action_type::POP_VLAN);
                f.u16(tlv::LEN, arg_action::SIZE as u16);
            }
            Action::SetField(oxm) => {
                let start = out.len();
                out.extend_from_slice(&action_type::SET_FIELD.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                oxm.encode(out)?;
                wire::pad_to8(out, start);
                wire::finish_len(out, start, tlv::LEN, false, "set_field action")?;
            }
            Action::Raw {
                action_type,
                payload,
            } => raw_tlv(out, *action_type, payload, "raw action")?,
        }
        Ok(())
    }

    /// Bytes the action occupies on the wire.
    pub fn wire_len(&self) -> usize {
        match self {
            Action::Output { .. } => output::SIZE,
            Action::SetField(o) => align8(tlv::SIZE + o.wire_len()),
            Action::Raw { payload, .. } => tlv::SIZE + payload.len(),
            _ => arg_action::SIZE,
        }
    }
}

fn arg32(out: &mut Vec<u8>, ty: u16, v: u32) {
    let mut f = put_fixed(out, arg_action::SIZE);
    f.u16(tlv::TYPE, ty);
    f.u16(tlv::LEN, arg_action::SIZE as u16);
    f.u32(arg_action::ARG, v);
}

fn raw_action(ty: u16, body: &[u8]) -> Action {
    Action::Raw {
        action_type: ty,
        payload: body.get(tlv::SIZE..).unwrap_or_default().to_vec(),
    }
}

/// The OXM of a SET_FIELD action whose length is exactly the OXM padded to
/// 8; `None` otherwise (the action is then kept raw).
fn set_field(body: &[u8]) -> Option<OxmField> {
    let oxm_buf = body.get(tlv::SIZE..)?;
    let (f, n) = OxmField::decode(oxm_buf).ok()?;
    if align8(tlv::SIZE + n) != body.len() {
        return None;
    }
    Some(f)
}

/// Splits off the TLV at the start of `buf`: checks its length field (at
/// least 8, a multiple of 8, within `buf`) and returns (type, whole TLV).
#[inline]
fn tlv_split<'a>(buf: &'a [u8], what: &'static str) -> Result<(u16, &'a [u8]), DecodeError> {
    let v = View::new(buf, tlv::SIZE, what)?;
    let len = v.u16(tlv::LEN) as usize;
    if len < tlv::MIN || !len.is_multiple_of(8) {
        return Err(DecodeError::BadLength { what, len });
    }
    Ok((v.u16(tlv::TYPE), wire::slice(buf, 0, len, what)?))
}

/// Appends a raw TLV (type, length, payload), checking alignment.
fn raw_tlv(
    out: &mut Vec<u8>,
    ty: u16,
    payload: &[u8],
    what: &'static str,
) -> Result<(), EncodeError> {
    let len = tlv::SIZE + payload.len();
    if !len.is_multiple_of(8) {
        return Err(EncodeError::Misaligned { what, len });
    }
    let l = wire::len16(len, what)?;
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&l.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Decodes a whole action list (a region delimited by an enclosing length).
pub fn decode_actions(mut buf: &[u8]) -> Result<Vec<Action>, DecodeError> {
    let mut v = Vec::new();
    while !buf.is_empty() {
        let (a, n) = Action::decode(buf)?;
        v.push(a);
        buf = buf.get(n..).unwrap_or_default();
    }
    Ok(v)
}

/// Appends an action list.
pub fn encode_actions(actions: &[Action], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    for a in actions {
        a.encode(out)?;
    }
    Ok(())
}

/// An instruction of a flow entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Instruction {
    /// `GOTO_TABLE`.
    GotoTable(u8),
    /// `WRITE_METADATA`.
    WriteMetadata {
        /// Value.
        metadata: u64,
        /// Bits to write.
        mask: u64,
    },
    /// `WRITE_ACTIONS`.
    WriteActions(Vec<Action>),
    /// `APPLY_ACTIONS`.
    ApplyActions(Vec<Action>),
    /// `CLEAR_ACTIONS`.
    ClearActions,
    /// `METER`.
    Meter(u32),
    /// Any other instruction (or a known one with an unexpected length):
    /// kept raw, re-encoded byte-exact.
    Raw {
        /// Instruction type.
        instr_type: u16,
        /// Everything after the 4-byte type/length header.
        payload: Vec<u8>,
    },
}

impl Instruction {
    /// Decodes one instruction at the start of `buf`; returns it and its length.
    pub fn decode(buf: &[u8]) -> Result<(Instruction, usize), DecodeError> {
        use instruction_type as it;
        let (ty, body) = tlv_split(buf, "instruction")?;
        let len = body.len();
        let v = View::new(body, 0, "instruction")?;
        let i = match (ty, len) {
            (it::GOTO_TABLE, instr8::SIZE) => Instruction::GotoTable(v.u8(instr8::ARG)),
            (it::WRITE_METADATA, write_md::SIZE) => Instruction::WriteMetadata {
                metadata: v.u64(write_md::METADATA),
                mask: v.u64(write_md::MASK),
            },
            (it::WRITE_ACTIONS, _) => {
                Instruction::WriteActions(decode_actions(v.tail(instr8::SIZE))?)
            }
            (it::APPLY_ACTIONS, _) => {
                Instruction::ApplyActions(decode_actions(v.tail(instr8::SIZE))?)
            }
            (it::CLEAR_ACTIONS, instr8::SIZE) => Instruction::ClearActions,
            (it::METER, instr8::SIZE) => Instruction::Meter(v.u32(instr8::ARG)),
            _ => Instruction::Raw {
                instr_type: ty,
                payload: v.tail(tlv::SIZE).to_vec(),
            },
        };
        Ok((i, len))
    }

    /// Appends the instruction.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        use instruction_type as it;
        fn simple(out: &mut Vec<u8>, ty: u16) -> Fixed<'_> {
            let mut f = put_fixed(out, instr8::SIZE);
            f.u16(tlv::TYPE, ty);
            f.u16(tlv::LEN, instr8::SIZE as u16);
            f
        }
        match self {
            Instruction::GotoTable(t) => simple(out, it::GOTO_TABLE).u8(instr8::ARG, *t),
            Instruction::Meter(m) => simple(out, it::METER).u32(instr8::ARG, *m),
            Instruction::ClearActions => {
                simple(out, it::CLEAR_ACTIONS);
            }
            Instruction::WriteMetadata { metadata, mask } => {
                let mut f = put_fixed(out, write_md::SIZE);
                f.u16(tlv::TYPE, it::WRITE_METADATA);
                f.u16(tlv::LEN, write_md::SIZE as u16);
                f.u64(write_md::METADATA, *metadata);
                f.u64(write_md::MASK, *mask);
            }
            Instruction::WriteActions(a) | Instruction::ApplyActions(a) => {
                let ty = if matches!(self, Instruction::WriteActions(_)) {
                    it::WRITE_ACTIONS
                } else {
                    it::APPLY_ACTIONS
                };
                let start = out.len();
                simple(out, ty);
                encode_actions(a, out)?;
                wire::finish_len(out, start, tlv::LEN, false, "actions instruction")?;
            }
            Instruction::Raw {
                instr_type,
                payload,
            } => raw_tlv(out, *instr_type, payload, "raw instruction")?,
        }
        Ok(())
    }

    /// Bytes the instruction occupies on the wire.
    pub fn wire_len(&self) -> usize {
        match self {
            Instruction::WriteMetadata { .. } => write_md::SIZE,
            Instruction::WriteActions(a) | Instruction::ApplyActions(a) => {
                instr8::SIZE + a.iter().map(Action::wire_len).sum::<usize>()
            }
            Instruction::Raw { payload, .. } => tlv::SIZE + payload.len(),
            _ => instr8::SIZE,
        }
    }
}

/// Decodes a whole instruction list (a region delimited by an enclosing length).
pub fn decode_instructions(mut buf: &[u8]) -> Result<Vec<Instruction>, DecodeError> {
    let mut v = Vec::new();
    while !buf.is_empty() {
        let (i, n) = Instruction::decode(buf)?;
        v.push(i);
        buf = buf.get(n..).unwrap_or_default();
    }
    Ok(v)
}

/// Appends an instruction list.
pub fn encode_instructions(instrs: &[Instruction], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    for i in instrs {
        i.encode(out)?;
    }
    Ok(())
}
