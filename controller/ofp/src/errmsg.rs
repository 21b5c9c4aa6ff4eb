//! OFPT_ERROR: typed error types and codes.

use crate::error::{DecodeError, EncodeError};
use crate::wire::{put_fixed, View};
use std::fmt;

wire_enum! {
    /// Codes of `OFPET_HELLO_FAILED`.
    HelloFailedCode: u16 {
        Incompatible = 0 => "INCOMPATIBLE",
        Eperm = 1 => "EPERM",
    }
}

wire_enum! {
    /// Codes of `OFPET_BAD_REQUEST`.
    BadRequestCode: u16 {
        BadVersion = 0 => "BAD_VERSION",
        BadType = 1 => "BAD_TYPE",
        BadMultipart = 2 => "BAD_MULTIPART",
        BadExperimenter = 3 => "BAD_EXPERIMENTER",
        BadExpType = 4 => "BAD_EXP_TYPE",
        Eperm = 5 => "EPERM",
        BadLen = 6 => "BAD_LEN",
        BufferEmpty = 7 => "BUFFER_EMPTY",
        BufferUnknown = 8 => "BUFFER_UNKNOWN",
        BadTableId = 9 => "BAD_TABLE_ID",
        IsSlave = 10 => "IS_SLAVE",
        BadPort = 11 => "BAD_PORT",
        BadPacket = 12 => "BAD_PACKET",
        MultipartBufferOverflow = 13 => "MULTIPART_BUFFER_OVERFLOW",
    }
}

wire_enum! {
    /// Codes of `OFPET_BAD_ACTION`.
    BadActionCode: u16 {
        BadType = 0 => "BAD_TYPE",
        BadLen = 1 => "BAD_LEN",
        BadExperimenter = 2 => "BAD_EXPERIMENTER",
        BadExpType = 3 => "BAD_EXP_TYPE",
        BadOutPort = 4 => "BAD_OUT_PORT",
        BadArgument = 5 => "BAD_ARGUMENT",
        Eperm = 6 => "EPERM",
        TooMany = 7 => "TOO_MANY",
        BadQueue = 8 => "BAD_QUEUE",
        BadOutGroup = 9 => "BAD_OUT_GROUP",
        MatchInconsistent = 10 => "MATCH_INCONSISTENT",
        UnsupportedOrder = 11 => "UNSUPPORTED_ORDER",
        BadTag = 12 => "BAD_TAG",
        BadSetType = 13 => "BAD_SET_TYPE",
        BadSetLen = 14 => "BAD_SET_LEN",
        BadSetArgument = 15 => "BAD_SET_ARGUMENT",
    }
}

wire_enum! {
    /// Codes of `OFPET_BAD_INSTRUCTION`.
    BadInstructionCode: u16 {
        UnknownInst = 0 => "UNKNOWN_INST",
        UnsupInst = 1 => "UNSUP_INST",
        BadTableId = 2 => "BAD_TABLE_ID",
        UnsupMetadata = 3 => "UNSUP_METADATA",
        UnsupMetadataMask = 4 => "UNSUP_METADATA_MASK",
        BadExperimenter = 5 => "BAD_EXPERIMENTER",
        BadExpType = 6 => "BAD_EXP_TYPE",
        BadLen = 7 => "BAD_LEN",
        Eperm = 8 => "EPERM",
    }
}

wire_enum! {
    /// Codes of `OFPET_BAD_MATCH`.
    BadMatchCode: u16 {
        BadType = 0 => "BAD_TYPE",
        BadLen = 1 => "BAD_LEN",
        BadTag = 2 => "BAD_TAG",
        BadDlAddrMask = 3 => "BAD_DL_ADDR_MASK",
        BadNwAddrMask = 4 => "BAD_NW_ADDR_MASK",
        BadWildcards = 5 => "BAD_WILDCARDS",
        BadField = 6 => "BAD_FIELD",
        BadValue = 7 => "BAD_VALUE",
        BadMask = 8 => "BAD_MASK",
        BadPrereq = 9 => "BAD_PREREQ",
        DupField = 10 => "DUP_FIELD",
        Eperm = 11 => "EPERM",
    }
}

wire_enum! {
    /// Codes of `OFPET_FLOW_MOD_FAILED`.
    FlowModFailedCode: u16 {
        Unknown = 0 => "UNKNOWN",
        TableFull = 1 => "TABLE_FULL",
        BadTableId = 2 => "BAD_TABLE_ID",
        Overlap = 3 => "OVERLAP",
        Eperm = 4 => "EPERM",
        BadTimeout = 5 => "BAD_TIMEOUT",
        BadCommand = 6 => "BAD_COMMAND",
        BadFlags = 7 => "BAD_FLAGS",
    }
}

