//! Join tokens as an operator handles them: one printable string that carries everything a new
//! node needs to find the cluster, trust it, and prove it may join.
//!
//! `qrt1-` followed by unpadded base64url of:
//!
//! ```text
//! version (1) | role (1: 0 voter, 1 storage) | CA fingerprint (32, SHA-256 of the CA DER)
//! | token id (8) | secret (20) | expiry (8, ms since the epoch, big-endian)
//! | address count (1) | addresses (family 4 or 6, then 4 or 16 bytes, then port (2))...
//! | check (4: the first bytes of SHA-256 of everything before)
//! ```
//!
//! The joiner pins the CA by the fingerprint (a node in the middle, or a rogue node answering
//! mDNS, cannot present that CA's certificate), proves the secret over TLS, and may dial the
//! addresses when mDNS does not reach the cluster. The registry keeps only a hash of the
//! secret. [`mint`] makes a new token and the record the registry keeps of it. Pure: no IO,
//! no clock (the caller passes the time and the random source); writing the record through
//! Raft is the caller's job.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use quorate_base::Role;
use sha2::{Digest, Sha256};

/// What every token starts with.
pub const PREFIX: &str = "qrt1-";
const VERSION: u8 = 1;
const CHECK: usize = 4;
/// Most addresses a token carries.
pub const MAX_ADDRS: usize = 7;

/// A decoded join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the cluster CA's certificate.
    pub ca_fingerprint: [u8; 32],
    /// Public id.
    pub id: u64,
    /// The secret.
    pub secret: [u8; 20],
    /// The role it grants.
    pub role: Role,
    /// Expiry, ms since the epoch.
    pub expires_ms: u64,
    /// Members' QUIC addresses to try.
    pub addrs: Vec<SocketAddr>,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id_hex())
            .field("role", &self.role)
            .field("expires_ms", &self.expires_ms)
            .field("addrs", &self.addrs)
            .finish_non_exhaustive() // never the secret
    }
}

/// Why a string is not a join token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// It does not start with the prefix.
    #[error(
        "malformed join token: it should start with {PREFIX:?} (as `quorate token create` prints it)"
    )]
    Prefix,
    /// Not base64url.
    #[error("malformed join token: it holds characters a token does not have ({0})")]
    Encoding(String),
    /// Too short, too long, or cut off.
    #[error("malformed join token: {0}")]
    Shape(String),
    /// The check does not match.
    #[error(
        "malformed join token: its check does not match (a character was changed or lost in copying)"
    )]
    Check,
    /// Made by another version of quorate.
    #[error("join token of format {0}, which this version of quorate does not read")]
    Version(u8),
}

impl JoinToken {
    /// The id as the registry writes it: 16 lowercase hex digits.
    pub fn id_hex(&self) -> String {
        format!("{:016x}", self.id)
    }

    /// The secret as the joiner proves it: 40 lowercase hex digits.
    pub fn secret_hex(&self) -> String {
        hex::encode(self.secret)
    }

    /// The CA fingerprint, lowercase hex.
    pub fn ca_hex(&self) -> String {
        hex::encode(self.ca_fingerprint)
    }

