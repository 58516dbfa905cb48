//! The joiner's half of the join handshake: to each seed in turn, complete the handshake (the
//! seed must present a voter's certificate: only voters admit nodes, and a storage node in
//! the seed list is passed over), then send a certificate request (the key never leaves this
//! node, and stays the same across attempts) with a token proof or a key proof over the whole
//! request, bound to the CA the handshake verified, a fresh nonce, the time and a key of this
//! attempt's to seal the answer's secrets to; check that the answer comes from that CA (and,
//! with a join key, that the admitting leader holds it and answered this request), open the
//! secrets, then save the identity and start as a member. Whoever relays the request sees no
//! secret: the token's secret is never sent, and the answer's secrets are sealed to this
//! node. The leader's half is [`super::admit`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tracing::info;

use super::join::{JoinCredentials, admit_proof, key_proof, same, token_proof};
use super::seal::Opener;
use super::{Consensus, ConsensusConfig, StartError};
use crate::files::{CLUSTER_FORMAT, ClusterFile, Files};
use crate::proto::{ConsensusError, JoinRequest, NodeInfo, Reply, Rpc, TokenProof};
use crate::quic::QuicNet;
use crate::registry::Role;
use crate::tls::{self, Identity, JoinVerifier};
use quorate_base::now_ms;

/// How long a joiner waits for one seed's answer to its request.
const JOIN_DEADLINE: Duration = Duration::from_secs(15);

