//! Sealing gossip datagrams: a keyring of 32-byte cluster keys, XChaCha20-Poly1305, and a
//! replay window. Pure: randomness and identities come in as arguments.
//!
//! A sealed datagram is `magic (1) | format (1) | nonce (24) | ciphertext + tag (16)`, with the
//! first two bytes as associated data. The plaintext is `sender id length (1) | sender id |
//! epoch (8) | sequence (8) | chitchat message`. The sender id, epoch (the sender's start time)
//! and sequence number are authenticated, so the receiver keeps, per sender, the newest epoch
//! and a 128-wide window of sequence numbers, and drops anything older or seen before.
//!
//! Like Serf's keyring, several keys can be installed at once: datagrams are sealed with the
//! primary key and opened with any installed key, which lets a cluster rotate keys without a
//! split (install everywhere, switch the primary everywhere, remove the old one everywhere).

use std::collections::HashMap;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// First byte of every sealed datagram.
pub(crate) const MAGIC: u8 = 0x71;
/// Sealed datagram format version.
pub(crate) const FORMAT: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 2 + NONCE_LEN;
/// Bytes sealing adds to a message with a sender id of `id_len` bytes.
#[cfg(test)]
pub(crate) fn overhead(id_len: usize) -> usize {
    HEADER_LEN + TAG_LEN + 1 + id_len + 16
}
/// The shortest datagram that can be a sealed one.
pub(crate) const MIN_SEALED_LEN: usize = HEADER_LEN + TAG_LEN + 1 + 16;

/// A 32-byte cluster key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material; the fingerprint names it.
        write!(f, "Key({})", self.fingerprint())
    }
}

impl Key {
    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Key(bytes)
    }

    /// Parses a key written in standard base64 (44 characters).
    pub fn from_base64(text: &str) -> Result<Key, KeyError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| KeyError::NotBase64)?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| KeyError::Length(b.len()))?;
        Ok(Key(arr))
    }

    /// The raw key (to derive other proofs from, never to print).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key in standard base64.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// A short public name for the key: 8 hex digits of an authentication tag computed under the
    /// key over a fixed string. It names the key without revealing it.
    pub fn fingerprint(&self) -> String {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let tag = cipher
            .encrypt(
                XNonce::from_slice(&[0u8; NONCE_LEN]),
                &b"quorate key fingerprint"[..],
            )
            .unwrap_or_default();
        tag.iter()
            .rev()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Why a key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not base64.
    #[error("a gossip key is 32 bytes in base64 (44 characters); this is not base64")]
    NotBase64,
    /// Wrong length.
    #[error("a gossip key is 32 bytes in base64 (44 characters); this decodes to {0} bytes")]
    Length(usize),
    /// Removing the primary key.
    #[error("the primary key cannot be removed; make another key primary first")]
    RemovePrimary,
    /// Using a key that is not installed.
    #[error("no key with fingerprint {0} is installed; install it first")]
    NotInstalled(String),
    /// Adopting keys on a node that is sealed already.
    #[error("gossip is sealed already; rotate keys with install, use and remove")]
    AlreadySealed,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Shorter than any sealed datagram, or wrong magic or format.
    TooShort,
    /// No installed key opens it.
    AuthFailed,
    /// Its epoch is older than the sender's newest, or its sequence number was seen or is too old.
    Replayed,
}

