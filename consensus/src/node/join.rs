//! The rules of admission, free of IO: how a joiner proves itself (a join token, or the
//! cluster's join key), how the admitting leader proves itself back, which joins a policy
//! admits ([`decide`]), the nonces that make a request good once, and the per-source limit on
//! refused attempts.
//!
//! Both proofs cover the whole request, the key the joiner asks its secrets to be sealed to
//! ([`super::seal`]) included, so a node in the middle can neither change a request nor send
//! one of its own with a proof it saw. A token's secret never leaves the joiner: it stands for
//! an Ed25519 key pair whose public half the registry keeps ([`token_proof_key`]), and the
//! joiner signs its request with the private half ([`token_proof`]). The two halves of the
//! handshake that use these rules are [`super::joiner`] (the node asking) and [`super::admit`]
//! (the leader answering).
//!
//! Nothing here touches the network, Raft or a clock of its own: callers pass `now`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use quorate_base::{NodeId, Role};
use sha2::Digest;

use crate::proto::JoinRequest;
use crate::tls::Trust;

/// A join token as its holder has it: the public id and the secret, which never leaves the
/// joiner (it signs the request with it, [`token_proof`]).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret {
    /// Token id.
    pub id: String,
    /// The secret.
    pub secret: String,
}

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSecret {{ id: {:?}, .. }}", self.id) // never print the secret
    }
}

/// How a joiner trusts the cluster and proves itself to it.
#[derive(Clone, Debug)]
pub struct JoinCredentials {
    /// How the cluster's CA is trusted.
    pub trust: Trust,
    /// A join token.
    pub token: Option<TokenSecret>,
    /// The cluster's join key (derived from the cluster key), when the joiner has it: it
    /// proves it holds it and demands the same of the member that admits it.
    pub key: Option<[u8; 32]>,
}

/// Whether joins without a token are admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinPolicy {
    /// Any node that reaches a member may join (an open cluster on a trusted LAN).
    Open,
    /// Nodes that prove they hold the join key, or present a valid join token.
    KeyOrToken,
    /// Only nodes with a valid join token.
    TokenOnly,
}

/// What a leader admits joiners with, from the first instant it serves: the policy, the join
/// keys a joiner may prove it holds (the first is also the one the leader proves back with),
/// and the secrets handed to joiners by role (the node layer's: gossip keys).
#[derive(Clone, Debug)]
pub struct AdmissionConfig {
    /// The policy.
    pub policy: JoinPolicy,
    /// Join keys, current first.
    pub keys: Vec<[u8; 32]>,
    /// Secrets a voter-role joiner receives.
    pub voter_secrets: BTreeMap<String, String>,
    /// Secrets a storage-role joiner receives (never anything that admits a voter).
    pub storage_secrets: BTreeMap<String, String>,
}

impl Default for AdmissionConfig {
    /// Token joins only, until told otherwise: the safe default for a library user.
    fn default() -> Self {
        AdmissionConfig {
            policy: JoinPolicy::TokenOnly,
            keys: Vec::new(),
            voter_secrets: BTreeMap::new(),
            storage_secrets: BTreeMap::new(),
        }
    }
}

impl AdmissionConfig {
    /// The secrets for a joiner of `role`.
    pub(super) fn secrets_for(&self, role: Role) -> BTreeMap<String, String> {
        match role {
            Role::Voter => self.voter_secrets.clone(),
            Role::Storage => self.storage_secrets.clone(),
        }
    }
}

/// How far a join request's clock may be from the leader's.
pub(super) const CLOCK_WINDOW_MS: u64 = 5 * 60 * 1000;

/// `purpose`, then each part, each length-prefixed: what a proof is computed over.
fn message(purpose: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Vec::new();
    for p in std::iter::once(purpose.as_bytes()).chain(parts.iter().copied()) {
        m.extend_from_slice(&(p.len() as u64).to_be_bytes());
        m.extend_from_slice(p);
    }
    m
}

/// HMAC-SHA256 of `message` under a 32-byte key, hex.
fn hmac_hex(key: &[u8; 32], message: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    hex::encode(ring::hmac::sign(&k, message).as_ref())
}

