//! The leader's half of the join handshake: check the joiner against the cluster and the
//! admission rules ([`super::join`]) before anything is signed, refuse a registered node id
//! asked for with another key, check its token proof and the token itself against the
//! registry, and only then consume the token through Raft (a refused token costs no write),
//! sign its certificate request (with its role and a bounded lifetime), record it with its
//! key, add it as a learner, and answer with the CA, its certificate, what its role needs
//! (the CA key for a voter only, the secrets for its role) sealed to the key its request
//! named ([`super::seal`]), and the leader's key proof bound to its nonce and the sealed
//! secrets. The joiner's half is [`super::joiner`]. Also the leader's renewal of a member's
//! certificate.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use openraft::{BasicNode, ChangeMembers};
use tracing::info;

use quorate_base::NodeId;

use super::join::{Admit, admit_proof, decide, same, token_proof_ok};
use super::seal::{Secrets, seal};
use super::state::{Inner, not_leader};
use crate::proto::{ConsensusError, JoinReply, JoinRequest};
use crate::registry::{Refusal, Request, Role};
use crate::tls::{self, CertSpec};
use quorate_base::now_ms;

impl Inner {
    /// Admits a joiner (on the leader).
    pub(super) async fn join_local(&self, j: JoinRequest) -> Result<JoinReply, ConsensusError> {
        let _g = self.locks.handover.read().await;
        if !self.is_leader() {
            return Err(not_leader());
        }
        let result = self.admit(j).await;
        match &result {
            Ok(_) => self.counters.joins_admitted.fetch_add(1, Ordering::Relaxed),
            Err(ConsensusError::JoinRefused { .. }) => {
                self.counters.joins_refused.fetch_add(1, Ordering::Relaxed)
            }
            Err(_) => 0,
        };
        result
    }

