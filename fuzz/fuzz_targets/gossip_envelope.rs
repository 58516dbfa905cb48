//! Fuzz target `gossip_envelope`: the property is `props::gossip_envelope` in `tests/fuzz/props.rs`, which the
//! corpus test replays.

#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz/props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::gossip_envelope(data));