/// What a joiner's proofs cover: everything its request says that matters (its node id,
/// address, what it says of itself, certificate request, role and cluster name, the CA its
/// handshake verified, a fresh nonce and its clock, the key its secrets are sealed to, the
/// token it names), under `purpose`.
fn transcript(purpose: &str, j: &JoinRequest) -> Vec<u8> {
    let node = serde_json::to_vec(&j.node).unwrap_or_default();
    let token = j.token.as_ref().map_or("", |t| t.id.as_str());
    message(
        purpose,
        &[
            &j.node_id.get().to_be_bytes(),
            j.raft_addr.as_bytes(),
            &node,
            j.csr_pem.as_bytes(),
            j.node.role.as_str().as_bytes(),
            j.cluster_name.as_bytes(),
            j.ca_fingerprint.as_bytes(),
            j.nonce.as_bytes(),
            &j.at_ms.to_be_bytes(),
            j.seal_to.as_bytes(),
            token.as_bytes(),
        ],
    )
}

/// A joiner's proof that it holds the join key, over its whole request ([`transcript`]). It
/// cannot be replayed (nonce, clock), moved to another node, role, request or sealing key, or
/// relayed by a member of another CA (the fingerprint).
pub fn key_proof(key: &[u8; 32], j: &JoinRequest) -> String {
    hmac_hex(key, &transcript("quorate join/3", j))
}

/// The Ed25519 key pair a token secret stands for.
fn token_key_pair(secret: &str) -> Option<ring::signature::Ed25519KeyPair> {
    let seed = sha2::Sha256::new()
        .chain_update(b"quorate token key/1")
        .chain_update(secret.as_bytes())
        .finalize();
    ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).ok()
}

/// The public half of the key pair `secret` stands for, hex: what the registry keeps of a
/// token to check its proofs.
pub fn token_proof_key(secret: &str) -> String {
    use ring::signature::KeyPair;
    token_key_pair(secret).map_or_else(String::new, |k| hex::encode(k.public_key().as_ref()))
}

/// A joiner's proof that it holds a token's secret: its signature, hex, over its whole
/// request ([`transcript`]); the secret is not sent.
pub fn token_proof(secret: &str, j: &JoinRequest) -> String {
    token_key_pair(secret).map_or_else(String::new, |k| {
        hex::encode(k.sign(&transcript("quorate token join/1", j)).as_ref())
    })
}

/// Whether `proof` is a token proof of `j` under the token's public key `proof_key` (hex).
pub(super) fn token_proof_ok(proof_key: &str, j: &JoinRequest, proof: &str) -> bool {
    let (Ok(key), Ok(sig)) = (hex::decode(proof_key), hex::decode(proof)) else {
        return false;
    };
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
        .verify(&transcript("quorate token join/1", j), &sig)
        .is_ok()
}

/// The admitting leader's proof that it holds the join key: bound to the certificate it issued,
/// the CA, the joiner's nonce and the sealed secrets, so a rogue member without the key cannot
/// admit anybody, an old answer cannot be replayed, and no one on the way can swap the secrets.
pub(super) fn admit_proof(
    key: &[u8; 32],
    node_id: NodeId,
    cert_pem: &str,
    ca_pem: &str,
    nonce: &str,
    sealed: &str,
) -> String {
    hmac_hex(
        key,
        &message(
            "quorate admit/3",
            &[
                &node_id.get().to_be_bytes(),
                cert_pem.as_bytes(),
                ca_pem.as_bytes(),
                nonce.as_bytes(),
                sealed.as_bytes(),
            ],
        ),
    )
}

/// Compares two secrets or proofs in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// SHA-256 of a token secret, hex: what the registry keeps.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// How a join is to be admitted, once its proofs are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// With its token (consumed through Raft).
    Token,
    /// With the join key it proved it holds (the leader proves it back).
    Key([u8; 32]),
    /// Without proof: the cluster is open.
    Open,
}

