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
    /// Shoal's authentication TLV is present but malformed.
    #[error("malformed LLDP authentication TLV: {0}")]
    BadAuth(&'static str),
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

/// LLDP TLV type of an organizationally specific TLV.
pub const LLDP_TLV_ORG: u16 = 127;
/// The OUI-like value of Shoal's organizationally specific TLV: `02-53-48`,
/// a locally administered company id (X bit set, so it is no registered
/// OUI) followed by "SH", the tag of Shoal's flow cookies.
pub const SHOAL_OUI: [u8; 3] = [0x02, 0x53, 0x48];
/// Subtype of Shoal's probe authentication TLV.
pub const SUBTYPE_PROBE_AUTH: u8 = 0x01;
/// Length of the probe's message authentication code (HMAC-SHA256).
pub const PROBE_MAC_LEN: usize = 32;
/// Length of the authentication TLV's value: OUI (3), subtype (1),
/// timestamp (8), MAC (32).
pub const PROBE_AUTH_LEN: usize = 3 + 1 + 8 + PROBE_MAC_LEN;

/// The authentication a probe carries (Shoal's organizationally specific
/// TLV): when it was sent and the MAC over chassis id, port id and that
/// time (computed and checked in [`crate::monitor::lldp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeAuth {
    /// Send time, milliseconds of the controller's probe clock (Unix
    /// epoch based).
    pub timestamp_ms: u64,
    /// HMAC-SHA256 over the chassis id, port id and timestamp.
    pub mac: [u8; PROBE_MAC_LEN],
}

/// The values of the chassis id and port id TLVs of `(dpid, port)`'s probe,
/// subtype byte first: chassis `7` (locally assigned) `dpid:<16 hex>`,
/// port `7` + the OpenFlow port number in decimal.
pub fn lldp_ids(dpid: u64, port: u32) -> (Vec<u8>, Vec<u8>) {
    let mut chassis = vec![7u8];
    chassis.extend_from_slice(format!("{CHASSIS_PREFIX}{dpid:016x}").as_bytes());
    let mut port_id = vec![7u8];
    port_id.extend_from_slice(port.to_string().as_bytes());
    (chassis, port_id)
}

/// Builds Shoal's LLDP probe for `(dpid, port)`: chassis id and port id of
/// [`lldp_ids`], TTL 120 s, then the authentication TLV when given, End.
/// Source MAC = the port's hardware address.
pub fn build_lldp(dpid: u64, port: u32, src: MacAddr, auth: Option<&ProbeAuth>) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 30 + 8 + 4 + 2 + PROBE_AUTH_LEN + 2);
    f.extend_from_slice(&LLDP_DST.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ETH_TYPE_LLDP.to_be_bytes());
    let (chassis, port_id) = lldp_ids(dpid, port);
    push_raw_tlv(&mut f, 1, &chassis);
    push_raw_tlv(&mut f, 2, &port_id);
    push_raw_tlv(&mut f, 3, &120u16.to_be_bytes());
    if let Some(a) = auth {
        let mut v = Vec::with_capacity(PROBE_AUTH_LEN);
        v.extend_from_slice(&SHOAL_OUI);
        v.push(SUBTYPE_PROBE_AUTH);
        v.extend_from_slice(&a.timestamp_ms.to_be_bytes());
        v.extend_from_slice(&a.mac);
        push_raw_tlv(&mut f, LLDP_TLV_ORG, &v);
    }
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

/// A parsed Shoal probe: which switch port it claims to come from, the raw
/// id TLV values the MAC covers, and its authentication TLV if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LldpProbe {
    /// Datapath id of the sending switch.
    pub dpid: u64,
    /// OpenFlow port the probe left from.
    pub port: u32,
    /// Value of the chassis id TLV (subtype byte first).
    pub chassis_id: Vec<u8>,
    /// Value of the port id TLV (subtype byte first).
    pub port_id: Vec<u8>,
    /// Shoal's authentication TLV, when present.
    pub auth: Option<ProbeAuth>,
}

