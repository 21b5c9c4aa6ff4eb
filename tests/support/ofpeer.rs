//! Helpers of scripted OpenFlow 1.3 switches (tests that speak the wire
//! protocol to the controller themselves).

use ofp::{DescStats, MultipartReplyBody, MultipartRequestBody, PortDesc};

/// Port `n` of a scripted switch; `tag` goes into its MAC address
/// (`02:tag:00:00:nn:nn`) so that two scripted switches differ.
pub fn port(n: u32, tag: u8) -> PortDesc {
    PortDesc {
        port_no: n,
        hw_addr: ofp::MacAddr([2, tag, 0, 0, (n >> 8) as u8, n as u8]),
        name: format!("p{n}"),
        config: 0,
        state: 0,
        curr: 0,
        advertised: 0,
        supported: 0,
        peer: 0,
        curr_speed: 0,
        max_speed: 0,
    }
}

/// The reply of a scripted switch with `ports` to a multipart request:
/// its ports, a description naming it `hw_desc`, and empty statistics.
/// None for a request it does not script.
pub fn multipart_reply(
    req: &MultipartRequestBody,
    ports: impl FnOnce() -> Vec<PortDesc>,
    hw_desc: &str,
) -> Option<MultipartReplyBody> {
    Some(match req {
        MultipartRequestBody::PortDesc => MultipartReplyBody::PortDesc(ports()),
        MultipartRequestBody::Desc => MultipartReplyBody::Desc(DescStats {
            mfr_desc: "test".into(),
            hw_desc: hw_desc.into(),
            sw_desc: "0".into(),
            serial_num: "".into(),
            dp_desc: "".into(),
        }),
        MultipartRequestBody::Flow(_) => MultipartReplyBody::Flow(vec![]),
        MultipartRequestBody::PortStats { .. } => MultipartReplyBody::PortStats(vec![]),
        MultipartRequestBody::Queue { .. } => MultipartReplyBody::Queue(vec![]),
        MultipartRequestBody::Meter { .. } => MultipartReplyBody::Meter(vec![]),
        _ => return None,
    })
}
