//! The rules of admission, free of IO: how a joiner proves itself (a join token, or the
//! cluster key), how the admitting leader proves itself back, which joins a policy admits, and
//! the per-source limit on refused attempts. The two halves of the handshake that use these
//! rules are [`super::joiner`] (the node asking) and [`super::admit`] (the leader answering).
//!
//! Nothing here touches the network, Raft or a clock of its own: callers pass `now`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::Digest;

use crate::proto::TokenProof;
use crate::tls::Trust;

use quorate_base::NodeId;

/// How a joiner trusts the cluster and proves itself to it.
#[derive(Clone, Debug)]
pub struct JoinCredentials {
    /// How the cluster's CA is trusted.
    pub trust: Trust,
    /// A join token's proof.
    pub token: Option<TokenProof>,
    /// The cluster key, when the joiner has one: it proves it holds it and demands the same of
    /// the member that admits it.
    pub key: Option<[u8; 32]>,
}

/// Whether joins without a token are admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinPolicy {
    /// Any node that reaches a member may join (an open cluster on a trusted LAN).
    Open,
    /// Nodes that prove they hold the cluster key, or present a valid join token.
    KeyOrToken,
    /// Only nodes with a valid join token.
    TokenOnly,
}

/// HMAC-SHA256 under a 32-byte cluster key, hex: `purpose`, then each part length-prefixed.
fn hmac_hex(key: &[u8; 32], purpose: &str, parts: &[&[u8]]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&k);
    for p in std::iter::once(purpose.as_bytes()).chain(parts.iter().copied()) {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    hex::encode(ctx.sign().as_ref())
}

/// A joiner's proof that it holds the cluster key: bound to its node id, its certificate
/// request and the cluster name, so it cannot be replayed for another node or key.
pub fn key_proof(key: &[u8; 32], node_id: NodeId, csr_pem: &str, cluster_name: &str) -> String {
    hmac_hex(
        key,
        "quorate join/1",
        &[
            &node_id.get().to_be_bytes(),
            csr_pem.as_bytes(),
            cluster_name.as_bytes(),
        ],
    )
}

/// The admitting leader's proof that it holds the cluster key: bound to the certificate it
/// issued and the CA, so a rogue member without the key cannot admit anybody.
pub(super) fn admit_proof(key: &[u8; 32], node_id: NodeId, cert_pem: &str, ca_pem: &str) -> String {
    hmac_hex(
        key,
        "quorate admit/1",
        &[
            &node_id.get().to_be_bytes(),
            cert_pem.as_bytes(),
            ca_pem.as_bytes(),
        ],
    )
}

/// Compares two secrets or proofs in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// SHA-256 of a token secret, hex: what the registry keeps.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// What the leader admits joiners with: the policy, the keys a joiner may prove it holds, the
/// secrets handed to every joiner, and the limit on refused attempts. Set by the agent.
pub(super) struct Admission {
    pub(super) policy: Mutex<JoinPolicy>,
    pub(super) keys: Mutex<Vec<[u8; 32]>>,
    pub(super) secrets: Mutex<BTreeMap<String, String>>,
    pub(super) limit: JoinLimit,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            policy: Mutex::new(JoinPolicy::Open),
            keys: Mutex::default(),
            secrets: Mutex::default(),
            limit: JoinLimit::default(),
        }
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

    #[test]
    fn key_proofs_bind_the_node_the_request_and_the_key() {
        let k = [1u8; 32];
        let p = key_proof(&k, NodeId::new(7), "csr", "c");
        assert!(same(&p, &key_proof(&k, NodeId::new(7), "csr", "c")));
        assert!(!same(&p, &key_proof(&k, NodeId::new(8), "csr", "c")));
        assert!(!same(&p, &key_proof(&k, NodeId::new(7), "csr2", "c")));
        assert!(!same(
            &p,
            &key_proof(&[2u8; 32], NodeId::new(7), "csr", "c")
        ));
        assert_ne!(
            p,
            admit_proof(&k, NodeId::new(7), "csr", "c"),
            "join and admit proofs differ"
        );
    }
}
