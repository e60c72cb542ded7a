//! The config parsers: any text is a valid `giftstream.toml` / `economy.toml` or an error
//! naming a key, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = giftstream::config::Config::from_toml_str(text) {
            let _ = config.validate();
        }
        let _ = giftstream::economy::Economy::from_toml_str(text);
    }
});
