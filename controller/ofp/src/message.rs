//! Whole messages: [`OfpMessage`] and the [`Message`] enum.

use crate::errmsg::ErrorMsg;
use crate::error::{DecodeError, EncodeError};
use crate::flow::{FlowMod, FlowRemoved, PacketIn, PacketOut};
use crate::header::{field, msg_type as t, Header};
use crate::meter_group::{GroupMod, MeterMod};
use crate::msgs::{AsyncConfig, Experimenter, Hello, RoleMsg, SwitchConfig, SwitchFeatures};
use crate::multipart::{MultipartReply, MultipartRequest};
use crate::port::PortStatus;
use crate::wire;
use crate::{HEADER_LEN, MAX_MESSAGE_LEN, OFP_VERSION};

/// The typed body of an OpenFlow 1.3 message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// OFPT_HELLO.
    Hello(Hello),
    /// OFPT_ERROR.
    Error(ErrorMsg),
    /// OFPT_ECHO_REQUEST with its payload.
    EchoRequest(Vec<u8>),
    /// OFPT_ECHO_REPLY with its payload.
    EchoReply(Vec<u8>),
    /// OFPT_EXPERIMENTER.
    Experimenter(Experimenter),
    /// OFPT_FEATURES_REQUEST.
    FeaturesRequest,
    /// OFPT_FEATURES_REPLY.
    FeaturesReply(SwitchFeatures),
    /// OFPT_GET_CONFIG_REQUEST.
    GetConfigRequest,
    /// OFPT_GET_CONFIG_REPLY.
    GetConfigReply(SwitchConfig),
    /// OFPT_SET_CONFIG.
    SetConfig(SwitchConfig),
    /// OFPT_PACKET_IN.
    PacketIn(PacketIn),
    /// OFPT_FLOW_REMOVED.
    FlowRemoved(FlowRemoved),
    /// OFPT_PORT_STATUS.
    PortStatus(PortStatus),
    /// OFPT_PACKET_OUT.
    PacketOut(PacketOut),
    /// OFPT_FLOW_MOD.
    FlowMod(FlowMod),
    /// OFPT_GROUP_MOD.
    GroupMod(GroupMod),
    /// OFPT_METER_MOD.
    MeterMod(MeterMod),
    /// OFPT_MULTIPART_REQUEST.
    MultipartRequest(MultipartRequest),
    /// OFPT_MULTIPART_REPLY.
    MultipartReply(MultipartReply),
    /// OFPT_BARRIER_REQUEST.
    BarrierRequest,
    /// OFPT_BARRIER_REPLY.
    BarrierReply,
    /// OFPT_ROLE_REQUEST.
    RoleRequest(RoleMsg),
    /// OFPT_ROLE_REPLY.
    RoleReply(RoleMsg),
    /// OFPT_GET_ASYNC_REQUEST.
    GetAsyncRequest,
    /// OFPT_GET_ASYNC_REPLY.
    GetAsyncReply(AsyncConfig),
    /// OFPT_SET_ASYNC.
    SetAsync(AsyncConfig),
    /// Any other type (PORT_MOD, TABLE_MOD, QUEUE_GET_CONFIG, ...): body kept raw, re-encoded byte-exact.
    Other {
        /// Message type.
        msg_type: u8,
        /// Body after the header.
        body: Vec<u8>,
    },
}

