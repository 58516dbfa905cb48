//! Fuzz target `quic_request`: the property is `props::quic_request` in `tests/fuzz/props.rs`, which the
//! corpus test replays.

#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz/props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::quic_request(data));
