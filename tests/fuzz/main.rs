//! The fuzz corpora's findings as ordinary tests: every input under `tests/fuzz/corpus/<target>/`
//! (each crash the fuzzer found, and a minimized set of the inputs that reached new code) runs
//! through its target's property in `props.rs`, the very function the fuzz target calls
//! (`fuzz/`, `benches/results/fuzz.md`). Stable, no sockets, a few milliseconds.

mod props;

use std::path::{Path, PathBuf};

/// Runs `check` over every file of the target's corpus, naming the file that fails; a corpus
/// that is missing or empty fails too.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no inputs", dir.display());
    for path in files {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!(
                "{} fails {target}'s property (see the panic above)",
                path.display()
            );
        }
    }
}

/// TXT records decode without a panic, and what decodes encodes back to itself.
#[test]
fn txt_decode() {
    replay("txt_decode", props::txt_decode);
}

/// DNS responses feed the query assembler and the peer table without a panic; refused
/// packets change nothing; complete instances are handed out once.
#[test]
fn dns_assembler() {
    replay("dns_assembler", props::dns_assembler);
}

/// Join tokens decode without a panic; an accepted token has one spelling and round-trips.
#[test]
fn join_token() {
    replay("join_token", props::join_token);
}

/// Gossip datagrams open without a panic; sealed messages open to themselves once.
#[test]
fn gossip_envelope() {
    replay("gossip_envelope", props::gossip_envelope);
}

/// QUIC request frames parse as the server parses them, without a panic, and write back
/// stably.
#[test]
fn quic_request() {
    replay("quic_request", props::quic_request);
}
