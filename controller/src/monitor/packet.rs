//! Frames the controller reads from PACKET_IN and writes in PACKET_OUT:
//! Ethernet/ARP/IPv4 headers (parsed with `etherparse`) and LLDP probes
//! (built and parsed here; etherparse has no LLDP).
//!
//! Every parser takes untrusted bytes and returns an error value.

use std::net::Ipv4Addr;

use etherparse::{Ethernet2Slice, LaxNetSlice, LaxSlicedPacket};
use ofp::MacAddr;

/// Ethertype of LLDP.
pub const ETH_TYPE_LLDP: u16 = 0x88cc;
/// Ethertype of ARP.
pub const ETH_TYPE_ARP: u16 = 0x0806;
/// Ethertype of RARP (a migrated VM may announce itself with it).
pub const ETH_TYPE_RARP: u16 = 0x8035;
/// Ethertype of IPv4.
pub const ETH_TYPE_IPV4: u16 = 0x0800;
/// Destination of LLDP probes (nearest bridge group address).
pub const LLDP_DST: MacAddr = MacAddr([0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e]);
/// Prefix of the chassis id Shoal writes into its LLDP probes.
const CHASSIS_PREFIX: &str = "dpid:";

/// Errors parsing a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than an Ethernet header.
    #[error("frame too short for Ethernet ({0} bytes)")]
    TooShort(usize),
    /// An LLDP frame without the TLVs Shoal writes.
    #[error("LLDP frame is not a Shoal probe: {0}")]
    ForeignLldp(&'static str),
    /// A malformed LLDP TLV.
    #[error("malformed LLDP: {0}")]
    BadLldp(&'static str),
}

/// ARP fields the controller learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpInfo {
    /// Operation (1 request, 2 reply; RARP 3/4).
    pub op: u16,
    /// Sender hardware address.
    pub sha: MacAddr,
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

/// What the controller needs to know of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameInfo {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// Ethertype after any VLAN tags.
    pub ethertype: u16,
    /// ARP/RARP fields when the frame is ARP over Ethernet/IPv4.
    pub arp: Option<ArpInfo>,
    /// IPv4 source address of an IPv4 packet, or the ARP sender address.
    pub src_ip: Option<Ipv4Addr>,
}

impl FrameInfo {
    /// True for broadcast and multicast destinations.
    pub fn is_multicast(&self) -> bool {
        self.dst.0[0] & 1 == 1
    }
}

fn mac(b: &[u8]) -> Option<MacAddr> {
    <[u8; 6]>::try_from(b).ok().map(MacAddr)
}

fn ipv4(b: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(b).ok().map(Ipv4Addr::from)
}

