//! The OpenFlow header and message framing.

use crate::error::DecodeError;
use crate::wire::{put_fixed, View};
use crate::HEADER_LEN;

/// Message type numbers (`OFPT_*`) of OpenFlow 1.3.
pub mod msg_type {
    /// Symmetric: HELLO.
    pub const HELLO: u8 = 0;
    /// Symmetric: ERROR.
    pub const ERROR: u8 = 1;
    /// Symmetric: ECHO_REQUEST.
    pub const ECHO_REQUEST: u8 = 2;
    /// Symmetric: ECHO_REPLY.
    pub const ECHO_REPLY: u8 = 3;
    /// Symmetric: EXPERIMENTER.
    pub const EXPERIMENTER: u8 = 4;
    /// Controller/switch: FEATURES_REQUEST.
    pub const FEATURES_REQUEST: u8 = 5;
    /// Controller/switch: FEATURES_REPLY.
    pub const FEATURES_REPLY: u8 = 6;
    /// Controller/switch: GET_CONFIG_REQUEST.
    pub const GET_CONFIG_REQUEST: u8 = 7;
    /// Controller/switch: GET_CONFIG_REPLY.
    pub const GET_CONFIG_REPLY: u8 = 8;
    /// Controller/switch: SET_CONFIG.
    pub const SET_CONFIG: u8 = 9;
    /// Async: PACKET_IN.
    pub const PACKET_IN: u8 = 10;
    /// Async: FLOW_REMOVED.
    pub const FLOW_REMOVED: u8 = 11;
    /// Async: PORT_STATUS.
    pub const PORT_STATUS: u8 = 12;
    /// Controller command: PACKET_OUT.
    pub const PACKET_OUT: u8 = 13;
    /// Controller command: FLOW_MOD.
    pub const FLOW_MOD: u8 = 14;
    /// Controller command: GROUP_MOD.
    pub const GROUP_MOD: u8 = 15;
    /// Controller command: PORT_MOD.
    pub const PORT_MOD: u8 = 16;
    /// Controller command: TABLE_MOD.
    pub const TABLE_MOD: u8 = 17;
    /// Multipart: MULTIPART_REQUEST.
    pub const MULTIPART_REQUEST: u8 = 18;
    /// Multipart: MULTIPART_REPLY.
    pub const MULTIPART_REPLY: u8 = 19;
    /// Barrier: BARRIER_REQUEST.
    pub const BARRIER_REQUEST: u8 = 20;
    /// Barrier: BARRIER_REPLY.
    pub const BARRIER_REPLY: u8 = 21;
    /// Queue configuration: QUEUE_GET_CONFIG_REQUEST.
    pub const QUEUE_GET_CONFIG_REQUEST: u8 = 22;
    /// Queue configuration: QUEUE_GET_CONFIG_REPLY.
    pub const QUEUE_GET_CONFIG_REPLY: u8 = 23;
    /// Controller role: ROLE_REQUEST.
    pub const ROLE_REQUEST: u8 = 24;
    /// Controller role: ROLE_REPLY.
    pub const ROLE_REPLY: u8 = 25;
    /// Asynchronous configuration: GET_ASYNC_REQUEST.
    pub const GET_ASYNC_REQUEST: u8 = 26;
    /// Asynchronous configuration: GET_ASYNC_REPLY.
    pub const GET_ASYNC_REPLY: u8 = 27;
    /// Asynchronous configuration: SET_ASYNC.
    pub const SET_ASYNC: u8 = 28;
    /// Meters: METER_MOD.
    pub const METER_MOD: u8 = 29;

    /// The `OFPT_*` name of a type number (`"OFPT_UNKNOWN"` if none).
    pub fn name(t: u8) -> &'static str {
        const NAMES: [&str; 30] = [
            "OFPT_HELLO",
            "OFPT_ERROR",
            "OFPT_ECHO_REQUEST",
            "OFPT_ECHO_REPLY",
            "OFPT_EXPERIMENTER",
            "OFPT_FEATURES_REQUEST",
            "OFPT_FEATURES_REPLY",
            "OFPT_GET_CONFIG_REQUEST",
            "OFPT_GET_CONFIG_REPLY",
            "OFPT_SET_CONFIG",
            "OFPT_PACKET_IN",
            "OFPT_FLOW_REMOVED",
            "OFPT_PORT_STATUS",
            "OFPT_PACKET_OUT",
            "OFPT_FLOW_MOD",
            "OFPT_GROUP_MOD",
            "OFPT_PORT_MOD",
            "OFPT_TABLE_MOD",
            "OFPT_MULTIPART_REQUEST",
            "OFPT_MULTIPART_REPLY",
            "OFPT_BARRIER_REQUEST",
            "OFPT_BARRIER_REPLY",
            "OFPT_QUEUE_GET_CONFIG_REQUEST",
            "OFPT_QUEUE_GET_CONFIG_REPLY",
            "OFPT_ROLE_REQUEST",
            "OFPT_ROLE_REPLY",
            "OFPT_GET_ASYNC_REQUEST",
            "OFPT_GET_ASYNC_REPLY",
            "OFPT_SET_ASYNC",
            "OFPT_METER_MOD",
        ];
        NAMES.get(usize::from(t)).copied().unwrap_or("OFPT_UNKNOWN")
    }
}

/// Offsets of `ofp_header`.
pub(crate) mod field {
    pub const VERSION: usize = 0;
    pub const TYPE: usize = 1;
    pub const LENGTH: usize = 2;
    pub const XID: usize = 4;
}

/// The 8-byte OpenFlow header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Protocol version (0x04 for 1.3).
    pub version: u8,
    /// Message type ([`msg_type`]).
    pub msg_type: u8,
    /// Length of the whole message, header included.
    pub length: u16,
    /// Transaction id.
    pub xid: u32,
}

impl Header {
    /// Reads the header at the start of `buf` (no check of its values).
    pub fn parse(buf: &[u8]) -> Result<Header, DecodeError> {
        let v = View::new(buf, HEADER_LEN, "header")?;
        Ok(Header {
            version: v.u8(field::VERSION),
            msg_type: v.u8(field::TYPE),
            length: v.u16(field::LENGTH),
            xid: v.u32(field::XID),
        })
    }

    /// Appends the header.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let mut f = put_fixed(out, HEADER_LEN);
        f.u8(field::VERSION, self.version);
        f.u8(field::TYPE, self.msg_type);
        f.u16(field::LENGTH, self.length);
        f.u32(field::XID, self.xid);
    }
}

/// Framing (check, then parse): `Ok(Some(len))` when `buf` starts with a
/// whole message of `len` bytes; `Ok(None)` when more bytes are needed;
/// `Err` when the header is impossible (length < 8).
pub fn check_frame(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(len_bytes) = buf.get(field::LENGTH..field::LENGTH + 2) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([
        len_bytes.first().copied().unwrap_or(0),
        len_bytes.get(1).copied().unwrap_or(0),
    ]));
    if len < HEADER_LEN {
        return Err(DecodeError::BadLength {
            what: "message",
            len,
        });
    }
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(len))
}
