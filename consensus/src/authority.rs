//! Who may do what: the management plane (voter-role members) governs; a storage-plane member
//! may change only its own record; a caller without a certificate may only ask to join.
//!
//! Pure: [`check`] takes the caller as its certificate and the registry describe it (never as
//! its request claims) and the request, and says yes, or which [`Rule`] refuses it. The request
//! handler (`node::serve`) asks it for every request from another node, and the node's own
//! routing asks it before forwarding a request of its own, so that a storage node's operator
//! hears the refusal even when no leader is reachable.
//!
//! | request | voter-role member | storage-role member | no certificate |
//! |---|---|---|---|
//! | Raft RPCs (append, vote, snapshot) | yes | no | no |
//! | admin: promote, demote, remove, settings, step-down | yes | no | no |
//! | tokens: create, revoke (and the registry's token list) | yes | no | no |
//! | its own record: labels, address, leave | yes | yes | no |
//! | read the registry | yes | yes (without tokens) | no |
//! | backup: take a snapshot, restore one | yes | no | no |
//! | forward a stranger's join | yes | no | no |
//! | renew its own certificate | yes | yes | no |
//! | hand another member its role's keys (a rotation) | yes | no | no |
//! | join (CSR and token or key proof) | - | - | yes, answered by voters |
//!
//! A removed node is refused before this: its certificate fails the handshake. A certificate
//! is the caller's only as far as the registry agrees ([`Caller::of_cert`]): its key must be
//! the one the registry records for its node id, and a node id the registry does not hold has
//! no authority, so a certificate minted outside the cluster (with a kept CA key) governs
//! nothing. Only a node that has applied no registry yet (a learner catching up) takes a
//! certificate's stated role, for the Raft RPCs that bring it the registry.

use quorate_base::{NodeId, Role};

use crate::proto::{AdminOp, ConsensusError};
use crate::registry::Request;

/// The rule that refused a request: its name is what an operator sees (the API answers 403
/// naming it) and what the refusal counters are keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// Raft RPCs come from voter-role members only.
    RaftByVoters,
    /// Membership and settings are changed by voter-role members only.
    AdminByVoters,
    /// Join tokens are created, listed and revoked by voter-role members only.
    TokensByVoters,
    /// A storage-role member changes only its own record.
    OwnRecordOnly,
    /// Only voter-role members forward a stranger's join (strangers ask voters).
    JoinsByVoters,
    /// The caller is not a member of this cluster.
    MembersOnly,
    /// A certificate's key must be the one the registry records for its node.
    RecordedKey,
}

impl Rule {
    /// The rule's name, as the API and the logs give it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::RaftByVoters => "raft-by-voters",
            Rule::AdminByVoters => "admin-by-voters",
            Rule::TokensByVoters => "tokens-by-voters",
            Rule::OwnRecordOnly => "own-record-only",
            Rule::JoinsByVoters => "joins-by-voters",
            Rule::MembersOnly => "members-only",
            Rule::RecordedKey => "recorded-key",
        }
    }

    /// Every rule, for counters.
    pub const ALL: [Rule; 7] = [
        Rule::RaftByVoters,
        Rule::AdminByVoters,
        Rule::TokensByVoters,
        Rule::OwnRecordOnly,
        Rule::JoinsByVoters,
        Rule::MembersOnly,
        Rule::RecordedKey,
    ];
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Who asks: the node its certificate names, in the role the registry records for it (or,
/// for a node the registry does not know yet, the role its certificate states).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The node.
    pub id: NodeId,
    /// Its role; `None`: a certificate of this cluster's CA, but neither the registry nor the
    /// certificate says the node's role (not a member).
    pub role: Option<Role>,
}

/// What the registry applied on this node says of a certificate's node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded<'a> {
    /// A record: the node's role and its key's fingerprint (`None` in records from before
    /// keys were recorded, which any key matches until the node brings its record up to date).
    Node {
        /// The recorded role.
        role: Role,
        /// The recorded key fingerprint.
        key: Option<&'a str>,
    },
    /// No record, in a registry that holds the cluster: not a member.
    Absent,
    /// This node has applied no registry yet (a learner catching up).
    Nothing,
}

impl Caller {
    /// The caller as the registry's record (`recorded`) and its certificate (`stated`) describe
    /// it: the registry wins; the certificate speaks only for a node the registry does not know
    /// (it was admitted moments ago, and this node has not applied its record yet).
    pub fn of(id: NodeId, recorded: Option<Role>, stated: Option<Role>) -> Caller {
        Caller {
            id,
            role: recorded.or(stated),
        }
    }

