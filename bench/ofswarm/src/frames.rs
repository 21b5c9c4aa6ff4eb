//! Frames the emulated hosts send (gratuitous ARP, UDP load frames
//! carrying a sequence number) and the packet fields the pipeline matches.

use std::net::Ipv4Addr;

use etherparse::{Ethernet2Slice, LaxNetSlice, LaxSlicedPacket, PacketBuilder, TransportSlice};
use ofp::{MacAddr, Match, OxmField};

use crate::table::{normalise, FieldKey};

/// Ethertype of LLDP.
pub const ETH_TYPE_LLDP: u16 = 0x88cc;
/// Ethertype of ARP.
pub const ETH_TYPE_ARP: u16 = 0x0806;
/// Ethertype of IPv4.
pub const ETH_TYPE_IPV4: u16 = 0x0800;
/// UDP destination port of load frames (discard).
pub const LOAD_UDP_DST: u16 = 9;
/// UDP source port of load frames.
pub const LOAD_UDP_SRC: u16 = 40_000;
/// First bytes of a load frame's UDP payload; the sequence number follows.
pub const LOAD_MAGIC: &[u8; 8] = b"OFSWARM1";

/// UDP destination port of trace frames (churn mode).
pub const TRACE_UDP_DST: u16 = 7;
/// First bytes of a trace frame's UDP payload; the trace id follows.
pub const TRACE_MAGIC: &[u8; 8] = b"OFSWTRC1";

/// A trace frame from `src` to `dst` (churn mode): a UDP packet whose
/// payload carries `id`, followed through the emulated switches.
pub fn trace_frame(src: (MacAddr, Ipv4Addr), dst: (MacAddr, Ipv4Addr), id: u64) -> Vec<u8> {
    udp_frame(src, dst, TRACE_UDP_DST, TRACE_MAGIC, id)
}

/// The id of a trace frame, if `data` is one.
pub fn trace_id(data: &[u8]) -> Option<u64> {
    tagged_u64(data, TRACE_UDP_DST, TRACE_MAGIC)
}

fn udp_frame(
    src: (MacAddr, Ipv4Addr),
    dst: (MacAddr, Ipv4Addr),
    port: u16,
    magic: &[u8; 8],
    value: u64,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0 .0, dst.0 .0)
        .ipv4(src.1.octets(), dst.1.octets(), 64)
        .udp(LOAD_UDP_SRC, port);
    let mut payload = Vec::with_capacity(16);
    payload.extend_from_slice(magic);
    payload.extend_from_slice(&value.to_be_bytes());
    let mut out = Vec::with_capacity(b.size(payload.len()));
    // Writing into a Vec cannot fail for a well-formed builder; an error
    // would only leave the frame empty.
    if b.write(&mut out, &payload).is_err() {
        out.clear();
    }
    out
}

fn tagged_u64(data: &[u8], port: u16, magic: &[u8; 8]) -> Option<u64> {
    let sliced = LaxSlicedPacket::from_ethernet(data).ok()?;
    let Some(TransportSlice::Udp(u)) = &sliced.transport else {
        return None;
    };
    if u.destination_port() != port {
        return None;
    }
    let p = u.payload();
    if p.get(..8)? != magic {
        return None;
    }
    let b: [u8; 8] = p.get(8..16)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// A gratuitous ARP (request for its own address, broadcast) of a host.
pub fn gratuitous_arp(mac: MacAddr, ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&MacAddr::BROADCAST.0);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ETH_TYPE_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f.resize(60, 0);
    f
}

/// A UDP frame from `src` to `dst` whose payload carries `seq`.
pub fn load_frame(src: (MacAddr, Ipv4Addr), dst: (MacAddr, Ipv4Addr), seq: u64) -> Vec<u8> {
    udp_frame(src, dst, LOAD_UDP_DST, LOAD_MAGIC, seq)
}