/// The installed keys; the first is primary. Empty: open mode (no sealing).
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// A keyring with these keys, the first primary.
    pub fn new(keys: Vec<Key>) -> Self {
        let mut ring = Keyring { keys: Vec::new() };
        for k in keys {
            ring.install(k);
        }
        ring
    }

    /// Whether datagrams are sealed.
    pub fn is_sealed(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Installed keys, primary first.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// Adds a key (opening only, unless it is the first). Installing twice is harmless.
    pub fn install(&mut self, key: Key) {
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }

    /// Makes an installed key the primary: the one new datagrams are sealed with.
    pub fn use_primary(&mut self, fingerprint: &str) -> Result<(), KeyError> {
        let i = self
            .keys
            .iter()
            .position(|k| k.fingerprint() == fingerprint)
            .ok_or_else(|| KeyError::NotInstalled(fingerprint.to_string()))?;
        let key = self.keys.remove(i);
        self.keys.insert(0, key);
        Ok(())
    }

    /// Removes a key that is not the primary.
    pub fn remove(&mut self, fingerprint: &str) -> Result<(), KeyError> {
        let i = self
            .keys
            .iter()
            .position(|k| k.fingerprint() == fingerprint)
            .ok_or_else(|| KeyError::NotInstalled(fingerprint.to_string()))?;
        if i == 0 {
            return Err(KeyError::RemovePrimary);
        }
        self.keys.remove(i);
        Ok(())
    }

    /// Seals `message` from `sender` (its epoch and sequence number) with the primary key.
    /// `None` in open mode.
    pub fn seal(
        &self,
        nonce: [u8; NONCE_LEN],
        sender: &str,
        epoch: u64,
        seq: u64,
        message: &[u8],
    ) -> Option<Vec<u8>> {
        let key = self.keys.first()?;
        let id = &sender.as_bytes()[..sender.len().min(255)];
        let mut plain = Vec::with_capacity(1 + id.len() + 16 + message.len());
        plain.push(id.len() as u8);
        plain.extend_from_slice(id);
        plain.extend_from_slice(&epoch.to_be_bytes());
        plain.extend_from_slice(&seq.to_be_bytes());
        plain.extend_from_slice(message);
        let aad = [MAGIC, FORMAT];
        let cipher = XChaCha20Poly1305::new((&key.0).into());
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .ok()?;
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.extend_from_slice(&aad);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// Opens a sealed datagram with any installed key and checks it against the replay window.
    /// Returns the chitchat message bytes.
    pub fn open(&self, datagram: &[u8], replay: &mut ReplayGuard) -> Result<Vec<u8>, Rejected> {
        if datagram.len() < MIN_SEALED_LEN || datagram[0] != MAGIC || datagram[1] != FORMAT {
            return Err(Rejected::TooShort);
        }
        let (aad, rest) = datagram.split_at(2);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let plain = self
            .keys
            .iter()
            .find_map(|k| {
                XChaCha20Poly1305::new((&k.0).into())
                    .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
                    .ok()
            })
            .ok_or(Rejected::AuthFailed)?;
        let id_len = *plain.first().ok_or(Rejected::AuthFailed)? as usize;
        if plain.len() < 1 + id_len + 16 {
            return Err(Rejected::AuthFailed);
        }
        let id = String::from_utf8_lossy(&plain[1..1 + id_len]).into_owned();
        let num = |at: usize| u64::from_be_bytes(plain[at..at + 8].try_into().unwrap_or([0; 8]));
        let epoch = num(1 + id_len);
        let seq = num(1 + id_len + 8);
        if !replay.accept(&id, epoch, seq) {
            return Err(Rejected::Replayed);
        }
        Ok(plain[1 + id_len + 16..].to_vec())
    }
}

const WINDOW: u64 = 128;
const MAX_SENDERS: usize = 16_384;

#[derive(Clone, Copy, Debug)]
struct Window {
    epoch: u64,
    top: u64,
    seen: u128,
}

/// Per sender: the newest epoch and which of the last 128 sequence numbers were seen.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    senders: HashMap<String, Window>,
}