impl Message {
    /// The `OFPT_*` type number.
    pub fn msg_type(&self) -> u8 {
        match self {
            Message::Hello(_) => t::HELLO,
            Message::Error(_) => t::ERROR,
            Message::EchoRequest(_) => t::ECHO_REQUEST,
            Message::EchoReply(_) => t::ECHO_REPLY,
            Message::Experimenter(_) => t::EXPERIMENTER,
            Message::FeaturesRequest => t::FEATURES_REQUEST,
            Message::FeaturesReply(_) => t::FEATURES_REPLY,
            Message::GetConfigRequest => t::GET_CONFIG_REQUEST,
            Message::GetConfigReply(_) => t::GET_CONFIG_REPLY,
            Message::SetConfig(_) => t::SET_CONFIG,
            Message::PacketIn(_) => t::PACKET_IN,
            Message::FlowRemoved(_) => t::FLOW_REMOVED,
            Message::PortStatus(_) => t::PORT_STATUS,
            Message::PacketOut(_) => t::PACKET_OUT,
            Message::FlowMod(_) => t::FLOW_MOD,
            Message::GroupMod(_) => t::GROUP_MOD,
            Message::MeterMod(_) => t::METER_MOD,
            Message::MultipartRequest(_) => t::MULTIPART_REQUEST,
            Message::MultipartReply(_) => t::MULTIPART_REPLY,
            Message::BarrierRequest => t::BARRIER_REQUEST,
            Message::BarrierReply => t::BARRIER_REPLY,
            Message::RoleRequest(_) => t::ROLE_REQUEST,
            Message::RoleReply(_) => t::ROLE_REPLY,
            Message::GetAsyncRequest => t::GET_ASYNC_REQUEST,
            Message::GetAsyncReply(_) => t::GET_ASYNC_REPLY,
            Message::SetAsync(_) => t::SET_ASYNC,
            Message::Other { msg_type, .. } => *msg_type,
        }
    }

    /// The `OFPT_*` name of the type, e.g. `"OFPT_FLOW_MOD"`.
    pub fn name(&self) -> &'static str {
        t::name(self.msg_type())
    }

    /// Decodes the body of a message of type `ty` (header version `version`).
    fn decode_body(version: u8, ty: u8, body: &[u8]) -> Result<Message, DecodeError> {
        if ty == t::HELLO {
            return Ok(Message::Hello(Hello::decode(version, body)?));
        }
        if version != OFP_VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        let empty = |m: Message| {
            if body.is_empty() {
                Ok(m)
            } else {
                Err(DecodeError::TrailingBytes {
                    what: t::name(ty),
                    extra: body.len(),
                })
            }
        };
        Ok(match ty {
            t::ERROR => Message::Error(ErrorMsg::decode(body)?),
            t::ECHO_REQUEST => Message::EchoRequest(body.to_vec()),
            t::ECHO_REPLY => Message::EchoReply(body.to_vec()),
            t::EXPERIMENTER => Message::Experimenter(Experimenter::decode(body)?),
            t::FEATURES_REQUEST => empty(Message::FeaturesRequest)?,
            t::FEATURES_REPLY => Message::FeaturesReply(SwitchFeatures::decode(body)?),
            t::GET_CONFIG_REQUEST => empty(Message::GetConfigRequest)?,
            t::GET_CONFIG_REPLY => Message::GetConfigReply(SwitchConfig::decode(body)?),
            t::SET_CONFIG => Message::SetConfig(SwitchConfig::decode(body)?),
            t::PACKET_IN => Message::PacketIn(PacketIn::decode(body)?),
            t::FLOW_REMOVED => Message::FlowRemoved(FlowRemoved::decode(body)?),
            t::PORT_STATUS => Message::PortStatus(PortStatus::decode(body)?),
            t::PACKET_OUT => Message::PacketOut(PacketOut::decode(body)?),
            t::FLOW_MOD => Message::FlowMod(FlowMod::decode(body)?),
            t::GROUP_MOD => Message::GroupMod(GroupMod::decode(body)?),
            t::METER_MOD => Message::MeterMod(MeterMod::decode(body)?),
            t::MULTIPART_REQUEST => Message::MultipartRequest(MultipartRequest::decode(body)?),
            t::MULTIPART_REPLY => Message::MultipartReply(MultipartReply::decode(body)?),
            t::BARRIER_REQUEST => empty(Message::BarrierRequest)?,
            t::BARRIER_REPLY => empty(Message::BarrierReply)?,
            t::ROLE_REQUEST => Message::RoleRequest(RoleMsg::decode(body)?),
            t::ROLE_REPLY => Message::RoleReply(RoleMsg::decode(body)?),
            t::GET_ASYNC_REQUEST => empty(Message::GetAsyncRequest)?,
            t::GET_ASYNC_REPLY => Message::GetAsyncReply(AsyncConfig::decode(body)?),
            t::SET_ASYNC => Message::SetAsync(AsyncConfig::decode(body)?),
            _ => Message::Other {
                msg_type: ty,
                body: body.to_vec(),
            },
        })
    }

    fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Message::Hello(h) => h.encode(out),
            Message::Error(e) => e.encode(out),
            Message::EchoRequest(d) | Message::EchoReply(d) | Message::Other { body: d, .. } => {
                out.extend_from_slice(d);
                Ok(())
            }
            Message::Experimenter(e) => e.encode(out),
            Message::FeaturesRequest
            | Message::GetConfigRequest
            | Message::BarrierRequest
            | Message::BarrierReply
            | Message::GetAsyncRequest => Ok(()),
            Message::FeaturesReply(f) => f.encode(out),
            Message::GetConfigReply(c) | Message::SetConfig(c) => c.encode(out),
            Message::PacketIn(p) => p.encode(out),
            Message::FlowRemoved(f) => f.encode(out),
            Message::PortStatus(p) => p.encode(out),
            Message::PacketOut(p) => p.encode(out),
            Message::FlowMod(f) => f.encode(out),
            Message::GroupMod(g) => g.encode(out),
            Message::MeterMod(m) => m.encode(out),
            Message::MultipartRequest(m) => m.encode(out),
            Message::MultipartReply(m) => m.encode(out),
            Message::RoleRequest(r) | Message::RoleReply(r) => r.encode(out),
            Message::GetAsyncReply(a) | Message::SetAsync(a) => a.encode(out),
        }
    }
}