    /// The printable token.
    pub fn encode(&self) -> String {
        let mut b = Vec::with_capacity(96);
        b.push(VERSION);
        b.push(match self.role {
            Role::Voter => 0,
            Role::Storage => 1,
        });
        b.extend_from_slice(&self.ca_fingerprint);
        b.extend_from_slice(&self.id.to_be_bytes());
        b.extend_from_slice(&self.secret);
        b.extend_from_slice(&self.expires_ms.to_be_bytes());
        let addrs = &self.addrs[..self.addrs.len().min(MAX_ADDRS)];
        b.push(addrs.len() as u8);
        for a in addrs {
            match a.ip() {
                IpAddr::V4(v4) => {
                    b.push(4);
                    b.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    b.push(6);
                    b.extend_from_slice(&v6.octets());
                }
            }
            b.extend_from_slice(&a.port().to_be_bytes());
        }
        let check = Sha256::digest(&b);
        b.extend_from_slice(&check[..CHECK]);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(b))
    }

    /// Reads a printed token; surrounding whitespace is ignored.
    pub fn decode(text: &str) -> Result<JoinToken, TokenError> {
        let body = text.trim().strip_prefix(PREFIX).ok_or(TokenError::Prefix)?;
        let b = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| TokenError::Encoding(e.to_string()))?;
        if b.len() < 2 + CHECK {
            return Err(TokenError::Shape("it is too short".into()));
        }
        let (data, check) = b.split_at(b.len() - CHECK);
        if Sha256::digest(data)[..CHECK] != *check {
            return Err(TokenError::Check);
        }
        if data[0] != VERSION {
            return Err(TokenError::Version(data[0]));
        }
        let mut r = Reader { data, at: 1 };
        let role = match r.take(1)?[0] {
            0 => Role::Voter,
            1 => Role::Storage,
            other => return Err(TokenError::Shape(format!("unknown role {other}"))),
        };
        let mut ca_fingerprint = [0u8; 32];
        ca_fingerprint.copy_from_slice(r.take(32)?);
        let id = u64::from_be_bytes(r.array()?);
        let mut secret = [0u8; 20];
        secret.copy_from_slice(r.take(20)?);
        let expires_ms = u64::from_be_bytes(r.array()?);
        let count = r.take(1)?[0] as usize;
        if count > MAX_ADDRS {
            return Err(TokenError::Shape(format!("{count} addresses")));
        }
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            let ip = match r.take(1)?[0] {
                4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
                6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
                other => {
                    return Err(TokenError::Shape(format!("unknown address family {other}")));
                }
            };
            let port = u16::from_be_bytes(r.array()?);
            addrs.push(SocketAddr::new(ip, port));
        }
        if r.at != data.len() {
            return Err(TokenError::Shape("it has bytes after its end".into()));
        }
        Ok(JoinToken {
            ca_fingerprint,
            id,
            secret,
            role,
            expires_ms,
            addrs,
        })
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], TokenError> {
        let end = self.at + n;
        if end > self.data.len() {
            return Err(TokenError::Shape("it is cut off".into()));
        }
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

/// What a new token is made of, as the operator asked for it (already checked).
#[derive(Clone, Debug)]
pub struct Mint<'a> {
    /// The cluster CA's fingerprint, lowercase hex, as the cluster's identity records it.
    pub ca_fingerprint: &'a str,
    /// The role it grants.
    pub role: Role,
    /// How long it stays valid.
    pub ttl: Duration,
    /// How many joins it allows (`None`: unlimited until expiry).
    pub uses: Option<u32>,
    /// QUIC addresses of the cluster's voters; the first [`MAX_ADDRS`] are carried.
    pub voters: Vec<SocketAddr>,
}

/// A token just made: the printable token for the operator, the record for the registry
/// (which holds a hash of the secret, never the secret).
#[derive(Clone, Debug)]
pub struct Minted {
    /// The token.
    pub token: JoinToken,
    /// What the registry keeps of it.
    pub record: quorate_consensus::TokenRecord,
}

/// The CA fingerprint a token is minted from is not 32 bytes of hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this node's CA fingerprint is damaged")]
pub struct DamagedFingerprint;

