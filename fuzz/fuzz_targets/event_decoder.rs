//! The event decoder: a wire event either converts to a valid engine event or is refused
//! with a message; an accepted one survives the round trip.
#![no_main]
use giftstream::engine::Event;
use giftstream::protocol::{self, WireEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(wire) = protocol::decode::<WireEvent>(data)
        && let Ok(event) = Event::try_from(wire)
    {
        assert_eq!(Event::try_from(WireEvent::from(&event)).ok(), Some(event));
    }
});
