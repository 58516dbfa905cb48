//! Disaster recovery when the quorum is lost for good (a majority of the voters' disks are
//! gone): a surviving, stopped voter is made the only voter of its Raft group, in its own
//! files, so that on start it elects itself and the cluster lives on.
//!
//! openraft's effective membership is the last membership entry in the log (committed or
//! not), else the snapshot's. [`Recovery::apply`] appends, in one durable transaction, a
//! membership entry at the next index whose one voter is this node (every other member kept
//! as a learner, with its address), written under a leader id of a term above any this node
//! has seen, then one registry entry per lost voter the registry records (`RemoveNode`: their
//! records go and their identities are refused, since their old state must never vote again),
//! and saves this node's own vote for that term (not committed). On start the node is the only
//! voter: it campaigns, wins its own vote, and its first entry as leader commits all of these.
//!
//! Everything else stays: the cluster id, the CA and its key, the certificates and the
//! registry's other records. It reads no clock and decides nothing beyond this one node's
//! files; the caller (the `quorate recover` command) makes sure the agent is stopped and
//! that the operator agreed. Entries of the lost voters' log that this node never received
//! are lost, as in any such recovery: recover the most up-to-date survivor.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, StoredMembership, Vote,
};
use redb::Database;

use crate::files::{ClusterFile, Files, FilesError};
use crate::registry::{Registry, Request, Role};
use crate::{LogStore, StateMachineStore, TypeConfig};

use quorate_base::NodeId;

/// Why a node's files could not be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The directory holds no cluster.
    #[error("{path} holds no cluster (no cluster.json or raft.redb): nothing to recover")]
    NoCluster {
        /// The consensus directory.
        path: PathBuf,
    },
    /// The Raft database is open in a running agent.
    #[error("{path} is in use (its lock is held): stop the agent first, then run recover again")]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// The node is a storage node.
    #[error(
        "node {node} is a storage node: only a voter-role node can carry the cluster on; recover a surviving voter"
    )]
    NotVoter {
        /// The node.
        node: NodeId,
    },
    /// The node is no longer in the Raft group.
    #[error(
        "node {node} is not a member of its Raft group (it was removed); recover another survivor"
    )]
    NotMember {
        /// The node.
        node: NodeId,
    },
    /// The node is the only voter already.
    #[error("node {node} is the only voter already: its group has its quorum; just start it")]
    AlreadyAlone {
        /// The node.
        node: NodeId,
    },
    /// The node's files.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The Raft database could not be read or written.
    #[error("{path}: {message}")]
    Storage {
        /// The database file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// What a recovery changes in a node's Raft state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// The cluster.
    pub cluster: ClusterFile,
    /// This node.
    pub node: NodeId,
    /// The voters of the effective membership now (every configuration of a joint one).
    pub voters_before: BTreeSet<NodeId>,
    /// The voters after: this node alone.
    pub voters_after: BTreeSet<NodeId>,
    /// The learners after, with their Raft addresses: every member but this node and the lost
    /// voters.
    pub learners: BTreeMap<NodeId, String>,
    /// The voters dropped from the group.
    pub lost: BTreeSet<NodeId>,
    /// The lost voters whose registry records are removed (and identities refused).
    pub records_removed: BTreeSet<NodeId>,
    /// The last log index before the recovery.
    pub last_index: u64,
    /// The term of the saved vote before the recovery.
    pub vote_term: u64,
    /// The term the recovery entries are written under (and this node votes for itself in).
    pub term: u64,
}

/// A stopped node's Raft state, opened for recovery (the database stays locked until this is
/// dropped).
pub struct Recovery {
    db: Arc<Database>,
    path: PathBuf,
    plan: RecoveryPlan,
    entries: Vec<Entry<TypeConfig>>,
    vote: Vote<NodeId>,
}