/// One OpenFlow message: transaction id and typed body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OfpMessage {
    /// Transaction id.
    pub xid: u32,
    /// Typed body.
    pub body: Message,
}

impl OfpMessage {
    /// A message with the given xid and body.
    pub fn new(xid: u32, body: Message) -> Self {
        OfpMessage { xid, body }
    }

    /// Decodes one message. `buf` holds exactly one message (as delimited by
    /// [`crate::check_frame`]). HELLO is decoded for any header version (so
    /// the caller can refuse other versions); every other type with a
    /// version other than 0x04 gives [`DecodeError::BadVersion`].
    pub fn decode(buf: &[u8]) -> Result<OfpMessage, DecodeError> {
        let h = Header::parse(buf)?;
        let len = usize::from(h.length);
        if len < HEADER_LEN {
            return Err(DecodeError::BadLength {
                what: "message",
                len,
            });
        }
        if buf.len() < len {
            return Err(DecodeError::Truncated {
                what: "message",
                need: len,
                have: buf.len(),
            });
        }
        if buf.len() > len {
            return Err(DecodeError::TrailingBytes {
                what: "message",
                extra: buf.len() - len,
            });
        }
        let body = wire::rest(buf, HEADER_LEN, "message")?;
        Ok(OfpMessage {
            xid: h.xid,
            body: Message::decode_body(h.version, h.msg_type, body)?,
        })
    }

    /// Appends the encoded message to `out`. On error nothing is appended.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let r = self.encode_inner(out, start);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn encode_inner(&self, out: &mut Vec<u8>, start: usize) -> Result<(), EncodeError> {
        let version = match &self.body {
            Message::Hello(h) => h.version,
            _ => OFP_VERSION,
        };
        Header {
            version,
            msg_type: self.body.msg_type(),
            length: 0,
            xid: self.xid,
        }
        .emit(out);
        self.body.encode_body(out)?;
        let len = out.len() - start;
        if len > MAX_MESSAGE_LEN {
            return Err(EncodeError::TooLong { len });
        }
        wire::patch_u16(out, start + field::LENGTH, len as u16);
        Ok(())
    }

    /// Encodes into a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, EncodeError> {
        let mut v = Vec::with_capacity(64);
        self.encode(&mut v)?;
        Ok(v)
    }
}
