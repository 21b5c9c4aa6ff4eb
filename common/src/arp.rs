//! The gratuitous ARP frame, built in one place for the host daemon (which
//! sends it after a namespace VM moved) and the controller (whose tests
//! inject it as a PACKET_IN).

use std::net::Ipv4Addr;

/// Length of the frame without Ethernet padding.
pub const GARP_LEN: usize = 42;

/// A gratuitous ARP frame (broadcast ARP request for `ip` from `mac` about
/// itself: sender = target = `ip`), 42 bytes: Ethernet header + ARP.
pub fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Addr) -> [u8; GARP_LEN] {
    let mut f = [0u8; GARP_LEN];
    let ip = ip.octets();
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = f.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    put(0, &[0xff; 6]); // destination: broadcast
    put(6, &mac); // source
    put(12, &[0x08, 0x06]); // ARP
    put(14, &[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]); // Ethernet/IPv4, request
    put(22, &mac); // sender MAC
    put(28, &ip); // sender IP
    put(32, &[0; 6]); // target MAC: unknown
    put(38, &ip); // target IP = sender IP: gratuitous
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let mac = [0x02, 0x5d, 0, 0, 0, 1];
        let f = gratuitous_arp(mac, Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[14..22], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&f[22..28], &mac);
        assert_eq!(&f[28..32], &[10, 0, 0, 7]);
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[10, 0, 0, 7]);
    }
}