/// Parses the Ethernet header and, where present, ARP or IPv4 addresses.
pub fn parse_frame(data: &[u8]) -> Result<FrameInfo, PacketError> {
    let eth = Ethernet2Slice::from_slice_without_fcs(data)
        .map_err(|_| PacketError::TooShort(data.len()))?;
    let mut info = FrameInfo {
        dst: MacAddr(eth.destination()),
        src: MacAddr(eth.source()),
        ethertype: eth.ether_type().0,
        arp: None,
        src_ip: None,
    };
    // The ethertype after any VLAN tags.
    let mut off = 12;
    while matches!(info.ethertype, 0x8100 | 0x88a8 | 0x9100) {
        match data.get(off + 4..off + 6) {
            Some(b) => {
                info.ethertype = u16::from_be_bytes([b[0], b[1]]);
                off += 4;
            }
            None => break,
        }
    }
    // Deeper layers are best effort (lax: a truncated transport header
    // still yields the IP addresses).
    if let Ok(sliced) = LaxSlicedPacket::from_ethernet(data) {
        match &sliced.net {
            Some(LaxNetSlice::Arp(a)) => {
                if let (Some(sha), Some(spa), Some(tpa)) = (
                    mac(a.sender_hw_addr()),
                    ipv4(a.sender_protocol_addr()),
                    ipv4(a.target_protocol_addr()),
                ) {
                    info.arp = Some(ArpInfo {
                        op: a.operation().0,
                        sha,
                        spa,
                        tpa,
                    });
                    if !spa.is_unspecified() {
                        info.src_ip = Some(spa);
                    }
                }
            }
            Some(LaxNetSlice::Ipv4(ip)) => {
                let src = ip.header().source_addr();
                if !src.is_unspecified() {
                    info.src_ip = Some(src);
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// Builds Shoal's LLDP probe for `(dpid, port)`: chassis id `dpid:<16 hex>`
/// (locally assigned), port id = the OpenFlow port number (locally
/// assigned, decimal), TTL 120 s. Source MAC = the port's hardware address.
pub fn build_lldp(dpid: u64, port: u32, src: MacAddr) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&LLDP_DST.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ETH_TYPE_LLDP.to_be_bytes());
    let chassis = format!("{CHASSIS_PREFIX}{dpid:016x}");
    push_tlv(&mut f, 1, 7, chassis.as_bytes());
    push_tlv(&mut f, 2, 7, port.to_string().as_bytes());
    push_raw_tlv(&mut f, 3, &120u16.to_be_bytes());
    push_raw_tlv(&mut f, 0, &[]);
    // Pad to the 60-byte Ethernet minimum.
    while f.len() < 60 {
        f.push(0);
    }
    f
}

fn push_raw_tlv(f: &mut Vec<u8>, ty: u16, value: &[u8]) {
    let len = value.len().min(511) as u16;
    f.extend_from_slice(&((ty << 9) | len).to_be_bytes());
    f.extend_from_slice(&value[..len as usize]);
}

fn push_tlv(f: &mut Vec<u8>, ty: u16, subtype: u8, value: &[u8]) {
    let mut v = Vec::with_capacity(value.len() + 1);
    v.push(subtype);
    v.extend_from_slice(value);
    push_raw_tlv(f, ty, &v);
}

/// The sender of an LLDP probe: which switch port it left from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LldpProbe {
    /// Datapath id of the sending switch.
    pub dpid: u64,
    /// OpenFlow port the probe left from.
    pub port: u32,
}

/// Parses an LLDP frame written by [`build_lldp`].
pub fn parse_lldp(data: &[u8]) -> Result<LldpProbe, PacketError> {
    let body = data.get(14..).ok_or(PacketError::TooShort(data.len()))?;
    if data.get(12..14) != Some(&ETH_TYPE_LLDP.to_be_bytes()[..]) {
        return Err(PacketError::BadLldp("not an LLDP ethertype"));
    }
    let mut rest = body;
    let mut dpid = None;
    let mut port = None;
    while rest.len() >= 2 {
        let hdr = u16::from_be_bytes([rest[0], rest[1]]);
        let ty = hdr >> 9;
        let len = (hdr & 0x1ff) as usize;
        let value = rest
            .get(2..2 + len)
            .ok_or(PacketError::BadLldp("TLV runs past the frame"))?;
        rest = &rest[2 + len..];
        match ty {
            0 => break,
            1 => {
                let s = value.get(1..).unwrap_or_default();
                let s = std::str::from_utf8(s).map_err(|_| PacketError::ForeignLldp("chassis"))?;
                let hex = s
                    .strip_prefix(CHASSIS_PREFIX)
                    .ok_or(PacketError::ForeignLldp("chassis id"))?;
                dpid = Some(
                    u64::from_str_radix(hex, 16)
                        .map_err(|_| PacketError::ForeignLldp("chassis dpid"))?,
                );
            }
            2 => {
                let s = value.get(1..).unwrap_or_default();
                let s = std::str::from_utf8(s).map_err(|_| PacketError::ForeignLldp("port"))?;
                port = Some(
                    s.parse::<u32>()
                        .map_err(|_| PacketError::ForeignLldp("port id"))?,
                );
            }
            _ => {}
        }
    }
    match (dpid, port) {
        (Some(dpid), Some(port)) => Ok(LldpProbe { dpid, port }),
        _ => Err(PacketError::ForeignLldp("missing chassis or port TLV")),
    }
}

/// Builds a gratuitous ARP (request form, sender = target = `ip`) from `mac`,
/// padded to the 60-byte Ethernet minimum (the frame is
/// [`shoal_common::arp::gratuitous_arp`]).
pub fn build_gratuitous_arp(mac: MacAddr, ip: Ipv4Addr) -> Vec<u8> {
    let mut f = shoal_common::arp::gratuitous_arp(mac.0, ip).to_vec();
    f.resize(60, 0);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lldp_round_trip() {
        let src = MacAddr([2, 0, 0, 0, 0, 9]);
        let f = build_lldp(0x1122_3344_5566_7788, 42, src);
        assert_eq!(f.len(), 60);
        let p = parse_lldp(&f).unwrap();
        assert_eq!(p.dpid, 0x1122_3344_5566_7788);
        assert_eq!(p.port, 42);
        let info = parse_frame(&f).unwrap();
        assert_eq!(info.ethertype, ETH_TYPE_LLDP);
        assert_eq!(info.src, src);
        assert!(info.is_multicast());
    }

    #[test]
    fn foreign_lldp_rejected() {
        let mut f = build_lldp(1, 1, MacAddr([2, 0, 0, 0, 0, 1]));
        // Change "dpid:" to "xpid:" in the chassis TLV.
        let pos = f.windows(5).position(|w| w == b"dpid:").unwrap();
        f[pos] = b'x';
        assert!(matches!(parse_lldp(&f), Err(PacketError::ForeignLldp(_))));
        // A TLV length running past the end.
        let mut g = build_lldp(1, 1, MacAddr([2, 0, 0, 0, 0, 1]));
        g.truncate(20);
        assert!(parse_lldp(&g).is_err());
    }

    #[test]
    fn arp_learned() {
        let mac = MacAddr([0, 0, 0, 0, 0, 5]);
        let f = build_gratuitous_arp(mac, Ipv4Addr::new(10, 0, 0, 5));
        let info = parse_frame(&f).unwrap();
        assert_eq!(info.ethertype, ETH_TYPE_ARP);
        let arp = info.arp.unwrap();
        assert_eq!(arp.sha, mac);
        assert_eq!(arp.spa, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(info.src_ip, Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert!(info.is_multicast());
    }

    #[test]
    fn ipv4_source_learned() {
        let mut f = vec![0u8; 14 + 20];
        f[0..6].copy_from_slice(&[0, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut f[14..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&20u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let info = parse_frame(&f).unwrap();
        assert_eq!(info.src_ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!info.is_multicast());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_frame(&data);
            let _ = parse_lldp(&data);
        }
    }
}
