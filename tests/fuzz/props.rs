//! The properties each fuzz target checks, one function per target, shared by the fuzz crate
//! (`fuzz/fuzz_targets/*.rs` include this file) and the corpus test (`tests/fuzz/main.rs`),
//! so that a finding replays as an ordinary test with exactly the checks that found it.
//!
//! Every function takes the fuzzer's raw bytes, must never panic on them, and panics (with
//! the input's interpretation in the message) only when a property fails. None opens a socket
//! or reads a clock.

use std::collections::BTreeMap;
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use quorate::token::JoinToken;
use quorate_discovery::query::{Assembler, build_query};
use quorate_discovery::{Advert, DEFAULT_SERVICE_TYPE, PeerTable, Stats, TxtError};
use quorate_gossip::{Key, Keyring, Rejected, ReplayGuard};

/// The TXT record's wire form, as the DNS packet carries it: length-prefixed strings, each
/// `key=value` or a bare `key`; keys in lower case, the first of a repeated key kept (as the
/// query assembler builds it).
pub(crate) fn txt_map(wire: &[u8]) -> BTreeMap<String, Option<String>> {
    let mut map = BTreeMap::new();
    let mut rest = wire;
    while let Some((&n, tail)) = rest.split_first() {
        let (s, tail) = tail.split_at((n as usize).min(tail.len()));
        rest = tail;
        let (k, v) = match s.iter().position(|&b| b == b'=') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        map.entry(String::from_utf8_lossy(k).to_ascii_lowercase())
            .or_insert_with(|| v.map(|v| String::from_utf8_lossy(v).into_owned()));
    }
    map
}

/// The pairs [`Advert::encode`] makes, as a decoder sees them.
fn pairs_map(pairs: &[(String, String)]) -> BTreeMap<String, Option<String>> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect()
}

/// `txt_decode`: [`Advert::decode`] never panics; an advert it accepts encodes (unless it is
/// too long to send, which the receiver tolerates) to pairs that decode to the same advert.
pub(crate) fn txt_decode(data: &[u8]) {
    let map = txt_map(data);
    let Ok(advert) = Advert::decode(&map) else {
        return;
    };
    match advert.encode() {
        Ok(pairs) => assert_eq!(
            Advert::decode(&pairs_map(&pairs)).as_ref(),
            Ok(&advert),
            "{map:?} -> {pairs:?}"
        ),
        Err(TxtError::TooLong(_)) => {}
        Err(e) => panic!("{map:?} decodes to {advert:?}, which does not encode: {e}"),
    }
}

/// Splits the input into packets: each a big-endian `u16` length and that many bytes (the
/// last one cut short if the input ends).
pub(crate) fn packets(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let (p, tail) = rest[2..].split_at(n.min(rest.len() - 2));
        out.push(p);
        rest = tail;
    }
    out
}

/// `dns_assembler`: the one-shot query's [`Assembler`] takes any packets without panicking; a
/// packet it refuses changes nothing; each complete instance is handed out once, with an
/// address; what it says is missing can be asked for; and the peer table takes every
/// resolution it hands out.
pub(crate) fn dns_assembler(data: &[u8]) {
    let mut a = Assembler::new(DEFAULT_SERVICE_TYPE);
    let mut table = PeerTable::new(DEFAULT_SERVICE_TYPE, None, Arc::new(Stats::default()));
    for p in packets(data) {
        let before = format!("{a:?}");
        if a.add_packet(p).is_err() {
            assert_eq!(
                before,
                format!("{a:?}"),
                "a refused packet changed the state"
            );
            continue;
        }
        for r in a.complete() {
            assert!(!r.addrs.is_empty(), "{r:?} complete without an address");
            table.resolved(r);
        }
        assert!(a.complete().is_empty(), "an instance handed out twice");
        let missing = a.missing();
        let questions: Vec<(&str, _)> = missing.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let _ = build_query(0, &questions);
    }
}

