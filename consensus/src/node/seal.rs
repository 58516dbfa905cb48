//! The secrets of a join answer, sealed to the joiner (free of IO).
//!
//! A join answer travels back through whoever holds the joiner's connection, which may be a
//! node in the middle. So what only the joiner may learn (the CA key for a voter, the
//! secrets of its role) is sealed to a key the joiner made for this one request: the joiner
//! sends the public half of an ephemeral X25519 key in its request (`seal_to`, covered by its
//! token or key proof, so it cannot be swapped), the leader agrees a key with an ephemeral
//! key of its own, derives the sealing key with HKDF-SHA256 (salted with the request's nonce,
//! bound to the joiner's node id) and seals with ChaCha20-Poly1305, the joiner's certificate
//! as associated data. Both keys are used once, so one nonce of zeros is safe. A relay sees
//! two public keys and a ciphertext.

use std::collections::BTreeMap;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{EphemeralPrivateKey, UnparsedPublicKey, X25519, agree_ephemeral};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};

use quorate_base::NodeId;

/// What a join answer seals: the CA key (voters only) and the secrets of the joiner's role.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Secrets {
    /// The CA's private key, PEM: voters only.
    pub(crate) ca_key_pem: Option<String>,
    /// The node layer's secrets for the joiner's role (the gossip key), opaque here.
    pub(crate) secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("ca_key", &self.ca_key_pem.is_some())
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why sealing or opening failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SealError {
    /// The joiner's key is not an X25519 public key.
    #[error("the request's sealing key is not an X25519 public key (hex, 32 bytes)")]
    BadKey,
    /// The sealed answer does not open with this joiner's key.
    #[error(
        "the sealed secrets do not open with this request's key: altered on the way, or not for this request"
    )]
    Unopened,
    /// The random source or the key agreement failed.
    #[error("sealing failed: {0}")]
    Crypto(&'static str),
}

/// The joiner's ephemeral key for one request.
pub(crate) struct Opener {
    key: EphemeralPrivateKey,
    public: String,
}

impl Opener {
    /// A new key pair.
    pub(crate) fn new() -> Result<Opener, SealError> {
        let (key, public) = ephemeral()?;
        Ok(Opener {
            key,
            public: hex::encode(public),
        })
    }

    /// The public half, hex: the request's `seal_to`.
    pub(crate) fn public(&self) -> &str {
        &self.public
    }

    /// Opens `sealed` (hex: the leader's public key, then the ciphertext), made for node `id`,
    /// request `nonce`, certificate `cert_pem`.
    pub(crate) fn open(
        self,
        sealed: &str,
        id: NodeId,
        nonce: &str,
        cert_pem: &str,
    ) -> Result<Secrets, SealError> {
        let bytes = hex::decode(sealed).map_err(|_| SealError::Unopened)?;
        if bytes.len() < 32 + CHACHA20_POLY1305.tag_len() {
            return Err(SealError::Unopened);
        }
        let (theirs, ciphertext) = bytes.split_at(32);
        let key = agree(self.key, theirs, id, nonce).map_err(|_| SealError::Unopened)?;
        let mut data = ciphertext.to_vec();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(cert_pem.as_bytes()),
                &mut data,
            )
            .map_err(|_| SealError::Unopened)?;
        serde_json::from_slice(plain).map_err(|_| SealError::Unopened)
    }
}

/// Seals `secrets` to the joiner's public key `to` (hex) for node `id`, request `nonce`,
/// certificate `cert_pem`: hex of this side's ephemeral public key, then the ciphertext.
pub(crate) fn seal(
    secrets: &Secrets,
    to: &str,
    id: NodeId,
    nonce: &str,
    cert_pem: &str,
) -> Result<String, SealError> {
    let theirs = parse_key(to)?;
    let (mine, public) = ephemeral()?;
    let key = agree(mine, &theirs, id, nonce)?;
    let mut data = serde_json::to_vec(secrets).map_err(|_| SealError::Crypto("encoding"))?;
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key([0; 12]),
        Aad::from(cert_pem.as_bytes()),
        &mut data,
    )
    .map_err(|_| SealError::Crypto("sealing"))?;
    let mut out = public;
    out.extend_from_slice(&data);
    Ok(hex::encode(out))
}

