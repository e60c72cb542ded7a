//! The binary protocol: frames, their bincode-format payloads, and the conversion to
//! and from engine types. Documented byte by byte in `PROTOCOL.md`.
//!
//! # Why bincode 2.0.x
//! SPEC §2.1 asks for the bincode *format*. The `bincode` crate is unmaintained (3.0.0 is
//! a compile-error tombstone), so it is pinned to `~2.0.1` and used only here, behind
//! [`encode`]/[`decode`] (frames and journal batches, one configuration: [`CONFIG`]) and
//! [`encode_serde`]/[`decode_serde`] (snapshots): swapping it for the format-compatible
//! `wincode` touches this file only.
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

/// The decode limit of journal entries (written by this service, capped at
/// `persist::redis::JOURNAL_ENTRY_RECORDS_MAX` records, ~200 bytes each in memory): far
/// above any entry, so an entry the journal accepted always reads back, whatever the
/// frame limit of the wire protocol.
pub const JOURNAL_DECODE_BYTES_MAX: usize = 1 << 30;

const JOURNAL_CONFIG: Configuration<
    LittleEndian,
    Varint,
    bincode::config::Limit<JOURNAL_DECODE_BYTES_MAX>,
> = bincode::config::standard().with_limit::<JOURNAL_DECODE_BYTES_MAX>();

/// [`decode`] with the journal's limit ([`JOURNAL_DECODE_BYTES_MAX`]) instead of a
/// frame's: the same format.
pub fn decode_journal<T: bincode::Decode<()>>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, used) = bincode::decode_from_slice(bytes, JOURNAL_CONFIG)?;
    if used != bytes.len() {
        return Err(DecodeError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// Encodes a serde value in the bincode format without a size limit (snapshots: large,
/// local, checksummed files).
pub fn encode_serde<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| e.to_string())
}

/// Decodes a whole serde value written by [`encode_serde`].
pub fn decode_serde<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - used));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The byte-level examples of PROTOCOL.md; if this fails, the document is wrong.
    #[test]
    fn protocol_md_examples_are_exact() {
        let auth = frame_bytes(&ClientFrame::Auth {
            token: "dev-ingest-token-0001".into(),
        });
        assert_eq!(
            hex(&auth),
            "00 00 00 17 00 15 64 65 76 2d 69 6e 67 65 73 74 2d 74 6f 6b 65 6e 2d 30 30 30 31"
        );
        let request = frame_bytes(&ClientFrame::Request {
            request_id: 1,
            events: vec![WireEvent::Gift {
                id: 0x0b7f,
                sender: 42,
                creator: 7,
                stream: 9001,
                gift: 0,
                count: 3,
            }],
        });
        assert_eq!(
            hex(&request),
            "00 00 00 0e 01 01 01 01 fb 7f 0b 2a 07 fb 29 23 00 03"
        );
        let response = frame_bytes(&ServerFrame::Response {
            request_id: 1,
            outcomes: vec![WireOutcome {
                seq: 18,
                status: 0,
                duplicate: false,
                coins: 497,
                value: WireDecimal {
                    mantissa: 0,
                    scale: 0,
                },
            }],
        });
        assert_eq!(
            hex(&response),
            "00 00 00 0b 01 01 01 12 00 00 fb f1 01 00 00"
        );
        let decoded: ClientFrame = decode(&request[HEADER_BYTES..]).unwrap();
        assert!(matches!(
            decoded,
            ClientFrame::Request { request_id: 1, .. }
        ));
    }
}