/// The admission decision before anything is signed or written: which proof admits `j`, or why
/// nothing does. Checks the CA the joiner verified against this cluster's (`ca_fingerprint`),
/// the clock against `now_ms`, and the key proof against the `keys`.
pub(super) fn decide(
    j: &JoinRequest,
    ca_fingerprint: &str,
    policy: JoinPolicy,
    keys: &[[u8; 32]],
    now_ms: u64,
) -> Result<Admit, String> {
    if !same(&j.ca_fingerprint, ca_fingerprint) {
        return Err(
            "the request was made to another CA than this cluster's (relayed by a node in the middle, or an old joiner)"
                .into(),
        );
    }
    if j.nonce.len() < 32 {
        return Err("the request carries no fresh nonce".into());
    }
    if j.at_ms.abs_diff(now_ms) > CLOCK_WINDOW_MS {
        return Err(format!(
            "the joiner's clock is {} s from the leader's (at most {} s allowed): set the clocks right",
            j.at_ms.abs_diff(now_ms) / 1000,
            CLOCK_WINDOW_MS / 1000
        ));
    }
    let proven = j
        .key_proof
        .as_ref()
        .and_then(|p| keys.iter().find(|k| same(&key_proof(k, j), p)).copied());
    if j.key_proof.is_some() && proven.is_none() {
        return Err(
            "the joiner's cluster key is not this cluster's (check --cluster-key on both sides)"
                .into(),
        );
    }
    match (j.token.is_some(), proven, policy) {
        (true, _, _) => Ok(Admit::Token),
        (false, Some(k), JoinPolicy::KeyOrToken | JoinPolicy::Open) => Ok(Admit::Key(k)),
        (false, None, JoinPolicy::Open) => Ok(Admit::Open),
        (false, _, JoinPolicy::KeyOrToken) => Err(
            "this cluster is sealed with a cluster key: join with the same --cluster-key, or with a join token (quorate token create on a voter)".into(),
        ),
        (false, _, JoinPolicy::TokenOnly) => Err(
            "this cluster admits nodes with a join token only (quorate token create on a voter)"
                .into(),
        ),
    }
}

/// What the leader admits joiners with (set by the agent, rotations included), the limit on
/// refused attempts, and the nonces of recent joins.
#[derive(Default)]
pub(super) struct Admission {
    pub(super) config: Mutex<AdmissionConfig>,
    pub(super) limit: JoinLimit,
    pub(super) nonces: Nonces,
}

impl Admission {
    pub(super) fn new(config: AdmissionConfig) -> Self {
        Admission {
            config: Mutex::new(config),
            ..Default::default()
        }
    }

