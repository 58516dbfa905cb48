//! What a node shows of the group: [`Status`] and one [`MemberView`] per member, from Raft's
//! metrics and the registry as applied here (not linearizable); and what it shows of itself:
//! [`Counts`], its counters read at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::ServerState;
use serde::{Deserialize, Serialize};

use super::join::JoinPolicy;
use super::state::Inner;
use crate::authority::Rule;
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

/// What a member has counted since it started, read at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Writes this node put to the log as leader (its clients', forwarded ones, its own).
    pub writes: u64,
    /// Times a write from this node was sent on to the leader.
    pub writes_forwarded: u64,
    /// Writes from this node that no leader took by the write deadline.
    pub writes_failed: u64,
    /// Joins this node admitted as leader.
    pub joins_admitted: u64,
    /// Joins this node refused as leader (bad token or proof, refused by the registry).
    pub joins_refused: u64,
    /// Joins refused before they were looked at: too many refused joins from one source.
    pub joins_rate_limited: u64,
    /// Requests refused, all of them: by an authority rule, and those no rule names
    /// (unreadable, from a removed identity, naming another node than the certificate's).
    pub requests_refused: u64,
    /// Requests refused by each authority rule, in the order of [`Rule::ALL`].
    pub refused_by_rule: Vec<(Rule, u64)>,
    /// Raft answers refused: a higher vote from a node that is not a voter, or a term far
    /// above this node's ([`crate::MAX_TERM_AHEAD`]).
    pub answers_refused: u64,
    /// Membership changes this node attempted as leader.
    pub membership_changes: u64,
    /// Leadership confirmations this node ran as leader, for reads and joins (one for all the
    /// callers that arrived while the one before was under way).
    pub quorum_checks: u64,
    /// Elections this node started, each after a pre-vote that a majority granted.
    pub campaigns: u64,
    /// Pre-votes this node asked for that found no majority, so it did not campaign.
    pub pre_votes_lost: u64,
    /// Certificates this node renewed for itself.
    pub certificates_renewed: u64,
    /// Failure removals the autopilot held back because no other voter confirmed them.
    pub removals_unconfirmed: u64,
    /// Changes of the leader this node knows: the first leader it learnt, then each other
    /// node it learnt leads (an election without a winner is not one).
    pub leader_changes: u64,
    /// The highest log index this node recorded as committed, if any.
    pub commit_index: Option<u64>,
}

impl Inner {
    pub(super) fn counts(&self) -> Counts {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            writes: g(&c.writes),
            writes_forwarded: g(&c.writes_forwarded),
            writes_failed: g(&c.writes_failed),
            joins_admitted: g(&c.joins_admitted),
            joins_refused: g(&c.joins_refused),
            joins_rate_limited: g(&c.joins_limited),
            requests_refused: g(&c.requests_refused),
            refused_by_rule: Rule::ALL
                .iter()
                .zip(c.refused_by_rule.iter())
                .map(|(r, n)| (*r, g(n)))
                .collect(),
            answers_refused: self.answers.refused(),
            membership_changes: g(&c.membership_changes),
            quorum_checks: g(&c.quorum_checks),
            campaigns: g(&c.campaigns),
            pre_votes_lost: g(&c.pre_votes_lost),
            certificates_renewed: g(&c.renewals),
            removals_unconfirmed: g(&c.removals_unconfirmed),
            leader_changes: g(&c.leader_changes),
            commit_index: self.log.committed_index(),
        }
    }

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
