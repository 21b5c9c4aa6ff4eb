//! OXM match fields and the OXM `ofp_match` structure.

use crate::error::{DecodeError, EncodeError};
use crate::mac::MacAddr;
use crate::wire::{self, align8, View};
use std::net::Ipv4Addr;

/// OXM class of the OpenFlow basic match fields.
pub const OXM_CLASS_OPENFLOW_BASIC: u16 = 0x8000;
/// OXM class of experimenter match fields.
pub const OXM_CLASS_EXPERIMENTER: u16 = 0xffff;
/// `OFPMT_OXM`: the only match type of OpenFlow 1.3.
pub const MATCH_TYPE_OXM: u16 = 1;
/// `OFPVID_PRESENT`: set in a VLAN_VID value when a VLAN tag is present.
pub const OFPVID_PRESENT: u16 = 0x1000;

/// OXM field numbers of the OpenFlow basic class.
pub mod oxm_field {
    /// Switch input port.
    pub const IN_PORT: u8 = 0;
    /// Physical input port.
    pub const IN_PHY_PORT: u8 = 1;
    /// Metadata passed between tables.
    pub const METADATA: u8 = 2;
    /// Ethernet destination.
    pub const ETH_DST: u8 = 3;
    /// Ethernet source.
    pub const ETH_SRC: u8 = 4;
    /// Ethernet type.
    pub const ETH_TYPE: u8 = 5;
    /// VLAN id.
    pub const VLAN_VID: u8 = 6;
    /// VLAN priority.
    pub const VLAN_PCP: u8 = 7;
    /// IP DSCP.
    pub const IP_DSCP: u8 = 8;
    /// IP ECN.
    pub const IP_ECN: u8 = 9;
    /// IP protocol.
    pub const IP_PROTO: u8 = 10;
    /// IPv4 source.
    pub const IPV4_SRC: u8 = 11;
    /// IPv4 destination.
    pub const IPV4_DST: u8 = 12;
    /// TCP source port.
    pub const TCP_SRC: u8 = 13;
    /// TCP destination port.
    pub const TCP_DST: u8 = 14;
    /// UDP source port.
    pub const UDP_SRC: u8 = 15;
    /// UDP destination port.
    pub const UDP_DST: u8 = 16;
    /// ARP opcode.
    pub const ARP_OP: u8 = 21;
    /// ARP source IPv4.
    pub const ARP_SPA: u8 = 22;
    /// ARP target IPv4.
    pub const ARP_TPA: u8 = 23;
    /// ARP source hardware address.
    pub const ARP_SHA: u8 = 24;
    /// ARP target hardware address.
    pub const ARP_THA: u8 = 25;
}

/// Offsets of the OXM TLV header.
mod oxm_hdr {
    pub const CLASS: usize = 0;
    pub const FIELD: usize = 2;
    pub const LEN: usize = 3;
    pub const SIZE: usize = 4;
}

/// Offsets of `ofp_match`.
mod match_hdr {
    pub const TYPE: usize = 0;
    pub const LENGTH: usize = 2;
    pub const SIZE: usize = 4;
}

