//! The binary frame decoder: any bytes decode to a frame or a clean error, never a panic,
//! and a decoded frame encodes back to bytes that decode to the same frame.
#![no_main]
use giftstream::protocol::{self, ClientFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = protocol::decode::<ClientFrame>(data) {
        let again = protocol::encode(&frame);
        let back: ClientFrame = protocol::decode(&again).expect("re-encoded frame decodes");
        assert_eq!(protocol::encode(&back), again);
    }
});