/// Makes a join token and its registry record: a random id (never zero) and secret, expiry
/// `now_ms + ttl`, created at `now_ms`, no uses yet.
pub fn mint(
    m: Mint<'_>,
    now_ms: u64,
    rng: &mut impl rand::Rng,
) -> Result<Minted, DamagedFingerprint> {
    let ca = <[u8; 32]>::try_from(hex::decode(m.ca_fingerprint).unwrap_or_default())
        .map_err(|_| DamagedFingerprint)?;
    let mut addrs = m.voters;
    addrs.truncate(MAX_ADDRS);
    let token = JoinToken {
        ca_fingerprint: ca,
        id: rng.random::<u64>() | 1,
        secret: rng.random(),
        role: m.role,
        expires_ms: now_ms + m.ttl.as_millis() as u64,
        addrs,
    };
    let record = quorate_consensus::TokenRecord {
        id: token.id_hex(),
        secret_hash: quorate_consensus::secret_hash(&token.secret_hex()),
        proof_key: Some(quorate_consensus::token_proof_key(&token.secret_hex())),
        role: m.role,
        expires_ms: token.expires_ms,
        max_uses: m.uses,
        uses: 0,
        revoked: false,
        created_ms: now_ms,
    };
    Ok(Minted { token, record })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JoinToken {
        JoinToken {
            ca_fingerprint: [7; 32],
            id: 0x0123_4567_89ab_cdef,
            secret: [9; 20],
            role: Role::Storage,
            expires_ms: 1_800_000_000_000,
            addrs: vec![
                "10.0.0.11:7947".parse().expect("addr"),
                "[fd00::1]:7947".parse().expect("addr"),
            ],
        }
    }

    #[test]
    fn tokens_round_trip_and_stay_short() {
        let t = sample();
        let text = t.encode();
        assert!(text.starts_with(PREFIX));
        assert!(text.len() < 160, "{} chars", text.len());
        assert_eq!(JoinToken::decode(&format!("  {text}\n")), Ok(t.clone()));
        assert_eq!(t.id_hex(), "0123456789abcdef");
        assert!(
            !format!("{t:?}").contains(&t.secret_hex()),
            "Debug hides the secret"
        );
    }

    #[test]
    fn every_kind_of_damage_is_named() {
        let text = sample().encode();
        assert_eq!(JoinToken::decode("hello"), Err(TokenError::Prefix));
        assert!(matches!(
            JoinToken::decode(&format!("{PREFIX}!!!")),
            Err(TokenError::Encoding(_))
        ));
        // One character changed: the check catches it.
        let mut chars: Vec<char> = text.chars().collect();
        let i = PREFIX.len() + 10;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let changed: String = chars.into_iter().collect();
        assert_eq!(JoinToken::decode(&changed), Err(TokenError::Check));
        // Cut off: the check no longer matches, or the shape is wrong.
        let cut = &text[..text.len() - 6];
        assert!(JoinToken::decode(cut).is_err());
        for n in 0..text.len() {
            // Never a panic, whatever the prefix of a token.
            let _ = JoinToken::decode(&text[..n]);
        }
    }

    #[test]
    fn another_version_is_refused_as_such() {
        let mut b = vec![2u8, 0];
        let check = Sha256::digest(&b);
        b.extend_from_slice(&check[..CHECK]);
        let text = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(b));
        assert_eq!(JoinToken::decode(&text), Err(TokenError::Version(2)));
    }

    #[test]
    fn a_minted_token_matches_its_record() {
        use rand::SeedableRng as _;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let voters: Vec<SocketAddr> = (1..=9)
            .map(|i| format!("10.0.0.{i}:7947").parse().expect("addr"))
            .collect();
        let ca = hex::encode([7u8; 32]);
        let m = |uses| Mint {
            ca_fingerprint: &ca,
            role: Role::Storage,
            ttl: Duration::from_secs(3600),
            uses,
            voters: voters.clone(),
        };
        let Minted { token, record } = mint(m(Some(3)), 1_000, &mut rng).expect("minted");
        assert_eq!(token.ca_fingerprint, [7; 32]);
        assert_eq!(token.role, Role::Storage);
        assert_eq!(token.expires_ms, 1_000 + 3_600_000);
        assert_eq!(token.addrs, voters[..MAX_ADDRS].to_vec());
        assert_eq!(token.id & 1, 1, "the id is never zero");
        assert_eq!(record.id, token.id_hex());
        assert_eq!(
            record.secret_hash,
            quorate_consensus::secret_hash(&token.secret_hex())
        );
        assert_ne!(
            record.secret_hash,
            token.secret_hex(),
            "only a hash is kept"
        );
        assert_eq!(
            record.proof_key,
            Some(quorate_consensus::token_proof_key(&token.secret_hex())),
            "the public key that checks the holder's proofs"
        );
        assert_eq!(record.role, quorate_consensus::Role::Storage);
        assert_eq!(
            (record.expires_ms, record.created_ms),
            (token.expires_ms, 1_000)
        );
        assert_eq!(
            (record.max_uses, record.uses, record.revoked),
            (Some(3), 0, false)
        );
        assert_eq!(JoinToken::decode(&token.encode()), Ok(token.clone()));
        let again = mint(m(None), 1_000, &mut rng).expect("minted");
        assert_ne!(
            again.token.secret, token.secret,
            "every token has its own secret"
        );
        assert_eq!(again.record.max_uses, None);
        let damaged = Mint {
            ca_fingerprint: "not hex",
            ..m(None)
        };
        assert_eq!(
            mint(damaged, 1_000, &mut rng).err(),
            Some(DamagedFingerprint)
        );
    }
}
