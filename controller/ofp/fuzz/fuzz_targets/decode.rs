//! Fuzz target: framing, decoding, the zero-copy flow-stats iterator,
//! reassembly and re-encoding must never panic, and a decoded message that
//! re-encodes must decode to the same value again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ofp::{check_frame, flow_stats_entries, Message, MultipartAssembler, MultipartReply, OfpMessage};

fuzz_target!(|data: &[u8]| {
    let _ = check_frame(data);
    if let Ok(m) = OfpMessage::decode(data) {
        if let Ok(bytes) = m.to_vec() {
            let again = OfpMessage::decode(&bytes).expect("re-encoded message must decode");
            assert_eq!(again, m, "decode(encode(decode(x))) != decode(x)");
        }
        if let Message::MultipartReply(r) = m.body {
            let mut asm = MultipartAssembler::new(1 << 16);
            let _ = asm.push(MultipartReply { flags: 1, ..r.clone() }, data.len());
            let _ = asm.push(r, data.len());
        }
    }
    if let Ok(it) = flow_stats_entries(data) {
        for e in it.flatten() {
            let _ = (e.cookie(), e.packet_count(), e.byte_count(), e.table_id(), e.priority());
            let _ = (e.duration_sec(), e.duration_nsec(), e.idle_timeout(), e.flags());
            let _ = (e.in_port(), e.eth_src(), e.eth_dst());
            if let Ok(f) = e.to_owned() {
                let _ = f.encode(&mut Vec::new());
            }
        }
    }
});