/// One OXM TLV. OpenFlow basic class (0x8000) unless [`OxmField::Raw`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OxmField {
    /// `IN_PORT`.
    InPort(u32),
    /// `IN_PHY_PORT`.
    InPhyPort(u32),
    /// `METADATA`, optionally masked.
    Metadata {
        /// Value.
        value: u64,
        /// Mask (bits set are matched).
        mask: Option<u64>,
    },
    /// `ETH_DST`, optionally masked.
    EthDst {
        /// Address.
        addr: MacAddr,
        /// Mask.
        mask: Option<MacAddr>,
    },
    /// `ETH_SRC`, optionally masked.
    EthSrc {
        /// Address.
        addr: MacAddr,
        /// Mask.
        mask: Option<MacAddr>,
    },
    /// `ETH_TYPE`.
    EthType(u16),
    /// `VLAN_VID` (including [`OFPVID_PRESENT`]), optionally masked.
    VlanVid {
        /// VLAN id | OFPVID_PRESENT.
        vid: u16,
        /// Mask.
        mask: Option<u16>,
    },
    /// `VLAN_PCP`.
    VlanPcp(u8),
    /// `IP_DSCP`.
    IpDscp(u8),
    /// `IP_PROTO`.
    IpProto(u8),
    /// `IPV4_SRC`, optionally masked.
    Ipv4Src {
        /// Address.
        addr: Ipv4Addr,
        /// Mask.
        mask: Option<Ipv4Addr>,
    },
    /// `IPV4_DST`, optionally masked.
    Ipv4Dst {
        /// Address.
        addr: Ipv4Addr,
        /// Mask.
        mask: Option<Ipv4Addr>,
    },
    /// `TCP_SRC`.
    TcpSrc(u16),
    /// `TCP_DST`.
    TcpDst(u16),
    /// `UDP_SRC`.
    UdpSrc(u16),
    /// `UDP_DST`.
    UdpDst(u16),
    /// `ARP_OP`.
    ArpOp(u16),
    /// `ARP_SPA`, optionally masked.
    ArpSpa {
        /// Address.
        addr: Ipv4Addr,
        /// Mask.
        mask: Option<Ipv4Addr>,
    },
    /// `ARP_TPA`, optionally masked.
    ArpTpa {
        /// Address.
        addr: Ipv4Addr,
        /// Mask.
        mask: Option<Ipv4Addr>,
    },
    /// `ARP_SHA`, optionally masked.
    ArpSha {
        /// Address.
        addr: MacAddr,
        /// Mask.
        mask: Option<MacAddr>,
    },
    /// `ARP_THA`, optionally masked.
    ArpTha {
        /// Address.
        addr: MacAddr,
        /// Mask.
        mask: Option<MacAddr>,
    },
    /// Any other OXM (other class/field, or a known field with unexpected
    /// length/mask): kept raw, re-encoded byte-exact.
    Raw {
        /// OXM class.
        class: u16,
        /// Field number (7 bits).
        field: u8,
        /// The HM bit.
        hasmask: bool,
        /// Everything after the 4-byte header (value, then mask if any;
        /// for the experimenter class the experimenter id first).
        payload: Vec<u8>,
    },
}

fn mac_from(b: &[u8]) -> Option<MacAddr> {
    <[u8; 6]>::try_from(b).ok().map(MacAddr)
}
fn ip_from(b: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(b).ok().map(Ipv4Addr::from)
}
fn u16_from(b: &[u8]) -> Option<u16> {
    <[u8; 2]>::try_from(b).ok().map(u16::from_be_bytes)
}
fn u32_from(b: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(b).ok().map(u32::from_be_bytes)
}
fn u64_from(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes)
}
fn u8_from(b: &[u8]) -> Option<u8> {
    match b {
        [v] => Some(*v),
        _ => None,
    }
}

/// Splits a masked payload into value and mask halves of `n` bytes each.
fn halves(p: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    if p.len() == 2 * n {
        Some(p.split_at(n))
    } else {
        None
    }
}

fn mac_field(p: &[u8], hasmask: bool) -> Option<(MacAddr, Option<MacAddr>)> {
    if hasmask {
        let (v, m) = halves(p, 6)?;
        Some((mac_from(v)?, Some(mac_from(m)?)))
    } else {
        Some((mac_from(p)?, None))
    }
}

fn ip_field(p: &[u8], hasmask: bool) -> Option<(Ipv4Addr, Option<Ipv4Addr>)> {
    if hasmask {
        let (v, m) = halves(p, 4)?;
        Some((ip_from(v)?, Some(ip_from(m)?)))
    } else {
        Some((ip_from(p)?, None))
    }
}

