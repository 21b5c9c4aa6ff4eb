//! OpenFlow 1.3 wire codec for Shoal.
//!
//! No I/O, no clock, no `unsafe`: bytes in, typed messages out, and back.
//! Every structure declares its field offsets once (a `mod` of consts next
//! to it); decoders check a structure's fixed length once through a view
//! and never read past a length field, nested ones included (OXM,
//! instruction, action, bucket, band and multipart entry lengths). Decoding
//! never panics: malformed input gives a [`DecodeError`].
//!
//! ```
//! use ofp::{Action, FlowMod, Instruction, Match, Message, OfpMessage, MacAddr};
//! let fm = FlowMod {
//!     priority: 100,
//!     match_: Match::new().in_port(1).eth_dst("02:00:00:00:00:02".parse::<MacAddr>().unwrap()),
//!     instructions: vec![Instruction::ApplyActions(vec![Action::output(2)])],
//!     ..FlowMod::default()
//! };
//! let bytes = OfpMessage::new(7, Message::FlowMod(fm)).to_vec().unwrap();
//! assert_eq!(ofp::check_frame(&bytes).unwrap(), Some(bytes.len()));
//! let back = OfpMessage::decode(&bytes).unwrap();
//! assert_eq!(back.xid, 7);
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

#[macro_use]
mod macros;

mod action;
mod assembler;
mod errmsg;
mod error;
mod flow;
mod flow_iter;
mod header;
mod mac;
mod message;
mod meter_group;
mod msgs;
mod multipart;
mod oxm;
mod port;
mod wire;

pub use action::{
    action_type, decode_actions, decode_instructions, encode_actions, encode_instructions,
    instruction_type, Action, Instruction,
};
pub use assembler::{MultipartAssembler, DEFAULT_MULTIPART_CAP};
pub use errmsg::{
    error_type, BadActionCode, BadInstructionCode, BadMatchCode, BadRequestCode, ErrorKind,
    ErrorMsg, FlowModFailedCode, GroupModFailedCode, HelloFailedCode, MeterModFailedCode,
};
pub use error::{DecodeError, EncodeError, ReassemblyError};
pub use flow::{
    flow_mod_flags, FlowMod, FlowModCommand, FlowRemoved, FlowRemovedReason, PacketIn,
    PacketInReason, PacketOut, TABLE_ALL,
};
pub use flow_iter::{flow_stats_entries, FlowStatsEntries, FlowStatsRef};
pub use header::{check_frame, msg_type, Header};
pub use mac::{MacAddr, MacParseError};
pub use message::{Message, OfpMessage};
pub use meter_group::{
    band_type, meter_flags, meter_id, Bucket, GroupMod, GroupModCommand, GroupType, MeterBand,
    MeterMod, MeterModCommand,
};
pub use msgs::{
    capabilities, config_flags, hello_elem, AsyncConfig, ControllerRole, Experimenter, Hello,
    RoleMsg, SwitchConfig, SwitchFeatures,
};
pub use multipart::{
    multipart_flags, multipart_type, AggregateStats, BandStats, BucketCounter, DescStats,
    FlowStats, FlowStatsRequest, GroupDesc, GroupStats, MeterConfig, MeterFeatures, MeterStats,
    MultipartReply, MultipartReplyBody, MultipartRequest, MultipartRequestBody, PortStats,
    QueueStats, TableStats, QUEUE_ALL,
};
pub use oxm::{
    oxm_field, Match, OxmField, MATCH_TYPE_OXM, OFPVID_PRESENT, OXM_CLASS_EXPERIMENTER,
    OXM_CLASS_OPENFLOW_BASIC,
};
pub use port::{port_config, port_state, PortDesc, PortReason, PortStatus, MAX_PORT_NAME_LEN};

/// OpenFlow 1.3 wire version.
pub const OFP_VERSION: u8 = 0x04;
/// Length of the OpenFlow header.
pub const HEADER_LEN: usize = 8;
/// Largest possible message (the header length field is 16 bits).
pub const MAX_MESSAGE_LEN: usize = 65535;

/// Reserved port numbers (`OFPP_*`).
pub mod port_no {
    /// Highest number of a physical port.
    pub const MAX: u32 = 0xffff_ff00;
    /// Send the packet out the input port.
    pub const IN_PORT: u32 = 0xffff_fff8;
    /// Submit the packet to the first flow table (packet-out only).
    pub const TABLE: u32 = 0xffff_fff9;
    /// Forward using the non-OpenFlow pipeline.
    pub const NORMAL: u32 = 0xffff_fffa;
    /// Flood along the non-OpenFlow spanning tree.
    pub const FLOOD: u32 = 0xffff_fffb;
    /// All ports except the input port.
    pub const ALL: u32 = 0xffff_fffc;
    /// Send to the controller.
    pub const CONTROLLER: u32 = 0xffff_fffd;
    /// The local port of the switch.
    pub const LOCAL: u32 = 0xffff_fffe;
    /// Wildcard port (no port).
    pub const ANY: u32 = 0xffff_ffff;
}

/// No buffered packet (`OFP_NO_BUFFER`).
pub const NO_BUFFER: u32 = 0xffff_ffff;
/// `OFPCML_NO_BUFFER`: send the whole packet to the controller, unbuffered.
pub const CONTROLLER_MAX_LEN_NO_BUFFER: u16 = 0xffff;
/// `OFPG_ANY`: wildcard group.
pub const GROUP_ANY: u32 = 0xffff_ffff;
/// `OFPG_ALL`: all groups (stats requests, deletes).
pub const GROUP_ALL: u32 = 0xffff_fffc;
/// `OFPM_ALL`: all meters (stats requests, deletes).
pub const METER_ALL: u32 = 0xffff_ffff;
