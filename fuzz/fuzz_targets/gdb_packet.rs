//! The gdb remote protocol parsers on arbitrary bytes: what a gdbstub (or whatever
//! answers on its socket) could send the client. Framing and every reply grammar
//! must return a value or an error, never panic; a decoded packet re-encodes to a
//! frame that decodes to the same payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qemu_gdb_client::packet::{
    self, Decoder, Frame, StopReply, ThreadId, decode_hex, error_code, le_u64, parse_thread_list,
};
use qemu_gdb_client::target::TargetDescription;

/// The client's packet limit is larger; a small one reaches the limit's error path.
const MAX_PACKET: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input into two reads, as a socket may.
    let (split, stream) = match data.split_first() {
        Some((&s, rest)) => (usize::from(s).min(rest.len()), rest),
        None => return,
    };
    let mut decoder = Decoder::new(MAX_PACKET);
    decoder.feed(&stream[..split]);
    drain(&mut decoder);
    decoder.feed(&stream[split..]);
    drain(&mut decoder);

    let _ = packet::decode_body(stream);
    let _ = decode_hex(stream);
    let _ = le_u64(stream);
    if let Ok(text) = std::str::from_utf8(stream) {
        let _ = ThreadId::parse(text);
        // A target description whose includes all resolve to the same text.
        let _ = TargetDescription::parse(text, &mut |_| Ok(text.to_string()));
    }
});

fn drain(decoder: &mut Decoder) {
    while let Ok(Some(frame)) = decoder.next_frame() {
        if let Frame::Packet(payload) = frame {
            replies(&payload);
            let mut again = Decoder::new(usize::MAX);
            again.feed(&packet::encode(&payload));
            assert_eq!(again.next_frame().unwrap(), Some(Frame::Packet(payload)));
        }
    }
}

/// Every reply grammar the client applies to a packet.
fn replies(payload: &[u8]) {
    if StopReply::looks_like(payload)
        && let Ok(stop) = StopReply::parse(payload)
    {
        let _ = (stop.thread(), stop.signal());
    }
    let _ = parse_thread_list(payload);
    let _ = error_code(payload);
}
