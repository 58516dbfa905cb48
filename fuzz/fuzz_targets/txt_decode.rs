//! Fuzz target `txt_decode`: the property is `props::txt_decode` in `tests/fuzz/props.rs`, which the
//! corpus test replays.

#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz/props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::txt_decode(data));