    /// The caller a certificate makes (`id`, its `stated` role, its `key` fingerprint), as far
    /// as the registry agrees: the recorded role when the key is the recorded one, refused by
    /// [`Rule::RecordedKey`] when it is not; no role for a node the registry does not hold;
    /// the stated role only on a node that has applied no registry yet.
    pub fn of_cert(
        id: NodeId,
        stated: Option<Role>,
        key: &str,
        recorded: Recorded<'_>,
    ) -> Result<Caller, Forbidden> {
        match recorded {
            Recorded::Node { key: Some(k), .. } if k != key => Err(Forbidden {
                rule: Rule::RecordedKey,
                message: format!(
                    "node {id}'s certificate holds another key than the one the registry records for it: a certificate minted outside the cluster, or a removed node's"
                ),
            }),
            Recorded::Node { role, .. } => Ok(Caller::of(id, Some(role), None)),
            Recorded::Absent => Ok(Caller::of(id, None, None)),
            Recorded::Nothing => Ok(Caller::of(id, None, stated)),
        }
    }
}

/// What a caller asks for, as far as authority goes.
#[derive(Clone, Copy, Debug)]
pub enum Action<'a> {
    /// AppendEntries, Vote, PreVote or InstallSnapshot, and the voters' own calls among
    /// themselves (a hand-over's Elect, Suspects).
    Raft,
    /// A registry write.
    Write(&'a Request),
    /// A linearizable read of the registry.
    Read,
    /// A snapshot of the registry for a backup (join tokens included).
    Snapshot,
    /// A membership change.
    Admin(&'a AdminOp),
    /// A stranger's join, forwarded by a member.
    ForwardJoin,
    /// A new certificate for the caller's own identity.
    Renew,
    /// Hand the callee a change of the secrets its role holds (a cluster-wide key rotation).
    Secrets,
}

/// A refusal: the rule and what it means for this request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forbidden {
    /// The rule.
    pub rule: Rule,
    /// The operator's explanation.
    pub message: String,
}

impl From<Forbidden> for ConsensusError {
    fn from(f: Forbidden) -> ConsensusError {
        ConsensusError::Forbidden {
            rule: f.rule.name().to_string(),
            message: f.message,
        }
    }
}

fn refuse(rule: Rule, message: impl Into<String>) -> Result<(), Forbidden> {
    Err(Forbidden {
        rule,
        message: message.into(),
    })
}

/// Whether `caller` may do `action`.
pub fn check(caller: Caller, action: Action<'_>) -> Result<(), Forbidden> {
    let role = match caller.role {
        Some(r) => r,
        None => {
            return refuse(
                Rule::MembersOnly,
                format!("node {} is not a member of this cluster", caller.id),
            );
        }
    };
    if role == Role::Voter {
        return Ok(());
    }
    let storage = "storage-plane nodes";
    match action {
        Action::Read | Action::Renew => Ok(()),
        Action::Raft => refuse(
            Rule::RaftByVoters,
            format!("{storage} take no part in Raft elections or replication"),
        ),
        Action::Snapshot => refuse(
            Rule::AdminByVoters,
            format!(
                "{storage} cannot take a snapshot (it holds the join tokens); run it on a voter"
            ),
        ),
        Action::ForwardJoin => refuse(
            Rule::JoinsByVoters,
            format!("{storage} do not admit nodes; ask a voter"),
        ),
        Action::Secrets => refuse(
            Rule::AdminByVoters,
            format!("{storage} do not hand keys to other nodes; rotate keys on a voter"),
        ),
        Action::Admin(AdminOp::Leave { node }) if *node == caller.id => Ok(()),
        Action::Admin(AdminOp::Leave { .. }) => refuse(
            Rule::OwnRecordOnly,
            format!("{storage} may make only themselves leave"),
        ),
        Action::Admin(op) => refuse(
            Rule::AdminByVoters,
            format!(
                "{storage} cannot {}; run it on a voter",
                match op {
                    AdminOp::Promote { .. } => "promote nodes",
                    AdminOp::Demote { .. } => "demote nodes",
                    AdminOp::Remove { .. } => "remove nodes",
                    AdminOp::StepDown { .. } => "move the leadership",
                    AdminOp::Leave { .. } => "make other nodes leave",
                }
            ),
        ),
        Action::Write(req) => write(caller.id, req),
    }
}