impl ReplayGuard {
    /// Whether `(epoch, seq)` from `sender` is new; records it if so.
    pub fn accept(&mut self, sender: &str, epoch: u64, seq: u64) -> bool {
        let Some(w) = self.senders.get_mut(sender) else {
            if self.senders.len() >= MAX_SENDERS {
                // Entries exist only for authenticated senders; forgetting one only re-opens
                // its window to datagrams sealed with a cluster key.
                if let Some(k) = self.senders.keys().next().cloned() {
                    self.senders.remove(&k);
                }
            }
            self.senders.insert(
                sender.to_string(),
                Window {
                    epoch,
                    top: seq,
                    seen: 1,
                },
            );
            return true;
        };
        if epoch > w.epoch {
            *w = Window {
                epoch,
                top: seq,
                seen: 1,
            };
            return true;
        }
        if epoch < w.epoch {
            return false;
        }
        if seq > w.top {
            let shift = seq - w.top;
            w.seen = if shift >= WINDOW { 0 } else { w.seen << shift };
            w.seen |= 1;
            w.top = seq;
            return true;
        }
        let back = w.top - seq;
        if back >= WINDOW || w.seen & (1u128 << back) != 0 {
            return false;
        }
        w.seen |= 1u128 << back;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Key {
        Key::from_bytes([b; 32])
    }

    #[test]
    fn sealed_datagrams_open_with_any_installed_key_and_not_without() {
        let a = Keyring::new(vec![key(1)]);
        let sealed = a.seal([7; 24], "n1", 10, 1, b"hello").expect("sealed");
        assert_eq!(sealed.len(), b"hello".len() + overhead(2));
        let mut guard = ReplayGuard::default();
        assert_eq!(a.open(&sealed, &mut guard), Ok(b"hello".to_vec()));

        let both = Keyring::new(vec![key(2), key(1)]);
        let sealed = a.seal([8; 24], "n1", 10, 2, b"x").expect("sealed");
        assert_eq!(
            both.open(&sealed, &mut guard),
            Ok(b"x".to_vec()),
            "a secondary key opens"
        );

        let other = Keyring::new(vec![key(3)]);
        let sealed = a.seal([9; 24], "n1", 10, 3, b"x").expect("sealed");
        assert_eq!(
            other.open(&sealed, &mut ReplayGuard::default()),
            Err(Rejected::AuthFailed)
        );
    }

    #[test]
    fn tampering_truncation_and_junk_are_rejected() {
        let ring = Keyring::new(vec![key(1)]);
        let sealed = ring.seal([7; 24], "n1", 10, 1, b"hello").expect("sealed");
        for i in [0usize, 1, 5, 30, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            let r = ring.open(&bad, &mut ReplayGuard::default());
            assert!(
                matches!(r, Err(Rejected::AuthFailed) | Err(Rejected::TooShort)),
                "byte {i}: {r:?}"
            );
        }
        assert_eq!(
            ring.open(&sealed[..sealed.len() - 1], &mut ReplayGuard::default()),
            Err(Rejected::AuthFailed)
        );
        assert_eq!(
            ring.open(&sealed[..20], &mut ReplayGuard::default()),
            Err(Rejected::TooShort)
        );
        assert_eq!(
            ring.open(&[], &mut ReplayGuard::default()),
            Err(Rejected::TooShort)
        );
        assert_eq!(
            ring.open(&[0x55; 200], &mut ReplayGuard::default()),
            Err(Rejected::TooShort)
        );
    }

    #[test]
    fn replays_and_old_epochs_are_rejected() {
        let ring = Keyring::new(vec![key(1)]);
        let mut guard = ReplayGuard::default();
        let d1 = ring.seal([1; 24], "n1", 10, 1, b"a").expect("sealed");
        let d2 = ring.seal([2; 24], "n1", 10, 2, b"b").expect("sealed");
        assert!(ring.open(&d2, &mut guard).is_ok());
        assert!(
            ring.open(&d1, &mut guard).is_ok(),
            "out of order within the window is fine"
        );
        assert_eq!(ring.open(&d1, &mut guard), Err(Rejected::Replayed));
        assert_eq!(ring.open(&d2, &mut guard), Err(Rejected::Replayed));
        let restarted = ring.seal([3; 24], "n1", 11, 1, b"c").expect("sealed");
        assert!(
            ring.open(&restarted, &mut guard).is_ok(),
            "a newer epoch resets the window"
        );
        let stale = ring.seal([4; 24], "n1", 10, 99, b"d").expect("sealed");
        assert_eq!(
            ring.open(&stale, &mut guard),
            Err(Rejected::Replayed),
            "an older epoch is refused"
        );
    }

    #[test]
    fn the_window_slides() {
        let mut g = ReplayGuard::default();
        assert!(g.accept("s", 1, 1000));
        assert!(!g.accept("s", 1, 1000 - WINDOW), "too old");
        assert!(g.accept("s", 1, 1000 - WINDOW + 1));
        assert!(g.accept("s", 1, 5000), "a jump clears the window");
        assert!(!g.accept("s", 1, 5000));
        assert!(g.accept("t", 1, 1), "senders are separate");
    }

    #[test]
    fn rotation_keeps_a_mixed_cluster_talking() {
        // Node A already switched its primary to the new key; node B only installed it.
        let mut a = Keyring::new(vec![key(1)]);
        let mut b = Keyring::new(vec![key(1)]);
        a.install(key(2));
        b.install(key(2));
        a.use_primary(&key(2).fingerprint()).expect("installed");
        let from_a = a.seal([1; 24], "a", 1, 1, b"m").expect("sealed");
        let from_b = b.seal([2; 24], "b", 1, 1, b"m").expect("sealed");
        assert!(b.open(&from_a, &mut ReplayGuard::default()).is_ok());
        assert!(a.open(&from_b, &mut ReplayGuard::default()).is_ok());
        assert_eq!(
            a.remove(&key(2).fingerprint()),
            Err(KeyError::RemovePrimary)
        );
        a.remove(&key(1).fingerprint()).expect("remove old");
        assert_eq!(a.keys(), &[key(2)]);
    }

    #[test]
    fn keys_parse_from_base64_and_never_print() {
        let k = key(9);
        assert_eq!(Key::from_base64(&k.to_base64()), Ok(k.clone()));
        assert_eq!(Key::from_base64("abc"), Err(KeyError::NotBase64));
        assert_eq!(Key::from_base64("AAAA"), Err(KeyError::Length(3)));
        assert!(!format!("{k:?}").contains(&k.to_base64()));
        assert_eq!(k.fingerprint().len(), 8);
        assert_ne!(k.fingerprint(), key(8).fingerprint());
    }
}
