//! The snapshot reader: arbitrary bytes are refused as corrupt (or read, if they are a
//! valid snapshot), never a panic or an unbounded allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = giftstream::persist::snapshot::parse(std::path::Path::new("fuzz.gsnap"), data);
});