    pub(super) async fn admit(&self, j: JoinRequest) -> Result<JoinReply, ConsensusError> {
        let refuse = |m: String| ConsensusError::JoinRefused { message: m };
        self.check_quorum(true).await?;
        let registry = self.registry();
        let cluster = registry.cluster.clone().ok_or(ConsensusError::NoLeader)?;
        if j.cluster_name != cluster.name {
            return Err(refuse(format!(
                "this is cluster {:?}, not {:?}",
                cluster.name, j.cluster_name
            )));
        }
        if j.node_id.get() == 0 {
            return Err(refuse("node id 0 is not a node id".into()));
        }
        // Everything is decided before anything is signed or written.
        let now = now_ms();
        let admission = self.admission.config();
        // The joiner verified one of the CAs this node trusts (either, during a rotation).
        let cas = self.ca();
        let verified = match cas.trusts(&j.ca_fingerprint) {
            true => j.ca_fingerprint.clone(),
            false => cas.current.fingerprint.clone(),
        };
        let how = decide(&j, &verified, admission.policy, &admission.keys, now).map_err(refuse)?;
        if !self.admission.nonces.fresh(&j.nonce, now) {
            // Refused all the same (a nonce admits once), but not as a refusal of the joiner:
            // a voter that forwarded the request routes it again when the leadership moves
            // while it is out, so an honest joiner's request can reach a leader twice (under
            // load, with elections). The joiner then asks again with a new request; a replay
            // by anybody else gets no more than this answer.
            return Err(ConsensusError::membership(
                "this join request reached the leader before (routed again when the leadership moved, or replayed); ask again with a new request",
            ));
        }
        if !super::seal::valid_key(&j.seal_to) {
            return Err(refuse(
                "the request names no key to seal its secrets to: the joiner runs an older version; upgrade it".into(),
            ));
        }
        let key = tls::request_key_fingerprint(&j.csr_pem).map_err(|e| refuse(e.to_string()))?;
        if let Some(old) = registry.nodes.get(&j.node_id)
            && old.key.as_deref() != Some(key.as_str())
        {
            return Err(refuse(Refusal::AnotherKey { id: j.node_id }.to_string()));
        }
        let put = Request::PutNode {
            node: j.node.record(j.node_id, Some(key), &j.raft_addr, now),
        };
        registry.check(&put).map_err(|r| refuse(format!("{r}")))?;
        let (signer_pem, ca_key) = cas
            .signer(registry.ca_next.as_deref())
            .map_err(ConsensusError::internal)?;
        let trusted = cas.first(&verified);
        // The token is checked in full against the registry before its use is written: a
        // refused token costs no Raft write.
        let use_token = match (how, &j.token) {
            (Admit::Token, Some(t)) => {
                let record = registry.tokens.get(&t.id).ok_or_else(|| {
                    refuse(Refusal::UnknownToken { id: t.id.clone() }.to_string())
                })?;
                let Some(proof_key) = record.proof_key.clone() else {
                    return Err(refuse(
                        "this join token was made by an older version and cannot be proven: create a new one (quorate token create)".into(),
                    ));
                };
                if !token_proof_ok(&proof_key, &j, &t.proof) {
                    return Err(refuse(Refusal::WrongSecret.to_string()));
                }
                let use_it = Request::UseToken {
                    id: t.id.clone(),
                    secret_hash: String::new(),
                    proof_key: Some(proof_key),
                    role: j.node.role,
                    at_ms: now,
                };
                registry.check(&use_it).map_err(|r| refuse(r.to_string()))?;
                Some(use_it)
            }
            _ => None,
        };
        if let Some(use_it) = use_token {
            let used = self.write_local(use_it).await?;
            used.outcome.map_err(|r| refuse(r.to_string()))?;
        }
        let spec = CertSpec {
            role: j.node.role,
            lifetime: self.me.cert_lifetime,
        };
        let cert_pem = tls::sign_node_request(signer_pem, ca_key, &j.csr_pem, j.node_id, &spec)
            .map_err(|e| refuse(e.to_string()))?;
        self.write_local(put)
            .await?
            .outcome
            .map_err(|r| refuse(r.to_string()))?;
        let m = self.metrics();
        let mem = m.membership_config.membership();
        match mem.get_node(&j.node_id) {
            Some(n) if n.addr == j.raft_addr => {}
            Some(_) => {
                self.change(
                    ChangeMembers::SetNodes(BTreeMap::from([(
                        j.node_id,
                        BasicNode {
                            addr: j.raft_addr.clone(),
                        },
                    )])),
                    true,
                )
                .await?
            }
            None => self.add_learner(j.node_id, j.raft_addr.clone()).await?,
        }
        let proven = match how {
            Admit::Key(k) => Some(k),
            _ => None,
        };
        info!(node = %j.node_id, name = %j.node.name, role = %j.node.role, token = j.token.as_ref().map(|t| t.id.as_str()), key = proven.is_some(), "node admitted as a learner");
        self.pilot.wake.notify_one();
        let secrets = Secrets {
            ca_key_pem: (j.node.role == Role::Voter).then(|| ca_key.to_string()),
            secrets: admission.secrets_for(j.node.role),
        };
        let sealed = seal(&secrets, &j.seal_to, j.node_id, &j.nonce, &cert_pem)
            .map_err(|e| ConsensusError::internal(e.to_string()))?;
        let key_proof =
            proven.map(|k| admit_proof(&k, j.node_id, &cert_pem, &trusted, &j.nonce, &sealed));
        Ok(JoinReply {
            cluster_id: cluster.id,
            cluster_name: cluster.name,
            ca_pem: trusted,
            cert_pem,
            sealed,
            key_proof,
            leader_id: self.id,
        })
    }

    /// Signs a renewed certificate for member `id`, whose current certificate has key `key`
    /// (on the leader): the request must be for the same key (the identity stays), the node
    /// must be recorded and not removed; the role is the registry's.
    pub(super) async fn renew_for(
        &self,
        id: NodeId,
        key: &str,
        csr_pem: &str,
    ) -> Result<String, ConsensusError> {
        let _g = self.locks.handover.read().await;
        if !self.is_leader() {
            return Err(not_leader());
        }
        let asked = tls::request_key_fingerprint(csr_pem).map_err(ConsensusError::membership)?;
        if !same(&asked, key) {
            return Err(ConsensusError::membership(
                "a renewal keeps the node's key: the request is for another key",
            ));
        }
        let registry = self.registry();
        let record = registry.nodes.get(&id).ok_or_else(|| {
            ConsensusError::membership(format!("node {id} is not recorded in the registry"))
        })?;
        if self.deny.denies(id, key) {
            return Err(ConsensusError::Removed);
        }
        let cas = self.ca();
        let (signer_pem, ca_key) = cas
            .signer(registry.ca_next.as_deref())
            .map_err(ConsensusError::internal)?;
        let spec = CertSpec {
            role: record.role,
            lifetime: self.me.cert_lifetime,
        };
        let cert = tls::sign_node_request(signer_pem, ca_key, csr_pem, id, &spec)
            .map_err(ConsensusError::membership)?;
        info!(node = %id, role = %record.role, lifetime = ?spec.lifetime, "certificate renewed");
        Ok(cert)
    }
}