/// A joiner's public key as [`seal`] takes it: 32 bytes, hex.
fn parse_key(key: &str) -> Result<Vec<u8>, SealError> {
    hex::decode(key)
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or(SealError::BadKey)
}

/// Whether `key` is a key [`seal`] can seal to.
pub(crate) fn valid_key(key: &str) -> bool {
    parse_key(key).is_ok()
}

/// A new ephemeral X25519 key and its public half.
fn ephemeral() -> Result<(EphemeralPrivateKey, Vec<u8>), SealError> {
    let key = EphemeralPrivateKey::generate(&X25519, &SystemRandom::new())
        .map_err(|_| SealError::Crypto("no random key"))?;
    let public = key
        .compute_public_key()
        .map_err(|_| SealError::Crypto("no public key"))?;
    Ok((key, public.as_ref().to_vec()))
}

/// The sealing key both sides derive: X25519 between `mine` and `theirs`, then HKDF-SHA256
/// salted with the request's nonce, for node `id`.
fn agree(
    mine: EphemeralPrivateKey,
    theirs: &[u8],
    id: NodeId,
    nonce: &str,
) -> Result<LessSafeKey, SealError> {
    let id = id.get().to_be_bytes();
    let info: [&[u8]; 2] = [b"quorate join seal/1", &id];
    agree_ephemeral(mine, &UnparsedPublicKey::new(&X25519, theirs), |shared| {
        let prk = Salt::new(HKDF_SHA256, nonce.as_bytes()).extract(shared);
        let okm = prk
            .expand(&info, &CHACHA20_POLY1305)
            .map_err(|_| SealError::Crypto("key derivation"))?;
        Ok(LessSafeKey::new(UnboundKey::from(okm)))
    })
    .map_err(|_| SealError::BadKey)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets {
            ca_key_pem: Some("-----BEGIN PRIVATE KEY-----\nca\n".into()),
            secrets: BTreeMap::from([("cluster_keys".into(), "k".into())]),
        }
    }

    /// The joiner opens what was sealed to its key for its request; any change of the box,
    /// the node, the nonce or the certificate, or another joiner's key, opens nothing.
    #[test]
    fn only_the_joiner_opens_its_secrets_for_its_request() {
        let id = NodeId::new(7);
        let open = |sealed: &str, id: NodeId, nonce: &str, cert: &str, opener: Opener| {
            opener.open(sealed, id, nonce, cert)
        };
        let o = Opener::new().expect("key");
        let sealed = seal(&secrets(), o.public(), id, "n1", "cert").expect("sealed");
        assert!(!sealed.contains(&hex::encode("cluster_keys")));
        assert_eq!(open(&sealed, id, "n1", "cert", o), Ok(secrets()));

        let cases: [(&str, NodeId, &str, &str); 3] = [
            ("node", NodeId::new(8), "n1", "cert"),
            ("nonce", id, "n2", "cert"),
            ("certificate", id, "n1", "cert2"),
        ];
        for (what, id2, nonce, cert) in cases {
            let o = Opener::new().expect("key");
            let sealed = seal(&secrets(), o.public(), id, "n1", "cert").expect("sealed");
            assert_eq!(
                open(&sealed, id2, nonce, cert, o),
                Err(SealError::Unopened),
                "another {what}"
            );
        }
        let o = Opener::new().expect("key");
        let mut sealed = seal(&secrets(), o.public(), id, "n1", "cert").expect("sealed");
        let last = sealed.pop().expect("a digit");
        sealed.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            open(&sealed, id, "n1", "cert", o),
            Err(SealError::Unopened),
            "altered"
        );
        let (a, b) = (Opener::new().expect("key"), Opener::new().expect("key"));
        let sealed = seal(&secrets(), a.public(), id, "n1", "cert").expect("sealed");
        assert_eq!(
            open(&sealed, id, "n1", "cert", b),
            Err(SealError::Unopened),
            "another joiner's key"
        );
        assert_eq!(
            seal(&secrets(), "zz", id, "n1", "cert"),
            Err(SealError::BadKey)
        );
        assert_eq!(
            seal(&secrets(), &"ab".repeat(31), id, "n1", "cert"),
            Err(SealError::BadKey)
        );
    }
}