wire_enum! {
    /// Codes of `OFPET_GROUP_MOD_FAILED`.
    GroupModFailedCode: u16 {
        GroupExists = 0 => "GROUP_EXISTS",
        InvalidGroup = 1 => "INVALID_GROUP",
        WeightUnsupported = 2 => "WEIGHT_UNSUPPORTED",
        OutOfGroups = 3 => "OUT_OF_GROUPS",
        OutOfBuckets = 4 => "OUT_OF_BUCKETS",
        ChainingUnsupported = 5 => "CHAINING_UNSUPPORTED",
        WatchUnsupported = 6 => "WATCH_UNSUPPORTED",
        Loop = 7 => "LOOP",
        UnknownGroup = 8 => "UNKNOWN_GROUP",
        ChainedGroup = 9 => "CHAINED_GROUP",
        BadType = 10 => "BAD_TYPE",
        BadCommand = 11 => "BAD_COMMAND",
        BadBucket = 12 => "BAD_BUCKET",
        BadWatch = 13 => "BAD_WATCH",
        Eperm = 14 => "EPERM",
    }
}

wire_enum! {
    /// Codes of `OFPET_METER_MOD_FAILED`.
    MeterModFailedCode: u16 {
        Unknown = 0 => "UNKNOWN",
        MeterExists = 1 => "METER_EXISTS",
        InvalidMeter = 2 => "INVALID_METER",
        UnknownMeter = 3 => "UNKNOWN_METER",
        BadCommand = 4 => "BAD_COMMAND",
        BadFlags = 5 => "BAD_FLAGS",
        BadRate = 6 => "BAD_RATE",
        BadBurst = 7 => "BAD_BURST",
        BadBand = 8 => "BAD_BAND",
        BadBandValue = 9 => "BAD_BAND_VALUE",
        OutOfMeters = 10 => "OUT_OF_METERS",
        OutOfBands = 11 => "OUT_OF_BANDS",
    }
}

/// Error type numbers (`OFPET_*`).
pub mod error_type {
    /// Hello protocol failed.
    pub const HELLO_FAILED: u16 = 0;
    /// Request was not understood.
    pub const BAD_REQUEST: u16 = 1;
    /// Error in action description.
    pub const BAD_ACTION: u16 = 2;
    /// Error in instruction list.
    pub const BAD_INSTRUCTION: u16 = 3;
    /// Error in match.
    pub const BAD_MATCH: u16 = 4;
    /// Problem modifying a flow entry.
    pub const FLOW_MOD_FAILED: u16 = 5;
    /// Problem modifying a group entry.
    pub const GROUP_MOD_FAILED: u16 = 6;
    /// Port mod request failed.
    pub const PORT_MOD_FAILED: u16 = 7;
    /// Table mod request failed.
    pub const TABLE_MOD_FAILED: u16 = 8;
    /// Queue operation failed.
    pub const QUEUE_OP_FAILED: u16 = 9;
    /// Switch config request failed.
    pub const SWITCH_CONFIG_FAILED: u16 = 10;
    /// Controller role request failed.
    pub const ROLE_REQUEST_FAILED: u16 = 11;
    /// Error in meter.
    pub const METER_MOD_FAILED: u16 = 12;
    /// Setting table features failed.
    pub const TABLE_FEATURES_FAILED: u16 = 13;
    /// Experimenter error.
    pub const EXPERIMENTER: u16 = 0xffff;
}

/// Typed error type + code of an OFPT_ERROR message. Every (type, code)
/// pair round-trips through [`ErrorKind::from_type_code`] /
/// [`ErrorKind::type_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `OFPET_HELLO_FAILED`.
    HelloFailed(HelloFailedCode),
    /// `OFPET_BAD_REQUEST`.
    BadRequest(BadRequestCode),
    /// `OFPET_BAD_ACTION`.
    BadAction(BadActionCode),
    /// `OFPET_BAD_INSTRUCTION`.
    BadInstruction(BadInstructionCode),
    /// `OFPET_BAD_MATCH`.
    BadMatch(BadMatchCode),
    /// `OFPET_FLOW_MOD_FAILED`.
    FlowModFailed(FlowModFailedCode),
    /// `OFPET_GROUP_MOD_FAILED`.
    GroupModFailed(GroupModFailedCode),
    /// `OFPET_PORT_MOD_FAILED` with its code.
    PortModFailed(u16),
    /// `OFPET_TABLE_MOD_FAILED` with its code.
    TableModFailed(u16),
    /// `OFPET_QUEUE_OP_FAILED` with its code.
    QueueOpFailed(u16),
    /// `OFPET_SWITCH_CONFIG_FAILED` with its code.
    SwitchConfigFailed(u16),
    /// `OFPET_ROLE_REQUEST_FAILED` with its code.
    RoleRequestFailed(u16),
    /// `OFPET_METER_MOD_FAILED`.
    MeterModFailed(MeterModFailedCode),
    /// `OFPET_TABLE_FEATURES_FAILED` with its code.
    TableFeaturesFailed(u16),
    /// `OFPET_EXPERIMENTER` (type 0xffff): the code field is the
    /// experimenter-defined type, followed by the experimenter id.
    Experimenter {
        /// Experimenter-defined error type (the wire code field).
        exp_type: u16,
        /// Experimenter id.
        experimenter: u32,
    },
    /// Any other error type.
    Other {
        /// Error type.
        err_type: u16,
        /// Error code.
        code: u16,
    },
}