/// Parses an LLDP frame written by [`build_lldp`]. Frames whose chassis or
/// port id is not Shoal's are [`PacketError::ForeignLldp`]; a TLV that runs
/// past the frame or appears twice is [`PacketError::BadLldp`]; Shoal's
/// authentication TLV with a wrong length is [`PacketError::BadAuth`].
/// Other organizationally specific TLVs are skipped.
pub fn parse_lldp(data: &[u8]) -> Result<LldpProbe, PacketError> {
    let body = data.get(14..).ok_or(PacketError::TooShort(data.len()))?;
    if data.get(12..14) != Some(&ETH_TYPE_LLDP.to_be_bytes()[..]) {
        return Err(PacketError::BadLldp("not an LLDP ethertype"));
    }
    let mut rest = body;
    let mut chassis: Option<(u64, &[u8])> = None;
    let mut port: Option<(u32, &[u8])> = None;
    let mut auth: Option<ProbeAuth> = None;
    while rest.len() >= 2 {
        let hdr = u16::from_be_bytes([rest[0], rest[1]]);
        let ty = hdr >> 9;
        let len = (hdr & 0x1ff) as usize;
        let value = rest
            .get(2..2 + len)
            .ok_or(PacketError::BadLldp("TLV runs past the frame"))?;
        rest = rest.get(2 + len..).unwrap_or_default();
        match ty {
            0 => break,
            1 => {
                if chassis.is_some() {
                    return Err(PacketError::BadLldp("two chassis id TLVs"));
                }
                chassis = Some((parse_chassis(value)?, value));
            }
            2 => {
                if port.is_some() {
                    return Err(PacketError::BadLldp("two port id TLVs"));
                }
                port = Some((parse_port(value)?, value));
            }
            LLDP_TLV_ORG
                if value.get(..3) == Some(&SHOAL_OUI[..])
                    && value.get(3) == Some(&SUBTYPE_PROBE_AUTH) =>
            {
                if auth.is_some() {
                    return Err(PacketError::BadAuth("two authentication TLVs"));
                }
                auth = Some(parse_auth(value)?);
            }
            _ => {}
        }
    }
    match (chassis, port) {
        (Some((dpid, chassis_id)), Some((port, port_id))) => Ok(LldpProbe {
            dpid,
            port,
            chassis_id: chassis_id.to_vec(),
            port_id: port_id.to_vec(),
            auth,
        }),
        _ => Err(PacketError::ForeignLldp("missing chassis or port TLV")),
    }
}

/// `7` + `dpid:` + exactly 16 hex digits.
fn parse_chassis(value: &[u8]) -> Result<u64, PacketError> {
    if value.first() != Some(&7) {
        return Err(PacketError::ForeignLldp("chassis id subtype"));
    }
    let s = value.get(1..).unwrap_or_default();
    let hex = s
        .strip_prefix(CHASSIS_PREFIX.as_bytes())
        .ok_or(PacketError::ForeignLldp("chassis id"))?;
    if hex.len() != 16 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(PacketError::ForeignLldp("chassis dpid"));
    }
    let hex = std::str::from_utf8(hex).map_err(|_| PacketError::ForeignLldp("chassis dpid"))?;
    u64::from_str_radix(hex, 16).map_err(|_| PacketError::ForeignLldp("chassis dpid"))
}

/// `7` + 1 to 10 decimal digits fitting a `u32`.
fn parse_port(value: &[u8]) -> Result<u32, PacketError> {
    if value.first() != Some(&7) {
        return Err(PacketError::ForeignLldp("port id subtype"));
    }
    let s = value.get(1..).unwrap_or_default();
    if s.is_empty() || s.len() > 10 || !s.iter().all(u8::is_ascii_digit) {
        return Err(PacketError::ForeignLldp("port id"));
    }
    let s = std::str::from_utf8(s).map_err(|_| PacketError::ForeignLldp("port id"))?;
    s.parse::<u32>()
        .map_err(|_| PacketError::ForeignLldp("port id"))
}