impl Consensus {
    /// Asks the members at `seeds`, in turn, to admit this node. Returns the running node and
    /// the secrets the cluster handed over.
    pub async fn join(
        config: ConsensusConfig,
        info: NodeInfo,
        cluster_name: &str,
        seeds: &[SocketAddr],
        credentials: JoinCredentials,
    ) -> Result<(Consensus, BTreeMap<String, String>), StartError> {
        let JoinCredentials { trust, token, key } = credentials;
        let files = Files::open(&config.dir)?;
        Self::refuse_if_member(&files)?;
        let key_pem = files.join_key()?;
        let csr_pem = tls::node_request_with(config.node_id, &key_pem)?;
        let verifier = JoinVerifier::new(trust);
        let net = QuicNet::joiner(SocketAddr::new(config.listen.ip(), 0), &verifier)?;
        let mut attempts = Vec::new();
        let mut foreign = 0;
        let mut answered = 0;
        let mut admitted = None;
        for seed in seeds {
            // The handshake first: the request is bound to the CA it verified, so that a
            // member of another CA that relays it to ours gets it refused.
            if let Err(e) = net.dial_addr(*seed, config.join_dial_deadline).await {
                let text = e.to_string();
                if text.contains(tls::FOREIGN_CA) {
                    foreign += 1;
                }
                info!(seed = %seed, error = %text, "join: seed refused or unreachable; trying the next");
                attempts.push(text);
                continue;
            }
            let Some(verified) = verifier.accepted_ca() else {
                attempts.push(format!("{seed}: the handshake verified no CA"));
                continue;
            };
            let opener = Opener::new().map_err(|e| StartError::Raft(e.to_string()))?;
            let mut join = JoinRequest {
                node_id: config.node_id,
                raft_addr: config.advertise.to_string(),
                node: info.clone(),
                key_proof: None,
                csr_pem: csr_pem.clone(),
                token: token.as_ref().map(|t| TokenProof {
                    id: t.id.clone(),
                    proof: String::new(),
                }),
                cluster_name: cluster_name.to_string(),
                ca_fingerprint: tls::der_fingerprint(verified.as_ref()),
                nonce: hex::encode(rand::random::<[u8; 16]>()),
                at_ms: now_ms(),
                seal_to: opener.public().to_string(),
            };
            // The signature covers the request with the token's id in it, then goes into it.
            let proof = token.as_ref().map(|t| token_proof(&t.secret, &join));
            if let (Some(p), Some(t)) = (proof, join.token.as_mut()) {
                t.proof = p;
            }
            join.key_proof = key.map(|k| key_proof(&k, &join));
            let nonce = join.nonce.clone();
            let body = serde_json::to_vec(&Rpc::Join { join })
                .map_err(|e| StartError::Raft(e.to_string()))?;
            let answer = match net.call_addr(*seed, &body, JOIN_DEADLINE).await {
                Ok(a) => a,
                Err(e) => {
                    attempts.push(e.to_string());
                    continue;
                }
            };
            answered += 1;
            match serde_json::from_slice::<Reply>(&answer) {
                Ok(Reply::Joined { res: Ok(reply) }) => {
                    admitted = Some((reply, nonce, opener));
                    break;
                }
                Ok(Reply::Joined {
                    res: Err(e @ ConsensusError::JoinRefused { .. }),
                }) => {
                    net.close();
                    return Err(StartError::JoinRefused(e));
                }
                Ok(Reply::Joined { res: Err(e) }) => attempts.push(format!("{seed}: {e}")),
                Ok(Reply::Refused { reason }) => attempts.push(format!("{seed}: {reason}")),
                Ok(_) => attempts.push(format!("{seed}: an answer to another request")),
                Err(e) => attempts.push(format!("{seed}: unreadable answer ({e})")),
            }
        }
        net.close();
        let Some((reply, nonce, opener)) = admitted else {
            if attempts.is_empty() {
                attempts.push("no seed addresses".into());
            }
            // Only members of other clusters answered (the rest could not be reached).
            let foreign = foreign > 0 && answered == 0;
            return Err(StartError::JoinFailed { attempts, foreign });
        };
        // The CA in the answer must be the one the handshake verified the member against.
        let verified = verifier
            .accepted_ca()
            .map(|der| tls::der_fingerprint(der.as_ref()));
        let answered = tls::ca_fingerprint(&reply.ca_pem)?;
        if verified.as_deref() != Some(answered.as_str()) {
            return Err(StartError::JoinRefused(ConsensusError::JoinRefused {
                message: "the member answered with another CA than the one it presented".into(),
            }));
        }
        tls::check_node_cert(&reply.cert_pem, &key_pem, config.node_id)?;
        if let Some(k) = key {
            let expected = admit_proof(
                &k,
                config.node_id,
                &reply.cert_pem,
                &reply.ca_pem,
                &nonce,
                &reply.sealed,
            );
            if !reply
                .key_proof
                .as_deref()
                .is_some_and(|p| same(p, &expected))
            {
                return Err(StartError::JoinRefused(ConsensusError::JoinRefused {
                    message: "the member that answered does not hold the cluster key: not our cluster, or an impostor".into(),
                }));
            }
        }
        let secrets = opener
            .open(&reply.sealed, config.node_id, &nonce, &reply.cert_pem)
            .map_err(|e| {
                StartError::JoinRefused(ConsensusError::JoinRefused {
                    message: e.to_string(),
                })
            })?;
        let identity = Identity {
            ca_pem: reply.ca_pem.clone(),
            cert_pem: reply.cert_pem.clone(),
            key_pem,
        };
        let ca_key = match info.role {
            Role::Voter => secrets.ca_key_pem.as_deref(),
            Role::Storage => None,
        };
        files.save_identity(&identity, ca_key)?;
        files.drop_join_key();
        files.save_cluster(&ClusterFile {
            format: CLUSTER_FORMAT,
            cluster_id: reply.cluster_id.clone(),
            cluster_name: reply.cluster_name.clone(),
            ca_fingerprint: answered,
            node_id: config.node_id,
            role: info.role,
            bootstrapped: false,
        })?;
        info!(cluster_id = %reply.cluster_id, cluster = %reply.cluster_name, leader = reply.leader_id.to_string(), role = ?info.role, "admitted to the cluster");
        // A new member has no stale term to disrupt the group with: no hold.
        let node = Self::start(config, info, false).await?;
        Ok((node, secrets.secrets))
    }
}