/// A storage-role member's registry write.
fn write(me: NodeId, req: &Request) -> Result<(), Forbidden> {
    let own = |node: NodeId, what: &str| {
        if node == me {
            Ok(())
        } else {
            refuse(
                Rule::OwnRecordOnly,
                format!("storage-plane nodes may change only their own {what}, not node {node}'s"),
            )
        }
    };
    match req {
        Request::PutNode { node } => own(node.id, "record"),
        Request::SetLabel { node, .. } | Request::RemoveLabel { node, .. } => own(*node, "labels"),
        Request::MarkLeaving { node } => own(*node, "record"),
        Request::CreateToken { .. } | Request::RevokeToken { .. } | Request::UseToken { .. } => {
            refuse(
                Rule::TokensByVoters,
                "storage-plane nodes cannot create, use or revoke join tokens; run it on a voter",
            )
        }
        Request::RemoveNode { .. } => refuse(
            Rule::AdminByVoters,
            "storage-plane nodes cannot remove nodes; run it on a voter",
        ),
        Request::Noop => refuse(
            Rule::AdminByVoters,
            "storage-plane nodes write only their own record",
        ),
        Request::Restore { .. } => refuse(
            Rule::AdminByVoters,
            "storage-plane nodes cannot restore a snapshot; run it on a voter",
        ),
        Request::RotateCa { .. } | Request::SwitchCa { .. } => refuse(
            Rule::AdminByVoters,
            "storage-plane nodes cannot rotate the CA; run it on a voter",
        ),
        Request::SetSettings { .. } | Request::InitCluster { .. } => refuse(
            Rule::AdminByVoters,
            "storage-plane nodes cannot change the cluster's settings; run it on a voter",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Carried, ClusterInfo, NodeRecord, NodeStatus, Settings, TokenRecord};

    const ME: NodeId = NodeId::new(7);
    const OTHER: NodeId = NodeId::new(8);

    /// Only a voter-role member hands another member keys (a rotation's step).
    #[test]
    fn only_voters_hand_keys() {
        assert_eq!(
            check(Caller::of(ME, Some(Role::Voter), None), Action::Secrets),
            Ok(())
        );
        assert_eq!(
            check(Caller::of(ME, Some(Role::Storage), None), Action::Secrets).map_err(|f| f.rule),
            Err(Rule::AdminByVoters)
        );
    }

    /// A certificate is a caller only as far as the registry agrees: the recorded role for
    /// the recorded key, a refusal for another key, nothing for an id without a record, and
    /// the stated role only where no registry has been applied yet.
    #[test]
    fn a_certificate_speaks_only_with_the_recorded_key() {
        let voter = |key| Recorded::Node {
            role: Role::Voter,
            key,
        };
        assert_eq!(
            Caller::of_cert(ME, Some(Role::Voter), "k1", voter(Some("k1"))),
            Ok(Caller::of(ME, Some(Role::Voter), None))
        );
        let other = Caller::of_cert(ME, Some(Role::Voter), "k2", voter(Some("k1")))
            .expect_err("another key");
        assert_eq!(other.rule, Rule::RecordedKey);
        assert_eq!(
            Caller::of_cert(ME, Some(Role::Storage), "k2", voter(None)),
            Ok(Caller::of(ME, Some(Role::Voter), None)),
            "a record from before keys: the registry's role"
        );
        let stranger = Caller::of_cert(ME, Some(Role::Voter), "k", Recorded::Absent)
            .expect("a caller without a role");
        assert_eq!(
            check(stranger, Action::Read).map_err(|f| f.rule),
            Err(Rule::MembersOnly)
        );
        assert_eq!(
            Caller::of_cert(ME, Some(Role::Voter), "k", Recorded::Nothing),
            Ok(Caller::of(ME, Some(Role::Voter), None)),
            "a node that applied nothing yet takes the certificate's word"
        );
    }

    fn storage() -> Caller {
        Caller::of(ME, Some(Role::Storage), None)
    }

    fn record(id: NodeId) -> NodeRecord {
        NodeRecord {
            id,
            name: "n".into(),
            role: Role::Storage,
            raft_addr: "10.0.0.1:7947".into(),
            gossip_addr: "10.0.0.1:7946".into(),
            api_addr: "127.0.0.1:7948".into(),
            labels: Default::default(),
            status: NodeStatus::Active,
            joined_ms: 1,
            key: None,
        }
    }

    fn refused(c: Caller, a: Action<'_>) -> Rule {
        check(c, a).expect_err("refused").rule
    }

    /// Every row of the table, for a storage-role caller: only its own record, reads,
    /// renewal and its own leave pass; everything else is refused by the rule that names it.
    #[test]
    fn a_storage_member_changes_only_its_own_record() {
        let s = storage();
        assert_eq!(refused(s, Action::Raft), Rule::RaftByVoters);
        assert_eq!(refused(s, Action::ForwardJoin), Rule::JoinsByVoters);
        for op in [
            AdminOp::Promote { node: OTHER },
            AdminOp::Demote { node: OTHER },
            AdminOp::Remove { node: OTHER },
            AdminOp::Remove { node: ME },
            AdminOp::StepDown { to: None },
        ] {
            assert_eq!(
                refused(s, Action::Admin(&op)),
                Rule::AdminByVoters,
                "{op:?}"
            );
        }
        assert_eq!(
            refused(s, Action::Admin(&AdminOp::Leave { node: OTHER })),
            Rule::OwnRecordOnly
        );
        assert!(check(s, Action::Admin(&AdminOp::Leave { node: ME })).is_ok());
        assert!(check(s, Action::Read).is_ok());
        assert!(check(s, Action::Renew).is_ok());
        assert_eq!(refused(s, Action::Snapshot), Rule::AdminByVoters);
        let token = TokenRecord {
            id: "t".into(),
            secret_hash: "h".into(),
            proof_key: None,
            role: Role::Voter,
            expires_ms: 10,
            max_uses: None,
            uses: 0,
            revoked: false,
            created_ms: 1,
        };
        let refused_writes = [
            (Request::CreateToken { token }, Rule::TokensByVoters),
            (
                Request::RevokeToken { id: "t".into() },
                Rule::TokensByVoters,
            ),
            (Request::RemoveNode { node: OTHER }, Rule::AdminByVoters),
            (
                Request::RotateCa {
                    cert_pem: "pem".into(),
                },
                Rule::AdminByVoters,
            ),
            (
                Request::SwitchCa {
                    fingerprint: "f".into(),
                },
                Rule::AdminByVoters,
            ),
            (
                Request::SetSettings {
                    settings: Settings::default(),
                },
                Rule::AdminByVoters,
            ),
            (
                Request::InitCluster {
                    cluster: ClusterInfo {
                        id: "c".into(),
                        name: "c".into(),
                        created_ms: 1,
                    },
                },
                Rule::AdminByVoters,
            ),
            (
                Request::PutNode {
                    node: record(OTHER),
                },
                Rule::OwnRecordOnly,
            ),
            (
                Request::SetLabel {
                    node: OTHER,
                    key: "k".into(),
                    value: "v".into(),
                },
                Rule::OwnRecordOnly,
            ),
            (Request::MarkLeaving { node: OTHER }, Rule::OwnRecordOnly),
            (
                Request::Restore {
                    snapshot: Carried::default(),
                    force: false,
                },
                Rule::AdminByVoters,
            ),
        ];
        for (req, rule) in &refused_writes {
            assert_eq!(refused(s, Action::Write(req)), *rule, "{req:?}");
        }
        for req in [
            Request::PutNode { node: record(ME) },
            Request::SetLabel {
                node: ME,
                key: "k".into(),
                value: "v".into(),
            },
            Request::RemoveLabel {
                node: ME,
                key: "k".into(),
            },
            Request::MarkLeaving { node: ME },
        ] {
            assert!(check(s, Action::Write(&req)).is_ok(), "{req:?}");
        }
    }

    /// A voter-role member may do everything; a caller the registry and its certificate
    /// give no role may do nothing.
    #[test]
    fn voters_govern_and_unknown_callers_may_do_nothing() {
        let v = Caller::of(ME, Some(Role::Voter), None);
        let op = AdminOp::Remove { node: OTHER };
        for a in [
            Action::Raft,
            Action::Read,
            Action::Snapshot,
            Action::ForwardJoin,
            Action::Admin(&op),
        ] {
            assert!(check(v, a).is_ok());
        }
        let nobody = Caller::of(ME, None, None);
        assert_eq!(refused(nobody, Action::Read), Rule::MembersOnly);
        assert_eq!(refused(nobody, Action::Raft), Rule::MembersOnly);
    }

    /// The registry's record outranks the certificate: a voter-role certificate of a node the
    /// registry records as storage gives no vote, and the certificate speaks only for a node
    /// the registry does not know yet.
    #[test]
    fn the_registry_outranks_the_certificate() {
        let c = Caller::of(ME, Some(Role::Storage), Some(Role::Voter));
        assert_eq!(refused(c, Action::Raft), Rule::RaftByVoters);
        let new = Caller::of(ME, None, Some(Role::Voter));
        assert!(check(new, Action::Raft).is_ok());
    }
}
