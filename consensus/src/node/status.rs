//! What a node shows of the group: [`Status`] and one [`MemberView`] per member, from Raft's
//! metrics and the registry as applied here (not linearizable).

use std::collections::{BTreeMap, BTreeSet};

use openraft::ServerState;
use serde::{Deserialize, Serialize};

use super::join::JoinPolicy;
use super::state::Inner;
use crate::registry::{NodeStatus, Role};

use quorate_base::NodeId;

/// A member as `status` shows it: the registry's record and the Raft group's view together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Node id (16 hex digits in JSON).
    #[serde(with = "quorate_base::hex_id")]
    pub id: NodeId,
    /// Name (registry).
    pub name: Option<String>,
    /// Role (registry).
    pub role: Option<Role>,
    /// `voter`, `learner`, or `none` (recorded but not in the group).
    pub suffrage: String,
    /// QUIC address (Raft's address book, else the registry's).
    pub raft_addr: String,
    /// Gossip address.
    pub gossip_addr: Option<String>,
    /// HTTP API address.
    pub api_addr: Option<String>,
    /// Highest log index known replicated to it (on the leader only).
    pub matched_index: Option<u64>,
    /// `active` or `leaving` (registry).
    pub status: Option<NodeStatus>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// One node's view of the group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Cluster id.
    pub cluster_id: String,
    /// Cluster name.
    pub cluster_name: String,
    /// This node.
    #[serde(with = "quorate_base::hex_id")]
    pub node_id: NodeId,
    /// `leader`, `follower`, `learner`, `candidate` or `shutdown`.
    pub state: String,
    /// The leader this node knows.
    #[serde(with = "quorate_base::hex_id::option")]
    pub leader_id: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Highest log index committed and applied here.
    pub commit_index: Option<u64>,
    /// Highest log index here.
    pub last_log_index: Option<u64>,
    /// Target number of voters.
    pub voter_target: u8,
    /// Whether joins without a token are admitted (as this node knows).
    pub open: bool,
    /// Members.
    pub members: Vec<MemberView>,
}

impl Inner {
    pub(super) fn status(&self) -> Status {
        let m = self.metrics();
        let registry = self.registry();
        let mem = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = mem.voter_ids().collect();
        let mut ids: BTreeSet<NodeId> = mem.nodes().map(|(id, _)| *id).collect();
        ids.extend(registry.nodes.keys().copied());
        let members = ids
            .into_iter()
            .map(|id| {
                let rec = registry.nodes.get(&id);
                let raft_addr = mem
                    .get_node(&id)
                    .map(|n| n.addr.clone())
                    .or_else(|| rec.map(|r| r.raft_addr.clone()))
                    .unwrap_or_default();
                let suffrage = if voters.contains(&id) {
                    "voter"
                } else if mem.get_node(&id).is_some() {
                    "learner"
                } else {
                    "none"
                };
                MemberView {
                    id,
                    name: rec.map(|r| r.name.clone()),
                    role: rec.map(|r| r.role),
                    suffrage: suffrage.to_string(),
                    raft_addr,
                    gossip_addr: rec.map(|r| r.gossip_addr.clone()),
                    api_addr: rec.map(|r| r.api_addr.clone()),
                    matched_index: m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten().map(|l| l.index))
                        .or_else(|| {
                            (id == m.id && m.current_leader == Some(m.id))
                                .then_some(m.last_log_index)
                                .flatten()
                        }),
                    status: rec.map(|r| r.status),
                    labels: rec.map(|r| r.labels.clone()).unwrap_or_default(),
                }
            })
            .collect();
        let state = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Learner => "learner",
            ServerState::Candidate => "candidate",
            ServerState::Shutdown => "shutdown",
        };
        Status {
            cluster_id: self.me.cluster.cluster_id.clone(),
            cluster_name: self.me.cluster.cluster_name.clone(),
            node_id: self.id,
            state: state.to_string(),
            leader_id: m.current_leader,
            term: m.current_term,
            commit_index: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
            voter_target: registry.settings.voter_target,
            open: self.admission.config().policy == JoinPolicy::Open,
            members,
        }
    }
}