    pub(super) fn config(&self) -> AdmissionConfig {
        self.config.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// Nonces of join requests seen within the clock window: a request whose nonce is here is a
/// replay. Bounded: at most [`Nonces::MAX`] are kept (the oldest go first).
#[derive(Default)]
pub(super) struct Nonces {
    seen: Mutex<Seen>,
}

/// The nonces seen, and the order they came in (with the time, ms).
#[derive(Default)]
struct Seen {
    set: BTreeSet<String>,
    order: VecDeque<(u64, String)>,
}

impl Nonces {
    const MAX: usize = 65_536;

    /// Records `nonce` seen at `now_ms`; false if it was seen already.
    pub(super) fn fresh(&self, nonce: &str, now_ms: u64) -> bool {
        let Ok(mut g) = self.seen.lock() else {
            return false;
        };
        let Seen { set, order } = &mut *g;
        while let Some((t, n)) = order.front()
            && (now_ms.saturating_sub(*t) > 2 * CLOCK_WINDOW_MS || order.len() >= Self::MAX)
        {
            set.remove(n);
            order.pop_front();
        }
        if !set.insert(nonce.to_string()) {
            return false;
        }
        order.push_back((now_ms, nonce.to_string()));
        true
    }
}

/// Refused join attempts per source address: after [`JoinLimit::BURST`] refusals within
/// [`JoinLimit::WINDOW`], further attempts from that address are refused unheard until the
/// window has passed. Bounded: at most [`JoinLimit::SOURCES`] addresses are remembered.
#[derive(Default)]
pub(super) struct JoinLimit {
    failures: Mutex<BTreeMap<std::net::IpAddr, std::collections::VecDeque<Instant>>>,
}

impl JoinLimit {
    const BURST: usize = 5;
    const WINDOW: Duration = Duration::from_secs(60);
    const SOURCES: usize = 4096;

    /// How long `ip` must still wait, if it is blocked.
    pub(super) fn blocked(&self, ip: std::net::IpAddr, now: Instant) -> Option<Duration> {
        let mut f = self.failures.lock().ok()?;
        let q = f.get_mut(&ip)?;
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Self::WINDOW)
        {
            q.pop_front();
        }
        if q.len() >= Self::BURST {
            q.front().map(|t| Self::WINDOW - now.duration_since(*t))
        } else {
            None
        }
    }

    pub(super) fn failed(&self, ip: std::net::IpAddr, now: Instant) {
        let Ok(mut f) = self.failures.lock() else {
            return;
        };
        if f.len() >= Self::SOURCES && !f.contains_key(&ip) {
            // Forget the source whose last failure is oldest.
            if let Some(oldest) = f
                .iter()
                .min_by_key(|(_, q)| q.back().copied())
                .map(|(ip, _)| *ip)
            {
                f.remove(&oldest);
            }
        }
        let q = f.entry(ip).or_default();
        q.push_back(now);
        while q.len() > Self::BURST {
            q.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::TokenProof;

    #[test]
    fn a_source_is_blocked_after_a_burst_of_refusals_until_the_window_passes() {
        let l = JoinLimit::default();
        let ip: std::net::IpAddr = [10, 0, 0, 9].into();
        let other: std::net::IpAddr = [10, 0, 0, 8].into();
        let t0 = Instant::now();
        for i in 0..JoinLimit::BURST {
            assert_eq!(l.blocked(ip, t0), None, "after {i} refusals");
            l.failed(ip, t0 + Duration::from_millis(i as u64));
        }
        assert!(l.blocked(ip, t0 + Duration::from_secs(1)).is_some());
        assert_eq!(l.blocked(other, t0), None, "other sources are not affected");
        assert_eq!(
            l.blocked(ip, t0 + JoinLimit::WINDOW + Duration::from_secs(1)),
            None
        );
    }

    fn request() -> JoinRequest {
        JoinRequest {
            node_id: NodeId::new(7),
            raft_addr: "10.0.0.7:7947".into(),
            node: crate::proto::NodeInfo {
                name: "n7".into(),
                role: Role::Voter,
                gossip_addr: "10.0.0.7:7946".into(),
                api_addr: "127.0.0.1:7948".into(),
                labels: BTreeMap::new(),
            },
            csr_pem: "csr".into(),
            token: None,
            cluster_name: "c".into(),
            key_proof: None,
            ca_fingerprint: "ab".repeat(32),
            nonce: "0".repeat(32),
            at_ms: 1_000_000,
            seal_to: "ef".repeat(32),
        }
    }

    /// Every field of a request a proof must cover: changing any one of them.
    const CHANGES: [fn(&mut JoinRequest); 11] = [
        |j| j.node_id = NodeId::new(8),
        |j| j.raft_addr = "10.0.0.8:7947".into(),
        |j| j.node.api_addr = "10.0.0.8:7948".into(),
        |j| j.csr_pem = "csr2".into(),
        |j| j.node.role = Role::Storage,
        |j| j.cluster_name = "d".into(),
        |j| j.ca_fingerprint = "cd".repeat(32),
        |j| j.nonce = "1".repeat(32),
        |j| j.at_ms += 1,
        |j| j.seal_to = "ee".repeat(32),
        |j| {
            j.token = Some(TokenProof {
                id: "00000000000000aa".into(),
                proof: String::new(),
            })
        },
    ];

    /// A key proof binds every field of the request that matters, and the key: changing any
    /// one of them gives another proof; join and admit proofs differ.
    #[test]
    fn key_proofs_bind_the_node_the_request_and_the_key() {
        let k = [1u8; 32];
        let j = request();
        let p = key_proof(&k, &j);
        assert!(same(&p, &key_proof(&k, &j)));
        for (i, change) in CHANGES.iter().enumerate() {
            let mut other = request();
            change(&mut other);
            assert!(!same(&p, &key_proof(&k, &other)), "change {i}");
        }
        assert!(!same(&p, &key_proof(&[2u8; 32], &j)));
        let admit = admit_proof(&k, NodeId::new(7), "csr", "c", &j.nonce, "sealed");
        assert_ne!(p, admit, "join and admit proofs differ");
        assert_ne!(
            admit,
            admit_proof(&k, NodeId::new(7), "csr", "c", &j.nonce, "other"),
            "the admit proof binds the sealed secrets"
        );
    }

    /// A token proof is checked with the public key alone, which does not reveal the secret;
    /// it holds for its request only (any change of a field breaks it) and for its secret only.
    #[test]
    fn token_proofs_are_checked_without_the_secret_and_bind_the_request() {
        let secret = "0123456789abcdef0123456789abcdef";
        let key = token_proof_key(secret);
        assert_eq!(key.len(), 64);
        assert!(!key.contains(secret));
        let j = request();
        let p = token_proof(secret, &j);
        assert!(token_proof_ok(&key, &j, &p));
        for (i, change) in CHANGES.iter().enumerate() {
            let mut other = request();
            change(&mut other);
            assert!(!token_proof_ok(&key, &other, &p), "change {i}");
        }
        assert!(!token_proof_ok(&token_proof_key("another"), &j, &p));
        assert!(!token_proof_ok(&key, &j, &token_proof("another", &j)));
        assert!(!token_proof_ok(&key, &j, "zz"), "not hex");
        assert!(!token_proof_ok("zz", &j, &p), "no key");
    }

    /// The decision before anything is signed: another CA, a stale clock, a missing nonce, a
    /// wrong key proof and a missing proof under a policy that needs one are each refused;
    /// the right proofs admit.
    #[test]
    fn admission_is_decided_before_anything_is_signed() {
        let k = [1u8; 32];
        let ca = "ab".repeat(32);
        let now = 1_000_000;
        let mut j = request();
        assert!(decide(&j, &"cd".repeat(32), JoinPolicy::Open, &[], now).is_err());
        assert!(decide(&j, &ca, JoinPolicy::Open, &[], now + CLOCK_WINDOW_MS + 1).is_err());
        assert_eq!(decide(&j, &ca, JoinPolicy::Open, &[], now), Ok(Admit::Open));
        assert!(decide(&j, &ca, JoinPolicy::KeyOrToken, &[k], now).is_err());
        assert!(decide(&j, &ca, JoinPolicy::TokenOnly, &[k], now).is_err());
        j.key_proof = Some(key_proof(&[2u8; 32], &j));
        assert!(
            decide(&j, &ca, JoinPolicy::Open, &[k], now).is_err(),
            "a wrong key"
        );
        j.key_proof = Some(key_proof(&k, &j));
        assert_eq!(
            decide(&j, &ca, JoinPolicy::KeyOrToken, &[k], now),
            Ok(Admit::Key(k))
        );
        assert!(decide(&j, &ca, JoinPolicy::TokenOnly, &[k], now).is_err());
        let mut short = request();
        short.nonce = "00".into();
        assert!(decide(&short, &ca, JoinPolicy::Open, &[], now).is_err());
        let mut t = request();
        t.token = Some(TokenProof {
            id: "t".into(),
            proof: "p".into(),
        });
        assert_eq!(
            decide(&t, &ca, JoinPolicy::TokenOnly, &[], now),
            Ok(Admit::Token)
        );
    }

    /// A nonce is good once within the window; old ones are forgotten.
    #[test]
    fn a_nonce_is_good_once() {
        let n = Nonces::default();
        assert!(n.fresh("a", 0));
        assert!(!n.fresh("a", 1));
        assert!(n.fresh("b", 1));
        assert!(
            n.fresh("a", 3 * CLOCK_WINDOW_MS),
            "forgotten after the window"
        );
    }
}
