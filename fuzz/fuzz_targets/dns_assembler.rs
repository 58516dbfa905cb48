//! Fuzz target `dns_assembler`: the property is `props::dns_assembler` in `tests/fuzz/props.rs`, which the
//! corpus test replays.

#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz/props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| props::dns_assembler(data));