/// Decodes a basic-class field; `None` when the field is unknown or its
/// length/mask is not the expected one (the caller keeps it raw).
fn decode_basic(field: u8, hasmask: bool, p: &[u8]) -> Option<OxmField> {
    use oxm_field as f;
    use OxmField as O;
    let exact = !hasmask;
    Some(match field {
        f::IN_PORT if exact => O::InPort(u32_from(p)?),
        f::IN_PHY_PORT if exact => O::InPhyPort(u32_from(p)?),
        f::METADATA => {
            if hasmask {
                let (v, m) = halves(p, 8)?;
                O::Metadata {
                    value: u64_from(v)?,
                    mask: Some(u64_from(m)?),
                }
            } else {
                O::Metadata {
                    value: u64_from(p)?,
                    mask: None,
                }
            }
        }
        f::ETH_DST => {
            let (addr, mask) = mac_field(p, hasmask)?;
            O::EthDst { addr, mask }
        }
        f::ETH_SRC => {
            let (addr, mask) = mac_field(p, hasmask)?;
            O::EthSrc { addr, mask }
        }
        f::ETH_TYPE if exact => O::EthType(u16_from(p)?),
        f::VLAN_VID => {
            if hasmask {
                let (v, m) = halves(p, 2)?;
                O::VlanVid {
                    vid: u16_from(v)?,
                    mask: Some(u16_from(m)?),
                }
            } else {
                O::VlanVid {
                    vid: u16_from(p)?,
                    mask: None,
                }
            }
        }
        f::VLAN_PCP if exact => O::VlanPcp(u8_from(p)?),
        f::IP_DSCP if exact => O::IpDscp(u8_from(p)?),
        f::IP_PROTO if exact => O::IpProto(u8_from(p)?),
        f::IPV4_SRC => {
            let (addr, mask) = ip_field(p, hasmask)?;
            O::Ipv4Src { addr, mask }
        }
        f::IPV4_DST => {
            let (addr, mask) = ip_field(p, hasmask)?;
            O::Ipv4Dst { addr, mask }
        }
        f::TCP_SRC if exact => O::TcpSrc(u16_from(p)?),
        f::TCP_DST if exact => O::TcpDst(u16_from(p)?),
        f::UDP_SRC if exact => O::UdpSrc(u16_from(p)?),
        f::UDP_DST if exact => O::UdpDst(u16_from(p)?),
        f::ARP_OP if exact => O::ArpOp(u16_from(p)?),
        f::ARP_SPA => {
            let (addr, mask) = ip_field(p, hasmask)?;
            O::ArpSpa { addr, mask }
        }
        f::ARP_TPA => {
            let (addr, mask) = ip_field(p, hasmask)?;
            O::ArpTpa { addr, mask }
        }
        f::ARP_SHA => {
            let (addr, mask) = mac_field(p, hasmask)?;
            O::ArpSha { addr, mask }
        }
        f::ARP_THA => {
            let (addr, mask) = mac_field(p, hasmask)?;
            O::ArpTha { addr, mask }
        }
        _ => return None,
    })
}

/// A borrowed OXM TLV: header fields and payload, checked against the
/// enclosing length.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OxmRef<'a> {
    pub(crate) class: u16,
    pub(crate) field: u8,
    pub(crate) hasmask: bool,
    pub(crate) payload: &'a [u8],
}

impl<'a> OxmRef<'a> {
    /// Parses the TLV at the start of `buf`; returns it and its total length.
    #[inline]
    pub(crate) fn parse(buf: &'a [u8]) -> Result<(OxmRef<'a>, usize), DecodeError> {
        let v = View::new(buf, oxm_hdr::SIZE, "oxm header")?;
        let fh = v.u8(oxm_hdr::FIELD);
        let len = v.u8(oxm_hdr::LEN) as usize;
        let payload = wire::slice(buf, oxm_hdr::SIZE, len, "oxm payload")?;
        Ok((
            OxmRef {
                class: v.u16(oxm_hdr::CLASS),
                field: fh >> 1,
                hasmask: fh & 1 == 1,
                payload,
            },
            oxm_hdr::SIZE + len,
        ))
    }

    pub(crate) fn to_field(self) -> OxmField {
        if self.class == OXM_CLASS_OPENFLOW_BASIC {
            if let Some(f) = decode_basic(self.field, self.hasmask, self.payload) {
                return f;
            }
        }
        OxmField::Raw {
            class: self.class,
            field: self.field,
            hasmask: self.hasmask,
            payload: self.payload.to_vec(),
        }
    }

    /// The payload of an unmasked basic-class field `field`, if this is it.
    #[inline]
    pub(crate) fn basic_exact(&self, field: u8) -> Option<&'a [u8]> {
        if self.class == OXM_CLASS_OPENFLOW_BASIC && self.field == field && !self.hasmask {
            Some(self.payload)
        } else {
            None
        }
    }
}

impl OxmField {
    /// Decodes one OXM TLV at the start of `buf`; returns the field and the
    /// number of bytes it occupies (4 + its length field).
    pub fn decode(buf: &[u8]) -> Result<(OxmField, usize), DecodeError> {
        let (r, n) = OxmRef::parse(buf)?;
        Ok((r.to_field(), n))
    }

