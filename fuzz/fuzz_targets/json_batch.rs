//! The JSON batch parser of `POST /v1/events`: any body parses to events or a documented
//! error (400/413/422), never a panic.
#![no_main]
use giftstream::economy::Economy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thread_local!(static ECONOMY: Economy = Economy::embedded());
    ECONOMY.with(|economy| {
        if let Err(e) = giftstream::server::http::events::parse_events(data, economy, 10_000) {
            let status = e.status().as_u16();
            assert!(matches!(status, 400 | 413 | 422), "status {status}");
        }
    });
});
