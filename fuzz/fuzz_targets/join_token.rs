//! Fuzz target `join_token`: the property is `props::join_token` in `tests/fuzz/props.rs`, which the
//! corpus test replays.

#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz/props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::join_token(data));
