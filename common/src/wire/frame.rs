//! Frames on the wire: the header, the payload encoded with postcard (an `Events`
//! record by [`super::events`]' fixed layout, a `Stack` record by
//! [`super::stack_record`]'s), and reading frames one at a time.

use std::io::{self, Read, Write};

use serde::Serialize;

use super::{
    Body, HEADER_LEN, MAGIC, MAX_PAYLOAD, Record, Reply, WIRE_VERSION, events, packed::PackedBatch,
    stack_record,
};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The stream ended cleanly between frames.
    #[error("end of stream")]
    Eof,
    /// The stream ended inside a frame.
    #[error("stream truncated inside a frame ({got} of {want} bytes)")]
    Truncated {
        /// Bytes read of the part being read.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// The header does not start with [`MAGIC`].
    #[error("bad frame magic {0:02x?} (not a guestscope stream, or corrupt)")]
    BadMagic([u8; 4]),
    /// The frame was written by a wire version this build does not read.
    #[error(
        "wire version {got} is not supported (this build reads version {supported}); upgrade the collector"
    )]
    UnsupportedVersion {
        /// Version in the frame.
        got: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The payload length is larger than [`MAX_PAYLOAD`].
    #[error("frame payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(u32),
    /// The payload is not a valid [`Record`].
    #[error("corrupt frame payload: {0}")]
    Payload(#[source] postcard::Error),
    /// The payload decoded but had bytes left over.
    #[error("corrupt frame payload: {0} trailing bytes")]
    TrailingBytes(usize),
    /// Reading from the underlying stream failed.
    #[error("reading the stream: {0}")]
    Io(#[source] io::Error),
}

/// Why a frame could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The record could not be encoded.
    #[error("encoding a record: {0}")]
    Encode(#[source] postcard::Error),
    /// The encoded record is larger than [`MAX_PAYLOAD`].
    #[error("record of {0} bytes exceeds the frame limit")]
    TooLarge(usize),
    /// Writing to the underlying stream failed.
    #[error("writing the stream: {0}")]
    Io(#[source] io::Error),
}

/// Encodes `record` as one complete frame (header + payload).
pub fn encode_frame(record: &Record) -> Result<Vec<u8>, EncodeError> {
    encode_frame_into(record, Vec::new())
}

/// Like [`encode_frame`], written into `buf` (emptied first, its capacity kept), so a
/// sender that recycles its frames' buffers faults in no fresh pages per record.
pub fn encode_frame_into(record: &Record, mut buf: Vec<u8>) -> Result<Vec<u8>, EncodeError> {
    buf.clear();
    buf.resize(HEADER_LEN, 0);
    match &record.body {
        // Byte for byte postcard's encoding, several times faster (see `events`),
        // written after the header's room, as every frame is.
        Body::Events(events) => {
            events::encode_into(&mut buf, record.seq, events);
            finish_frame(buf)
        }
        _ => finish_frame(postcard::to_extend(record, buf).map_err(EncodeError::Encode)?),
    }
}

/// Like [`encode_frame_into`], the `Events` record `seq` of a batch packed as its
/// events arrived ([`PackedBatch`]): the same frame as for a record of its events.
pub fn encode_packed_frame_into(
    seq: u64,
    batch: &PackedBatch,
    mut buf: Vec<u8>,
) -> Result<Vec<u8>, EncodeError> {
    buf.clear();
    buf.reserve(HEADER_LEN + 20 + batch.packed_len());
    buf.resize(HEADER_LEN, 0);
    events::encode_packed_into(&mut buf, seq, batch);
    finish_frame(buf)
}

/// Like [`encode_frame_into`], the record `seq` of `Body::Stack { id, ips }` from a
/// slice of frames: the same frame as for that record.
pub fn encode_stack_frame_into(
    seq: u64,
    id: u32,
    ips: &[u64],
    mut buf: Vec<u8>,
) -> Result<Vec<u8>, EncodeError> {
    buf.clear();
    buf.resize(HEADER_LEN, 0);
    stack_record::encode_into(&mut buf, seq, id, ips);
    finish_frame(buf)
}

/// Writes `record` as one frame to `out`.
pub fn write_frame<W: Write>(out: &mut W, record: &Record) -> Result<usize, EncodeError> {
    let frame = encode_frame(record)?;
    out.write_all(&frame).map_err(EncodeError::Io)?;
    Ok(frame.len())
}

/// Parses a frame header, returning the payload length.
pub fn parse_header(header: &[u8; HEADER_LEN]) -> Result<u32, DecodeError> {
    let magic: [u8; 4] = header[0..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != WIRE_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            got: version,
            supported: WIRE_VERSION,
        });
    }
    let len = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if len > MAX_PAYLOAD {
        return Err(DecodeError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a frame payload into a [`Record`].
pub fn decode_payload(payload: &[u8]) -> Result<Record, DecodeError> {
    match events::decode(payload) {
        Some(record) => Ok(record),
        None => decode_payload_as(payload),
    }
}

/// Encodes `reply` as one complete frame.
pub fn encode_reply(reply: &Reply) -> Result<Vec<u8>, EncodeError> {
    encode_as(reply)
}

/// `value` encoded by postcard after the header's room, then the header filled in.
fn encode_as<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let frame = postcard::to_extend(value, vec![0u8; HEADER_LEN]).map_err(EncodeError::Encode)?;
    finish_frame(frame)
}

/// Fills in the header of `frame`, whose payload follows [`HEADER_LEN`] bytes of room.
fn finish_frame(mut frame: Vec<u8>) -> Result<Vec<u8>, EncodeError> {
    let len = frame.len() - HEADER_LEN;
    if len > MAX_PAYLOAD as usize {
        return Err(EncodeError::TooLarge(len));
    }
    frame[0..4].copy_from_slice(&MAGIC);
    frame[4..6].copy_from_slice(&WIRE_VERSION.to_le_bytes());
    frame[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(frame)
}

fn decode_payload_as<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    let (record, rest) = postcard::take_from_bytes(payload).map_err(DecodeError::Payload)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(record)
}

/// Decodes one complete frame from the start of `bytes`, returning the record and
/// the number of bytes it used.
pub fn decode_frame(bytes: &[u8]) -> Result<(Record, usize), DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(if bytes.is_empty() {
            DecodeError::Eof
        } else {
            DecodeError::Truncated {
                got: bytes.len(),
                want: HEADER_LEN,
            }
        });
    }
    let header: &[u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().expect("header length");
    let len = parse_header(header)? as usize;
    let end = HEADER_LEN + len;
    if bytes.len() < end {
        return Err(DecodeError::Truncated {
            got: bytes.len() - HEADER_LEN,
            want: len,
        });
    }
    Ok((decode_payload(&bytes[HEADER_LEN..end])?, end))
}

/// Reads frames one at a time from a byte stream.
pub struct FrameReader<R> {
    inner: R,
    payload: Vec<u8>,
    bytes_read: u64,
}

impl<R: Read> FrameReader<R> {
    /// Wraps a stream.
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            payload: Vec::new(),
            bytes_read: 0,
        }
    }

    /// The underlying stream.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The underlying stream, borrowed (reading from it directly would desynchronize
    /// the frames).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Total bytes consumed from the stream so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Reads the next record. Returns [`DecodeError::Eof`] when the stream ends
    /// exactly between two frames.
    pub fn next_record(&mut self) -> Result<Record, DecodeError> {
        self.next_as()
    }

    /// Reads the next [`Reply`] (the agent's side of a connection).
    pub fn next_reply(&mut self) -> Result<Reply, DecodeError> {
        self.next_as()
    }

    fn next_as<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, DecodeError> {
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut self.inner, &mut header).map_err(DecodeError::Io)?;
        self.bytes_read += got as u64;
        if got == 0 {
            return Err(DecodeError::Eof);
        }
        if got < HEADER_LEN {
            return Err(DecodeError::Truncated {
                got,
                want: HEADER_LEN,
            });
        }
        let len = parse_header(&header)? as usize;
        self.payload.resize(len, 0);
        let got = read_full(&mut self.inner, &mut self.payload).map_err(DecodeError::Io)?;
        self.bytes_read += got as u64;
        if got < len {
            return Err(DecodeError::Truncated { got, want: len });
        }
        decode_payload_as(&self.payload)
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