    /// (class, field, hasmask, payload length) of the TLV header.
    fn header(&self) -> (u16, u8, bool, usize) {
        use oxm_field as f;
        use OxmField as O;
        let b = OXM_CLASS_OPENFLOW_BASIC;
        let m = |has: bool, n: usize| if has { 2 * n } else { n };
        match self {
            O::InPort(_) => (b, f::IN_PORT, false, 4),
            O::InPhyPort(_) => (b, f::IN_PHY_PORT, false, 4),
            O::Metadata { mask, .. } => (b, f::METADATA, mask.is_some(), m(mask.is_some(), 8)),
            O::EthDst { mask, .. } => (b, f::ETH_DST, mask.is_some(), m(mask.is_some(), 6)),
            O::EthSrc { mask, .. } => (b, f::ETH_SRC, mask.is_some(), m(mask.is_some(), 6)),
            O::EthType(_) => (b, f::ETH_TYPE, false, 2),
            O::VlanVid { mask, .. } => (b, f::VLAN_VID, mask.is_some(), m(mask.is_some(), 2)),
            O::VlanPcp(_) => (b, f::VLAN_PCP, false, 1),
            O::IpDscp(_) => (b, f::IP_DSCP, false, 1),
            O::IpProto(_) => (b, f::IP_PROTO, false, 1),
            O::Ipv4Src { mask, .. } => (b, f::IPV4_SRC, mask.is_some(), m(mask.is_some(), 4)),
            O::Ipv4Dst { mask, .. } => (b, f::IPV4_DST, mask.is_some(), m(mask.is_some(), 4)),
            O::TcpSrc(_) => (b, f::TCP_SRC, false, 2),
            O::TcpDst(_) => (b, f::TCP_DST, false, 2),
            O::UdpSrc(_) => (b, f::UDP_SRC, false, 2),
            O::UdpDst(_) => (b, f::UDP_DST, false, 2),
            O::ArpOp(_) => (b, f::ARP_OP, false, 2),
            O::ArpSpa { mask, .. } => (b, f::ARP_SPA, mask.is_some(), m(mask.is_some(), 4)),
            O::ArpTpa { mask, .. } => (b, f::ARP_TPA, mask.is_some(), m(mask.is_some(), 4)),
            O::ArpSha { mask, .. } => (b, f::ARP_SHA, mask.is_some(), m(mask.is_some(), 6)),
            O::ArpTha { mask, .. } => (b, f::ARP_THA, mask.is_some(), m(mask.is_some(), 6)),
            O::Raw {
                class,
                field,
                hasmask,
                payload,
            } => (*class, *field, *hasmask, payload.len()),
        }
    }

    /// Bytes this field occupies on the wire (header + payload).
    pub fn wire_len(&self) -> usize {
        oxm_hdr::SIZE + self.header().3
    }

    /// Appends the TLV to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        use OxmField as O;
        let (class, field, hasmask, len) = self.header();
        if len > u8::MAX as usize {
            return Err(EncodeError::FieldTooLong {
                what: "oxm payload",
                len,
                max: u8::MAX as usize,
            });
        }
        if field > 0x7f {
            return Err(EncodeError::FieldTooLong {
                what: "oxm field number",
                len: field as usize,
                max: 0x7f,
            });
        }
        out.reserve(oxm_hdr::SIZE + len);
        out.extend_from_slice(&class.to_be_bytes());
        out.push((field << 1) | u8::from(hasmask));
        out.push(len as u8);
        fn mac(out: &mut Vec<u8>, a: &MacAddr, m: &Option<MacAddr>) {
            out.extend_from_slice(&a.0);
            if let Some(m) = m {
                out.extend_from_slice(&m.0);
            }
        }
        fn ip(out: &mut Vec<u8>, a: &Ipv4Addr, m: &Option<Ipv4Addr>) {
            out.extend_from_slice(&a.octets());
            if let Some(m) = m {
                out.extend_from_slice(&m.octets());
            }
        }
        match self {
            O::InPort(v) | O::InPhyPort(v) => out.extend_from_slice(&v.to_be_bytes()),
            O::Metadata { value, mask } => {
                out.extend_from_slice(&value.to_be_bytes());
                if let Some(m) = mask {
                    out.extend_from_slice(&m.to_be_bytes());
                }
            }
            O::EthDst { addr, mask }
            | O::EthSrc { addr, mask }
            | O::ArpSha { addr, mask }
            | O::ArpTha { addr, mask } => mac(out, addr, mask),
            O::VlanVid { vid, mask } => {
                out.extend_from_slice(&vid.to_be_bytes());
                if let Some(m) = mask {
                    out.extend_from_slice(&m.to_be_bytes());
                }
            }
            O::EthType(v)
            | O::TcpSrc(v)
            | O::TcpDst(v)
            | O::UdpSrc(v)
            | O::UdpDst(v)
            | O::ArpOp(v) => out.extend_from_slice(&v.to_be_bytes()),
            O::VlanPcp(v) | O::IpDscp(v) | O::IpProto(v) => out.push(*v),
            O::Ipv4Src { addr, mask }
            | O::Ipv4Dst { addr, mask }
            | O::ArpSpa { addr, mask }
            | O::ArpTpa { addr, mask } => ip(out, addr, mask),
            O::Raw { payload, .. } => out.extend_from_slice(payload),
        }
        Ok(())
    }
}