impl ErrorKind {
    /// (type, code) as on the wire (for `Experimenter`: (0xffff, exp_type)).
    pub fn type_code(&self) -> (u16, u16) {
        use error_type as t;
        match *self {
            ErrorKind::HelloFailed(c) => (t::HELLO_FAILED, c.to_raw()),
            ErrorKind::BadRequest(c) => (t::BAD_REQUEST, c.to_raw()),
            ErrorKind::BadAction(c) => (t::BAD_ACTION, c.to_raw()),
            ErrorKind::BadInstruction(c) => (t::BAD_INSTRUCTION, c.to_raw()),
            ErrorKind::BadMatch(c) => (t::BAD_MATCH, c.to_raw()),
            ErrorKind::FlowModFailed(c) => (t::FLOW_MOD_FAILED, c.to_raw()),
            ErrorKind::GroupModFailed(c) => (t::GROUP_MOD_FAILED, c.to_raw()),
            ErrorKind::PortModFailed(c) => (t::PORT_MOD_FAILED, c),
            ErrorKind::TableModFailed(c) => (t::TABLE_MOD_FAILED, c),
            ErrorKind::QueueOpFailed(c) => (t::QUEUE_OP_FAILED, c),
            ErrorKind::SwitchConfigFailed(c) => (t::SWITCH_CONFIG_FAILED, c),
            ErrorKind::RoleRequestFailed(c) => (t::ROLE_REQUEST_FAILED, c),
            ErrorKind::MeterModFailed(c) => (t::METER_MOD_FAILED, c.to_raw()),
            ErrorKind::TableFeaturesFailed(c) => (t::TABLE_FEATURES_FAILED, c),
            ErrorKind::Experimenter { exp_type, .. } => (t::EXPERIMENTER, exp_type),
            ErrorKind::Other { err_type, code } => (err_type, code),
        }
    }

    /// Maps a wire (type, code) pair. For type 0xffff the experimenter id is
    /// not part of the pair and is set to 0 (the message decoder fills it in).
    pub fn from_type_code(t: u16, c: u16) -> ErrorKind {
        use error_type as et;
        match t {
            et::HELLO_FAILED => ErrorKind::HelloFailed(c.into()),
            et::BAD_REQUEST => ErrorKind::BadRequest(c.into()),
            et::BAD_ACTION => ErrorKind::BadAction(c.into()),
            et::BAD_INSTRUCTION => ErrorKind::BadInstruction(c.into()),
            et::BAD_MATCH => ErrorKind::BadMatch(c.into()),
            et::FLOW_MOD_FAILED => ErrorKind::FlowModFailed(c.into()),
            et::GROUP_MOD_FAILED => ErrorKind::GroupModFailed(c.into()),
            et::PORT_MOD_FAILED => ErrorKind::PortModFailed(c),
            et::TABLE_MOD_FAILED => ErrorKind::TableModFailed(c),
            et::QUEUE_OP_FAILED => ErrorKind::QueueOpFailed(c),
            et::SWITCH_CONFIG_FAILED => ErrorKind::SwitchConfigFailed(c),
            et::ROLE_REQUEST_FAILED => ErrorKind::RoleRequestFailed(c),
            et::METER_MOD_FAILED => ErrorKind::MeterModFailed(c.into()),
            et::TABLE_FEATURES_FAILED => ErrorKind::TableFeaturesFailed(c),
            et::EXPERIMENTER => ErrorKind::Experimenter {
                exp_type: c,
                experimenter: 0,
            },
            _ => ErrorKind::Other {
                err_type: t,
                code: c,
            },
        }
    }