/// OUI (3) + subtype (1) + timestamp (8, big endian) + MAC (32).
fn parse_auth(value: &[u8]) -> Result<ProbeAuth, PacketError> {
    if value.len() != PROBE_AUTH_LEN {
        return Err(PacketError::BadAuth("authentication TLV length"));
    }
    let ts = value
        .get(4..12)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .ok_or(PacketError::BadAuth("timestamp"))?;
    let mac = value
        .get(12..12 + PROBE_MAC_LEN)
        .and_then(|b| <[u8; PROBE_MAC_LEN]>::try_from(b).ok())
        .ok_or(PacketError::BadAuth("MAC"))?;
    Ok(ProbeAuth {
        timestamp_ms: u64::from_be_bytes(ts),
        mac,
    })
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
        let f = build_lldp(0x1122_3344_5566_7788, 42, src, None);
        assert_eq!(f.len(), 60);
        let p = parse_lldp(&f).unwrap();
        assert_eq!(p.dpid, 0x1122_3344_5566_7788);
        assert_eq!(p.port, 42);
        assert_eq!(p.auth, None);
        let (chassis, port) = lldp_ids(0x1122_3344_5566_7788, 42);
        assert_eq!((p.chassis_id, p.port_id), (chassis, port));
        let info = parse_frame(&f).unwrap();
        assert_eq!(info.ethertype, ETH_TYPE_LLDP);
        assert_eq!(info.src, src);
        assert!(info.is_multicast());
        // With the authentication TLV.
        let auth = ProbeAuth {
            timestamp_ms: 0x0102_0304_0506_0708,
            mac: [0xab; PROBE_MAC_LEN],
        };
        let f = build_lldp(7, 4_000_000_000, src, Some(&auth));
        let p = parse_lldp(&f).unwrap();
        assert_eq!((p.dpid, p.port, p.auth), (7, 4_000_000_000, Some(auth)));
    }

    #[test]
    fn foreign_lldp_rejected() {
        let mut f = build_lldp(1, 1, MacAddr([2, 0, 0, 0, 0, 1]), None);
        // Change "dpid:" to "xpid:" in the chassis TLV.
        let pos = f.windows(5).position(|w| w == b"dpid:").unwrap();
        f[pos] = b'x';
        assert!(matches!(parse_lldp(&f), Err(PacketError::ForeignLldp(_))));
        // A TLV length running past the end.
        let mut g = build_lldp(1, 1, MacAddr([2, 0, 0, 0, 0, 1]), None);
        g.truncate(20);
        assert!(parse_lldp(&g).is_err());
        // Non-canonical ids: a short dpid, a signed port number.
        let mut h = build_lldp(1, 1, MacAddr([2, 0, 0, 0, 0, 1]), None);
        let pos = h.windows(1).rposition(|w| w == b"1").unwrap();
        h[pos] = b'+';
        assert!(matches!(parse_lldp(&h), Err(PacketError::ForeignLldp(_))));
    }

    #[test]
    fn duplicate_and_malformed_auth_tlvs_rejected() {
        let src = MacAddr([2, 0, 0, 0, 0, 1]);
        let auth = ProbeAuth {
            timestamp_ms: 5,
            mac: [1; PROBE_MAC_LEN],
        };
        let f = build_lldp(1, 2, src, Some(&auth));
        // The auth TLV is 2 + 44 bytes before the End TLV: append it again.
        let end = f
            .windows(2)
            .rposition(|w| w == [0xfe, PROBE_AUTH_LEN as u8])
            .unwrap();
        let tlv = f[end..end + 2 + PROBE_AUTH_LEN].to_vec();
        let mut twice = f[..end + 2 + PROBE_AUTH_LEN].to_vec();
        twice.extend_from_slice(&tlv);
        twice.extend_from_slice(&[0, 0]);
        assert!(matches!(parse_lldp(&twice), Err(PacketError::BadAuth(_))));
        // One byte short.
        let mut short = f[..end].to_vec();
        short.extend_from_slice(&[0xfe, (PROBE_AUTH_LEN - 1) as u8]);
        short.extend_from_slice(&tlv[2..2 + PROBE_AUTH_LEN - 1]);
        short.extend_from_slice(&[0, 0]);
        assert!(matches!(parse_lldp(&short), Err(PacketError::BadAuth(_))));
        // Another organization's TLV is skipped.
        let mut other = f[..end].to_vec();
        other.extend_from_slice(&[0xfe, 4, 0x00, 0x80, 0xc2, 0x01, 0, 0]);
        assert_eq!(parse_lldp(&other).unwrap().auth, None);
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