/// `frame` with an 802.1Q tag (VLAN `vid`, priority 0) after its
/// Ethernet addresses.
pub fn vlan_tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 4);
    out.extend_from_slice(frame.get(..12).unwrap_or(frame));
    out.extend_from_slice(&0x8100u16.to_be_bytes());
    out.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    out.extend_from_slice(frame.get(12..).unwrap_or_default());
    out
}

/// The sequence number of a load frame, if `data` is one.
pub fn load_seq(data: &[u8]) -> Option<u64> {
    tagged_u64(data, LOAD_UDP_DST, LOAD_MAGIC)
}

/// Ethernet source and destination of a frame.
pub fn eth_addrs(data: &[u8]) -> Option<(MacAddr, MacAddr, u16)> {
    let e = Ethernet2Slice::from_slice_without_fcs(data).ok()?;
    Some((
        MacAddr(e.source()),
        MacAddr(e.destination()),
        e.ether_type().0,
    ))
}

/// The exact OXM fields of a frame entering at `in_port`, as the pipeline
/// matches them (Ethernet, ARP, IPv4, UDP, TCP).
pub fn packet_fields(in_port: u32, data: &[u8]) -> Vec<FieldKey> {
    let mut m = Match::new().in_port(in_port);
    if let Some((src, dst, ty)) = eth_addrs(data) {
        m = m.eth_src(src).eth_dst(dst).eth_type(ty);
        if let Ok(sliced) = LaxSlicedPacket::from_ethernet(data) {
            match &sliced.net {
                Some(LaxNetSlice::Arp(a)) => {
                    m = m.with(OxmField::ArpOp(a.operation().0));
                    let ip = |b: &[u8]| <[u8; 4]>::try_from(b).ok().map(Ipv4Addr::from);
                    if let Some(addr) = ip(a.sender_protocol_addr()) {
                        m = m.with(OxmField::ArpSpa { addr, mask: None });
                    }
                    if let Some(addr) = ip(a.target_protocol_addr()) {
                        m = m.with(OxmField::ArpTpa { addr, mask: None });
                    }
                }
                Some(LaxNetSlice::Ipv4(ip)) => {
                    let h = ip.header();
                    m = m
                        .ip_proto(h.protocol().0)
                        .ipv4_src(h.source_addr())
                        .ipv4_dst(h.destination_addr());
                    match &sliced.transport {
                        Some(TransportSlice::Udp(u)) => {
                            m = m.udp_src(u.source_port()).udp_dst(u.destination_port())
                        }
                        Some(TransportSlice::Tcp(t)) => {
                            m = m.tcp_src(t.source_port()).tcp_dst(t.destination_port())
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }
    normalise(&m).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_frames_carry_their_sequence() {
        let a = (MacAddr([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(10, 0, 0, 1));
        let b = (MacAddr([2, 0, 0, 0, 0, 2]), Ipv4Addr::new(10, 0, 0, 2));
        let f = load_frame(a, b, 77);
        assert_eq!(load_seq(&f), Some(77));
        assert_eq!(
            eth_addrs(&f).map(|x| (x.0, x.1, x.2)),
            Some((a.0, b.0, ETH_TYPE_IPV4))
        );
        assert_eq!(load_seq(&gratuitous_arp(a.0, a.1)), None);
        let fields = packet_fields(3, &f);
        assert_eq!(fields.len(), 9);
        let g = packet_fields(1, &gratuitous_arp(a.0, a.1));
        assert_eq!(g.len(), 7);
    }

    #[test]
    fn trace_frames_are_not_load_frames() {
        let a = (MacAddr([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(10, 0, 0, 1));
        let b = (MacAddr([2, 0, 0, 0, 0, 2]), Ipv4Addr::new(10, 0, 0, 2));
        let t = trace_frame(a, b, 9);
        assert_eq!(trace_id(&t), Some(9));
        assert_eq!(load_seq(&t), None);
        assert_eq!(trace_id(&load_frame(a, b, 9)), None);
        assert_eq!(trace_id(&gratuitous_arp(a.0, a.1)), None);
    }
}