    /// The spec name of the error type, e.g. `"HELLO_FAILED"`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ErrorKind::HelloFailed(_) => "HELLO_FAILED",
            ErrorKind::BadRequest(_) => "BAD_REQUEST",
            ErrorKind::BadAction(_) => "BAD_ACTION",
            ErrorKind::BadInstruction(_) => "BAD_INSTRUCTION",
            ErrorKind::BadMatch(_) => "BAD_MATCH",
            ErrorKind::FlowModFailed(_) => "FLOW_MOD_FAILED",
            ErrorKind::GroupModFailed(_) => "GROUP_MOD_FAILED",
            ErrorKind::PortModFailed(_) => "PORT_MOD_FAILED",
            ErrorKind::TableModFailed(_) => "TABLE_MOD_FAILED",
            ErrorKind::QueueOpFailed(_) => "QUEUE_OP_FAILED",
            ErrorKind::SwitchConfigFailed(_) => "SWITCH_CONFIG_FAILED",
            ErrorKind::RoleRequestFailed(_) => "ROLE_REQUEST_FAILED",
            ErrorKind::MeterModFailed(_) => "METER_MOD_FAILED",
            ErrorKind::TableFeaturesFailed(_) => "TABLE_FEATURES_FAILED",
            ErrorKind::Experimenter { .. } => "EXPERIMENTER",
            ErrorKind::Other { .. } => "UNKNOWN",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ty = self.type_name();
        match self {
            ErrorKind::HelloFailed(c) => write!(f, "{ty}/{c}"),
            ErrorKind::BadRequest(c) => write!(f, "{ty}/{c}"),
            ErrorKind::BadAction(c) => write!(f, "{ty}/{c}"),
            ErrorKind::BadInstruction(c) => write!(f, "{ty}/{c}"),
            ErrorKind::BadMatch(c) => write!(f, "{ty}/{c}"),
            ErrorKind::FlowModFailed(c) => write!(f, "{ty}/{c}"),
            ErrorKind::GroupModFailed(c) => write!(f, "{ty}/{c}"),
            ErrorKind::MeterModFailed(c) => write!(f, "{ty}/{c}"),
            ErrorKind::PortModFailed(c)
            | ErrorKind::TableModFailed(c)
            | ErrorKind::QueueOpFailed(c)
            | ErrorKind::SwitchConfigFailed(c)
            | ErrorKind::RoleRequestFailed(c)
            | ErrorKind::TableFeaturesFailed(c) => write!(f, "{ty}/{c}"),
            ErrorKind::Experimenter {
                exp_type,
                experimenter,
            } => {
                write!(
                    f,
                    "{ty}/exp_type={exp_type},experimenter=0x{experimenter:08x}"
                )
            }
            ErrorKind::Other { err_type, code } => write!(f, "type={err_type}/code={code}"),
        }
    }
}

/// Offsets of `ofp_error_msg` (after the OpenFlow header).
mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 2;
    pub const DATA: usize = 4;
    /// `ofp_error_experimenter_msg`.
    pub const EXPERIMENTER: usize = 4;
    pub const EXP_DATA: usize = 8;
}

/// An OFPT_ERROR message body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErrorMsg {
    /// Error type and code.
    pub kind: ErrorKind,
    /// Data: usually (the start of) the offending request.
    pub data: Vec<u8>,
}

impl ErrorMsg {
    /// An error with the given kind and data.
    pub fn new(kind: ErrorKind, data: Vec<u8>) -> Self {
        ErrorMsg { kind, data }
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let v = View::new(body, field::DATA, "error")?;
        let mut kind = ErrorKind::from_type_code(v.u16(field::TYPE), v.u16(field::CODE));
        let data = if let ErrorKind::Experimenter { experimenter, .. } = &mut kind {
            let v = View::new(body, field::EXP_DATA, "experimenter error")?;
            *experimenter = v.u32(field::EXPERIMENTER);
            v.tail(field::EXP_DATA)
        } else {
            v.tail(field::DATA)
        };
        Ok(ErrorMsg {
            kind,
            data: data.to_vec(),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let (t, c) = self.kind.type_code();
        if let ErrorKind::Experimenter { experimenter, .. } = self.kind {
            let mut f = put_fixed(out, field::EXP_DATA);
            f.u16(field::TYPE, t);
            f.u16(field::CODE, c);
            f.u32(field::EXPERIMENTER, experimenter);
        } else {
            let mut f = put_fixed(out, field::DATA);
            f.u16(field::TYPE, t);
            f.u16(field::CODE, c);
        }
        out.extend_from_slice(&self.data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_code_round_trips() {
        for t in (0u16..20).chain([0xfffe, 0xffff]) {
            for c in (0u16..20).chain([0xffff]) {
                let k = ErrorKind::from_type_code(t, c);
                assert_eq!(k.type_code(), (t, c), "{k:?}");
            }
        }
        assert_eq!(
            ErrorKind::from_type_code(0, 0),
            ErrorKind::HelloFailed(HelloFailedCode::Incompatible)
        );
        assert_eq!(
            ErrorKind::from_type_code(1, 1),
            ErrorKind::BadRequest(BadRequestCode::BadType)
        );
        assert_eq!(
            ErrorKind::from_type_code(12, 3).to_string(),
            "METER_MOD_FAILED/UNKNOWN_METER"
        );
        assert_eq!(
            ErrorKind::from_type_code(5, 99),
            ErrorKind::FlowModFailed(FlowModFailedCode::Other(99))
        );
    }
}