impl Recovery {
    /// Opens the consensus directory `dir` of a stopped node and works out the plan; changes
    /// nothing.
    pub fn open(dir: &Path) -> Result<Recovery, RecoverError> {
        let files = Files::open(dir)?;
        let path = files.raft_db();
        let (Some(cluster), true) = (files.cluster()?, path.exists()) else {
            return Err(RecoverError::NoCluster {
                path: dir.to_path_buf(),
            });
        };
        let storage = |e: &dyn std::fmt::Display| RecoverError::Storage {
            path: path.clone(),
            message: e.to_string(),
        };
        let db = match Database::create(&path) {
            Ok(db) => Arc::new(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(RecoverError::InUse { path });
            }
            Err(e) => return Err(storage(&e)),
        };
        let sm = StateMachineStore::open(db.clone()).map_err(|e| storage(&e))?;
        let whole = LogStore::new(db.clone())
            .read_whole()
            .map_err(|e| storage(&e))?;
        let (snapshot_applied, snapshot_membership, mut registry) = {
            let d = sm.data();
            let d = d
                .read()
                .map_err(|_| storage(&"state machine lock poisoned"))?;
            (
                d.last_applied,
                d.last_membership.clone(),
                d.registry.clone(),
            )
        };
        let node = cluster.node_id;
        let membership = effective(&whole.entries, snapshot_membership);
        replay(&mut registry, &whole.entries, snapshot_applied);
        let role = registry
            .nodes
            .get(&node)
            .map(|n| n.role)
            .unwrap_or(cluster.role);
        if role != Role::Voter {
            return Err(RecoverError::NotVoter { node });
        }
        let voters_before: BTreeSet<NodeId> = membership.voter_ids().collect();
        if membership.get_node(&node).is_none() {
            return Err(RecoverError::NotMember { node });
        }
        if voters_before == BTreeSet::from([node]) {
            return Err(RecoverError::AlreadyAlone { node });
        }
        let lost: BTreeSet<NodeId> = voters_before
            .iter()
            .copied()
            .filter(|v| *v != node)
            .collect();
        let mut nodes: BTreeMap<NodeId, BasicNode> = membership
            .nodes()
            .filter(|(id, _)| !lost.contains(id))
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        let own = nodes.remove(&node).unwrap_or_else(|| BasicNode {
            addr: String::new(),
        });
        let learners: BTreeMap<NodeId, String> =
            nodes.iter().map(|(id, n)| (*id, n.addr.clone())).collect();
        nodes.insert(node, own);

        let last = whole
            .entries
            .last()
            .map(|e| e.log_id)
            .or(whole.purged)
            .or(snapshot_applied);
        let last_index = last.map_or(0, |l| l.index);
        let vote_term = whole.vote.map_or(0, |v| v.leader_id.term);
        let term = vote_term
            .max(last.map_or(0, |l| l.leader_id.term))
            .checked_add(1)
            .filter(|t| *t <= crate::TERM_CEILING)
            .ok_or_else(|| {
                storage(&format!(
                    "the log's term is at the ceiling of {}: it was forged, not reached",
                    crate::TERM_CEILING
                ))
            })?;
        let leader = CommittedLeaderId::new(term, node);
        let records_removed: BTreeSet<NodeId> = lost
            .iter()
            .copied()
            .filter(|id| registry.nodes.contains_key(id))
            .collect();
        let mut entries = vec![Entry {
            log_id: LogId::new(leader, last_index + 1),
            payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([node])], nodes)),
        }];
        for (i, id) in records_removed.iter().enumerate() {
            entries.push(Entry {
                log_id: LogId::new(leader, last_index + 2 + i as u64),
                payload: EntryPayload::Normal(Request::RemoveNode { node: *id }),
            });
        }
        Ok(Recovery {
            db,
            path,
            plan: RecoveryPlan {
                cluster,
                node,
                voters_before,
                voters_after: BTreeSet::from([node]),
                learners,
                lost,
                records_removed,
                last_index,
                vote_term,
                term,
            },
            entries,
            vote: Vote::new(term, node),
        })
    }

    /// What [`Recovery::apply`] will change.
    pub fn plan(&self) -> &RecoveryPlan {
        &self.plan
    }

    /// Writes the recovery into the node's Raft state, durably, in one transaction.
    pub fn apply(self) -> Result<RecoveryPlan, RecoverError> {
        LogStore::new(self.db.clone())
            .append_with_vote(&self.entries, &self.vote)
            .map_err(|e| RecoverError::Storage {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        Ok(self.plan)
    }
}

/// The effective membership: the last membership entry in the log, else the snapshot's.
fn effective(
    entries: &[Entry<TypeConfig>],
    snapshot: StoredMembership<NodeId, BasicNode>,
) -> Membership<NodeId, BasicNode> {
    entries
        .iter()
        .rev()
        .find_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap_or_else(|| snapshot.membership().clone())
}

/// Applies the registry entries after the snapshot (committed or not: all of them will be
/// committed by the recovered node's first term).
fn replay(registry: &mut Registry, entries: &[Entry<TypeConfig>], after: Option<LogId<NodeId>>) {
    for e in entries {
        if Some(e.log_id) <= after {
            continue;
        }
        if let EntryPayload::Normal(req) = &e.payload {
            let _refused_changes_nothing = registry.apply(req);
        }
    }
}
