//! The binary protocol: frames, their bincode-format payloads, and the conversion to
//! and from engine types. Documented byte by byte in `PROTOCOL.md`.
//!
//! # Why bincode 2.0.x
//! SPEC §2.1 asks for the bincode *format*. The `bincode` crate is unmaintained (3.0.0 is
//! a compile-error tombstone), so it is pinned to `~2.0.1` and used only here, behind
//! [`encode`] and [`decode`], with one configuration ([`CONFIG`]): swapping it for the
//! format-compatible `wincode` touches this file only.
//!
//! # Framing
//! Every frame is a 4-byte big-endian payload length followed by the payload: one
//! [`ClientFrame`] (client to server) or [`ServerFrame`] (server to client) in the
//! bincode "standard" configuration (little-endian, variable-length integers).

mod wire;

pub use wire::*;

use bincode::config::{Configuration, LittleEndian, Varint};

use crate::config::FRAME_BYTES_MAX_LIMIT;

/// The one bincode configuration of the protocol. The decode limit bounds what a
/// length prefix inside a payload can make the decoder allocate.
pub const CONFIG: Configuration<
    LittleEndian,
    Varint,
    bincode::config::Limit<FRAME_BYTES_MAX_LIMIT>,
> = bincode::config::standard().with_limit::<FRAME_BYTES_MAX_LIMIT>();

/// Bytes of the length prefix.
pub const HEADER_BYTES: usize = 4;

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("undecodable payload: {0}")]
    Bincode(#[from] bincode::error::DecodeError),
    #[error("{0} trailing bytes after the payload")]
    Trailing(usize),
}

pub fn encode<T: bincode::Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, CONFIG).expect("encoding into a Vec cannot fail")
}

/// Decodes a whole payload: trailing bytes are an error, not ignored.
pub fn decode<T: bincode::Decode<()>>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, used) = bincode::decode_from_slice(bytes, CONFIG)?;
    if used != bytes.len() {
        return Err(DecodeError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// A length-delimited codec for frames of at most `frame_bytes_max` payload bytes.
pub fn codec(frame_bytes_max: usize) -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .length_field_length(HEADER_BYTES)
        .big_endian()
        .max_frame_length(frame_bytes_max)
        .new_codec()
}

/// A whole frame (header and payload), for clients and tests that write raw bytes.
pub fn frame_bytes<T: bincode::Encode>(value: &T) -> Vec<u8> {
    let payload = encode(value);
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}