/// `join_token`: [`JoinToken::decode`] never panics, on the input as text and as lossy text;
/// a token it accepts is the canonical printing of itself (so one token has one spelling),
/// and decodes again to the same token.
pub(crate) fn join_token(data: &[u8]) {
    let lossy = String::from_utf8_lossy(data);
    let exact = std::str::from_utf8(data).ok();
    for text in exact.into_iter().chain([lossy.as_ref()]) {
        let Ok(token) = JoinToken::decode(text) else {
            continue;
        };
        let printed = token.encode();
        assert_eq!(printed, text.trim(), "{token:?} has another spelling");
        assert_eq!(JoinToken::decode(&printed).as_ref(), Ok(&token));
    }
}

/// The fixed keyring the gossip target opens with: the primary and a second installed key.
pub(crate) fn keyring() -> Keyring {
    Keyring::new(vec![Key::from_bytes([1; 32]), Key::from_bytes([2; 32])])
}

/// The sealed datagram's header (magic, format), as `gossip/src/keyring.rs` documents it.
pub(crate) const SEALED_HEADER: [u8; 2] = [0x71, 1];

/// `gossip_envelope`: the first byte picks the mode, the rest is its input.
///
/// - 0: a raw datagram: [`Keyring::open`] never panics, and a datagram it opens is refused as
///   a replay the second time.
/// - 1: `nonce (24) | epoch (8) | seq (8) | id length (1) | id | message`: sealed, it opens to
///   the message, once; a keyring without the key refuses it.
/// - 2: `nonce (24) | plaintext`: any plaintext sealed under the primary key (a peer holding
///   the key, or a bug in the sender): opening never panics and returns the plaintext's tail.
pub(crate) fn gossip_envelope(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let ring = keyring();
    let mut guard = ReplayGuard::default();
    match mode % 3 {
        0 => {
            if ring.open(rest, &mut guard).is_ok() {
                assert_eq!(ring.open(rest, &mut guard), Err(Rejected::Replayed));
            }
        }
        1 => {
            let Some((nonce, rest)) = rest.split_first_chunk::<24>() else {
                return;
            };
            let Some((epoch, rest)) = rest.split_first_chunk::<8>() else {
                return;
            };
            let Some((seq, rest)) = rest.split_first_chunk::<8>() else {
                return;
            };
            let Some((&n, rest)) = rest.split_first() else {
                return;
            };
            let (id, message) = rest.split_at((n as usize).min(rest.len()));
            let id = String::from_utf8_lossy(id);
            let (epoch, seq) = (u64::from_be_bytes(*epoch), u64::from_be_bytes(*seq));
            let sealed = ring
                .seal(*nonce, &id, epoch, seq, message)
                .expect("a keyring with keys seals");
            assert_eq!(sealed[..2], SEALED_HEADER);
            assert_eq!(ring.open(&sealed, &mut guard).as_deref(), Ok(message));
            assert_eq!(ring.open(&sealed, &mut guard), Err(Rejected::Replayed));
            let stranger = Keyring::new(vec![Key::from_bytes([3; 32])]);
            assert_eq!(
                stranger.open(&sealed, &mut ReplayGuard::default()),
                Err(Rejected::AuthFailed)
            );
        }
        _ => {
            let Some((nonce, plain)) = rest.split_first_chunk::<24>() else {
                return;
            };
            let cipher = XChaCha20Poly1305::new((&[1u8; 32]).into());
            let sealed = cipher
                .encrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: plain,
                        aad: &SEALED_HEADER,
                    },
                )
                .expect("encrypt");
            let datagram = [&SEALED_HEADER[..], nonce, &sealed].concat();
            if let Ok(message) = ring.open(&datagram, &mut guard) {
                assert!(plain.ends_with(&message), "{plain:?} opened to {message:?}");
                assert_eq!(plain.len() - message.len(), 1 + plain[0] as usize + 16);
            }
        }
    }
}

/// `quic_request`: the QUIC server's request parser never panics; a request it reads writes
/// back as JSON that reads again and writes back the same.
pub(crate) fn quic_request(data: &[u8]) {
    let Ok(json) = quorate_consensus::decode_request(data) else {
        return;
    };
    let again = quorate_consensus::decode_request(&json);
    assert_eq!(
        again.as_deref(),
        Ok(&json[..]),
        "{}",
        String::from_utf8_lossy(&json)
    );
}
