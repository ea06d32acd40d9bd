//! The wire decoder on arbitrary bytes: what a compromised or broken guest agent
//! could send the collector. Decoding must return a record or an error, never panic
//! or allocate without bound, and a decoded record must survive a round trip.
#![no_main]

use std::io::Cursor;

use guestscope_common::wire::{FrameReader, decode_frame, decode_payload, encode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The payload decoder alone (postcard and the Events fast path), without the
    // header the fuzzer would otherwise have to guess first.
    if let Ok(record) = decode_payload(data) {
        round_trip(&record);
    }
    // Whole frames, as the collector reads them from the stream.
    let mut reader = FrameReader::new(Cursor::new(data));
    while let Ok(record) = reader.next_record() {
        round_trip(&record);
    }
    // The agent's side: the collector's replies.
    let mut reader = FrameReader::new(Cursor::new(data));
    while reader.next_reply().is_ok() {}
});

/// A decoded record encodes again, and that decodes to the same record.
fn round_trip(record: &guestscope_common::wire::Record) {
    let frame = encode_frame(record).expect("a decoded record encodes");
    let (again, used) = decode_frame(&frame).expect("an encoded record decodes");
    assert_eq!(used, frame.len());
    assert_eq!(&again, record);
}
