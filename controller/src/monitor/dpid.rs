//! Datapath ids as people and the API write them.

/// Formats a datapath id as 16 hex digits.
pub fn dpid_str(dpid: u64) -> String {
    format!("{dpid:016x}")
}

/// Parses a datapath id: 16 hex digits (`00000000000000a1`), `0x…`, or
/// `aa:bb:…` colon-separated hex (as `ovs-ofctl` prints it).
pub fn parse_dpid(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok();
    }
    if s.contains(':') {
        let hex: String = s.split(':').collect();
        if hex.len() > 16 {
            return None;
        }
        return u64::from_str_radix(&hex, 16).ok();
    }
    if s.len() == 16 {
        return u64::from_str_radix(s, 16).ok();
    }
    s.parse().ok()
}