/// An OpenFlow 1.3 match (`ofp_match` of type `OFPMT_OXM`): a list of OXM
/// fields. Encoding pads the structure to a multiple of 8 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Match {
    /// The OXM fields in wire order.
    pub fields: Vec<OxmField>,
}

/// Iterates over the OXM TLVs of a match's field region without allocating.
#[derive(Clone, Debug)]
pub(crate) struct OxmIter<'a> {
    rest: &'a [u8],
}

impl<'a> OxmIter<'a> {
    pub(crate) fn new(fields: &'a [u8]) -> Self {
        OxmIter { rest: fields }
    }
}

impl<'a> Iterator for OxmIter<'a> {
    type Item = Result<OxmRef<'a>, DecodeError>;
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match OxmRef::parse(self.rest) {
            Ok((r, n)) => {
                self.rest = self.rest.get(n..).unwrap_or_default();
                Some(Ok(r))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// Checks the `ofp_match` header at the start of `buf`. Returns the OXM
/// field region (inside the match's length) and the padded length the match
/// occupies.
#[inline]
pub(crate) fn match_region(buf: &[u8]) -> Result<(&[u8], usize), DecodeError> {
    let v = View::new(buf, match_hdr::SIZE, "match")?;
    let ty = v.u16(match_hdr::TYPE);
    if ty != MATCH_TYPE_OXM {
        return Err(DecodeError::BadType {
            what: "match type",
            value: ty.into(),
        });
    }
    let len = v.u16(match_hdr::LENGTH) as usize;
    if len < match_hdr::SIZE {
        return Err(DecodeError::BadLength { what: "match", len });
    }
    let padded = align8(len);
    if buf.len() < padded {
        return Err(DecodeError::Truncated {
            what: "match",
            need: padded,
            have: buf.len(),
        });
    }
    let fields = wire::slice(buf, match_hdr::SIZE, len - match_hdr::SIZE, "match fields")?;
    Ok((fields, padded))
}

impl Match {
    /// An empty match (matches every packet).
    pub fn new() -> Self {
        Match { fields: Vec::new() }
    }

    /// Decodes the match at the start of `buf`; returns it and the number of
    /// bytes it occupies including padding.
    pub fn decode(buf: &[u8]) -> Result<(Match, usize), DecodeError> {
        let (region, padded) = match_region(buf)?;
        let mut fields = Vec::new();
        for r in OxmIter::new(region) {
            fields.push(r?.to_field());
        }
        Ok((Match { fields }, padded))
    }

    /// Appends the match, padded to 8 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(&MATCH_TYPE_OXM.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        for f in &self.fields {
            f.encode(out)?;
        }
        wire::finish_len(out, start, match_hdr::LENGTH, true, "match")
    }

    /// Bytes the match occupies on the wire, padding included.
    pub fn wire_len(&self) -> usize {
        align8(match_hdr::SIZE + self.fields.iter().map(OxmField::wire_len).sum::<usize>())
    }

    /// Adds a field.
    pub fn with(mut self, f: OxmField) -> Self {
        self.fields.push(f);
        self
    }
    /// Adds `IN_PORT`.
    pub fn in_port(self, port: u32) -> Self {
        self.with(OxmField::InPort(port))
    }
    /// Adds an exact `ETH_DST`.
    pub fn eth_dst(self, addr: MacAddr) -> Self {
        self.with(OxmField::EthDst { addr, mask: None })
    }
    /// Adds an exact `ETH_SRC`.
    pub fn eth_src(self, addr: MacAddr) -> Self {
        self.with(OxmField::EthSrc { addr, mask: None })
    }
    /// Adds `ETH_TYPE`.
    pub fn eth_type(self, t: u16) -> Self {
        self.with(OxmField::EthType(t))
    }
    /// Adds `IP_PROTO`.
    pub fn ip_proto(self, p: u8) -> Self {
        self.with(OxmField::IpProto(p))
    }
    /// Adds an exact `IPV4_SRC`.
    pub fn ipv4_src(self, addr: Ipv4Addr) -> Self {
        self.with(OxmField::Ipv4Src { addr, mask: None })
    }
    /// Adds an exact `IPV4_DST`.
    pub fn ipv4_dst(self, addr: Ipv4Addr) -> Self {
        self.with(OxmField::Ipv4Dst { addr, mask: None })
    }
    /// Adds `TCP_DST`.
    pub fn tcp_dst(self, port: u16) -> Self {
        self.with(OxmField::TcpDst(port))
    }
    /// Adds `TCP_SRC`.
    pub fn tcp_src(self, port: u16) -> Self {
        self.with(OxmField::TcpSrc(port))
    }
    /// Adds `UDP_DST`.
    pub fn udp_dst(self, port: u16) -> Self {
        self.with(OxmField::UdpDst(port))
    }
    /// Adds `UDP_SRC`.
    pub fn udp_src(self, port: u16) -> Self {
        self.with(OxmField::UdpSrc(port))
    }

    /// `IN_PORT`, if present.
    pub fn get_in_port(&self) -> Option<u32> {
        self.fields.iter().find_map(|f| match f {
            OxmField::InPort(p) => Some(*p),
            _ => None,
        })
    }
    /// Exact (unmasked) `ETH_SRC`, if present.
    pub fn get_eth_src(&self) -> Option<MacAddr> {
        self.fields.iter().find_map(|f| match f {
            OxmField::EthSrc { addr, mask: None } => Some(*addr),
            _ => None,
        })
    }
    /// Exact (unmasked) `ETH_DST`, if present.
    pub fn get_eth_dst(&self) -> Option<MacAddr> {
        self.fields.iter().find_map(|f| match f {
            OxmField::EthDst { addr, mask: None } => Some(*addr),
            _ => None,
        })
    }
    /// `ETH_TYPE`, if present.
    pub fn get_eth_type(&self) -> Option<u16> {
        self.fields.iter().find_map(|f| match f {
            OxmField::EthType(t) => Some(*t),
            _ => None,
        })
    }
    /// Exact (unmasked) `IPV4_SRC`, if present.
    pub fn get_ipv4_src(&self) -> Option<Ipv4Addr> {
        self.fields.iter().find_map(|f| match f {
            OxmField::Ipv4Src { addr, mask: None } => Some(*addr),
            _ => None,
        })
    }
    /// Exact (unmasked) `IPV4_DST`, if present.
    pub fn get_ipv4_dst(&self) -> Option<Ipv4Addr> {
        self.fields.iter().find_map(|f| match f {
            OxmField::Ipv4Dst { addr, mask: None } => Some(*addr),
            _ => None,
        })
    }
}

/// Exact `IN_PORT` in a match field region, without allocating.
#[inline]
pub(crate) fn region_in_port(region: &[u8]) -> Option<u32> {
    OxmIter::new(region)
        .map_while(Result::ok)
        .find_map(|r| r.basic_exact(oxm_field::IN_PORT).and_then(u32_from))
}

/// Exact MAC field `field` in a match field region, without allocating.
#[inline]
pub(crate) fn region_mac(region: &[u8], field: u8) -> Option<MacAddr> {
    OxmIter::new(region)
        .map_while(Result::ok)
        .find_map(|r| r.basic_exact(field).and_then(mac_from))
}
