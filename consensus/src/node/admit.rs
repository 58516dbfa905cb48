//! The leader's half of the join handshake: check the joiner against the cluster and the
//! admission rules ([`super::join`]), consume its token through Raft, sign its certificate
//! request, record it, add it as a learner, and answer with what it needs (the CA, its
//! certificate, the CA key for a voter, the join secrets, the leader's key proof).
//! The joiner's half is [`super::joiner`].

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use openraft::{BasicNode, ChangeMembers};
use tracing::info;

use super::join::{JoinPolicy, admit_proof, key_proof, same, secret_hash};
use super::state::{Inner, not_leader, now_ms};
use crate::proto::{ConsensusError, JoinReply, JoinRequest};
use crate::registry::{Request, Role};
use crate::tls;

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
        let ca_key = self.me.ca_key.as_ref().ok_or_else(|| {
            ConsensusError::internal("the leader holds no CA key and cannot sign certificates")
        })?;
        let cert_pem = tls::sign_node_request(&self.me.ca_pem, ca_key, &j.csr_pem, j.node_id)
            .map_err(|e| refuse(e.to_string()))?;
        let now = now_ms();
        let put = Request::PutNode {
            node: j.node.record(j.node_id, &j.raft_addr, now),
        };
        registry.check(&put).map_err(|r| refuse(format!("{r}")))?;
        let policy = self
            .admission
            .policy
            .lock()
            .map(|p| *p)
            .unwrap_or(JoinPolicy::TokenOnly);
        let keys = self
            .admission
            .keys
            .lock()
            .map(|k| k.clone())
            .unwrap_or_default();
        let proven_key = j.key_proof.as_ref().and_then(|proof| {
            keys.iter()
                .find(|k| same(&key_proof(k, j.node_id, &j.csr_pem, &j.cluster_name), proof))
                .copied()
        });
        if j.key_proof.is_some() && proven_key.is_none() {
            return Err(refuse(
                "the joiner's cluster key is not this cluster's (check --cluster-key on both sides)".into(),
            ));
        }
        match (&j.token, policy) {
            (None, JoinPolicy::KeyOrToken) if proven_key.is_some() => {}
            (None, JoinPolicy::KeyOrToken) => {
                return Err(refuse(
                    "this cluster is sealed with a cluster key: join with the same --cluster-key, or with a join token (quorate token create on a member)".into(),
                ));
            }
            (Some(t), _) => {
                let used = self
                    .write_local(Request::UseToken {
                        id: t.id.clone(),
                        secret_hash: secret_hash(&t.secret),
                        role: j.node.role,
                        at_ms: now,
                    })
                    .await?;
                used.outcome.map_err(|r| refuse(r.to_string()))?;
            }
            (None, JoinPolicy::Open) => {}
            (None, JoinPolicy::TokenOnly) => {
                return Err(refuse(
                    "this cluster admits nodes with a join token only (quorate token create on a member)".into(),
                ));
            }
        }
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
        info!(node = j.node_id.to_string(), name = %j.node.name, role = ?j.node.role, token = j.token.as_ref().map(|t| t.id.as_str()), key = proven_key.is_some(), "node admitted as a learner");
        let key_proof = proven_key.map(|k| admit_proof(&k, j.node_id, &cert_pem, &self.me.ca_pem));
        Ok(JoinReply {
            cluster_id: cluster.id,
            cluster_name: cluster.name,
            ca_pem: self.me.ca_pem.clone(),
            cert_pem,
            ca_key_pem: (j.node.role == Role::Voter).then(|| ca_key.clone()),
            key_proof,
            secrets: self
                .admission
                .secrets
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default(),
            leader_id: self.id,
        })
    }
}
