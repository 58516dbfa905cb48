//! The autopilot's policy, pure: the leader's view of the group in, at most one membership
//! change out. The leader runs it every round and carries the change out through Raft.
//!
//! In order of precedence:
//! 1. Raft's address book follows the registry (a node that came back on another address).
//! 2. A voter that must not vote (storage role, or leaving) is demoted, never the last one.
//! 3. While the voters are fewer than the target, caught-up learners of the voter role are
//!    promoted, several at once when several are ready (so 1 voter and 2 ready learners become
//!    3 voters in one change, never an even group in between). Storage-role learners never are,
//!    nor nodes an operator demoted.
//! 4. A node that gossip has reported failed for longer than the grace period is removed; a
//!    voter only when the voters stay at or above the target without it (a surplus voter), so
//!    that a removal never costs the group its quorum. A voter that cannot be replaced stays,
//!    failed, and counts against the quorum until it comes back or an operator removes it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::registry::Role;

use quorate_base::NodeId;

/// A learner is caught up when it lags the leader's log by at most this many entries.
pub const MAX_LAG: u64 = 8;

/// What the leader knows when it decides.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The leader's id.
    pub leader: NodeId,
    /// Voters of the effective membership.
    pub voters: BTreeSet<NodeId>,
    /// Learners of the effective membership.
    pub learners: BTreeSet<NodeId>,
    /// Roles from the registry (nodes it does not list are absent).
    pub roles: BTreeMap<NodeId, Role>,
    /// Nodes the registry marks leaving.
    pub leaving: BTreeSet<NodeId>,
    /// How many entries each member lags the leader's log (`None`: not known yet).
    pub lag: BTreeMap<NodeId, Option<u64>>,
    /// Target number of voters.
    pub target: usize,
    /// Nodes an operator demoted: not promoted again by the autopilot.
    pub held_back: BTreeSet<NodeId>,
    /// Members whose Raft address differs from the registry's: the registry's address.
    pub moved: BTreeMap<NodeId, String>,
    /// How long gossip has reported each node failed.
    pub failed_for: BTreeMap<NodeId, Duration>,
    /// How long a node may be failed before it is removed (`None`: never).
    pub grace: Option<Duration>,
}

/// One membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Set these members' Raft addresses.
    UpdateAddrs(BTreeMap<NodeId, String>),
    /// Make these learners voters.
    Promote(BTreeSet<NodeId>),
    /// Make this voter a learner.
    Demote(NodeId),
    /// Take this node out of the group and the registry.
    Remove(NodeId),
}

fn caught_up(f: &Facts, id: NodeId) -> bool {
    matches!(f.lag.get(&id), Some(Some(l)) if *l <= MAX_LAG)
}

/// Whether learner `id` may be promoted once caught up.
fn eligible(f: &Facts, id: NodeId) -> bool {
    f.roles.get(&id) == Some(&Role::Voter)
        && !f.leaving.contains(&id)
        && !f.held_back.contains(&id)
        && !f.failed_for.contains_key(&id)
}

/// Whether a promotion waits only for a learner to catch up: the voters are below the target
/// and an eligible learner is not caught up yet (the autopilot then looks again soon rather
/// than at its next round).
pub fn promotion_pending(f: &Facts) -> bool {
    f.voters.len() < f.target
        && f.learners
            .iter()
            .any(|id| eligible(f, *id) && !caught_up(f, *id))
}

/// The next change, if any.
pub fn next_action(f: &Facts) -> Option<Action> {
    if !f.moved.is_empty() {
        return Some(Action::UpdateAddrs(f.moved.clone()));
    }
    if f.voters.len() > 1
        && let Some(id) = f.voters.iter().copied().find(|id| {
            *id != f.leader && (f.roles.get(id) == Some(&Role::Storage) || f.leaving.contains(id))
        })
    {
        return Some(Action::Demote(id));
    }
    if f.voters.len() < f.target {
        let mut ready: Vec<(u64, NodeId)> = f
            .learners
            .iter()
            .copied()
            .filter(|id| eligible(f, *id) && caught_up(f, *id))
            .map(|id| (f.lag.get(&id).copied().flatten().unwrap_or(0), id))
            .collect();
        ready.sort();
        let take = f.target - f.voters.len();
        let chosen: BTreeSet<NodeId> = ready.into_iter().take(take).map(|(_, id)| id).collect();
        if !chosen.is_empty() {
            return Some(Action::Promote(chosen));
        }
    }
    if let Some(grace) = f.grace {
        for (id, failed) in &f.failed_for {
            if *failed < grace || *id == f.leader {
                continue;
            }
            if f.voters.contains(id) {
                if f.voters.len() > f.target {
                    return Some(Action::Remove(*id));
                }
            } else if f.learners.contains(id) || f.roles.contains_key(id) {
                return Some(Action::Remove(*id));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(id: u64) -> NodeId {
        NodeId::new(id)
    }

    fn facts(voters: &[u64], learners: &[(u64, Role, Option<u64>)]) -> Facts {
        let mut f = Facts {
            leader: n(voters[0]),
            voters: voters.iter().copied().map(n).collect(),
            target: 3,
            grace: Some(Duration::from_secs(60)),
            ..Facts::default()
        };
        for v in voters {
            f.roles.insert(n(*v), Role::Voter);
            f.lag.insert(n(*v), Some(0));
        }
        for (id, role, lag) in learners {
            f.learners.insert(n(*id));
            f.roles.insert(n(*id), *role);
            f.lag.insert(n(*id), *lag);
        }
        f
    }

    #[test]
    fn caught_up_voter_role_learners_are_promoted_up_to_the_target_together() {
        let f = facts(
            &[1],
            &[
                (2, Role::Voter, Some(0)),
                (3, Role::Voter, Some(2)),
                (4, Role::Voter, Some(1)),
                (5, Role::Storage, Some(0)),
            ],
        );
        assert_eq!(
            next_action(&f),
            Some(Action::Promote(BTreeSet::from([n(2), n(4)]))),
            "the two least behind, never the storage node"
        );
    }

    #[test]
    fn storage_lagging_held_back_and_leaving_learners_are_not_promoted() {
        let mut f = facts(
            &[1],
            &[
                (2, Role::Storage, Some(0)),
                (3, Role::Voter, Some(MAX_LAG + 1)),
                (4, Role::Voter, None),
                (5, Role::Voter, Some(0)),
                (6, Role::Voter, Some(0)),
            ],
        );
        f.held_back.insert(n(5));
        f.leaving.insert(n(6));
        assert_eq!(next_action(&f), None);
    }

    /// A promotion is pending while the voters are below the target and an eligible learner
    /// is still catching up; not for storage, held-back, leaving or failed learners, and not
    /// at the target.
    #[test]
    fn a_promotion_is_pending_only_for_an_eligible_learner_catching_up() {
        let f = facts(&[1], &[(2, Role::Voter, None)]);
        assert!(promotion_pending(&f), "never replicated to yet");
        let f = facts(&[1], &[(2, Role::Voter, Some(MAX_LAG + 1))]);
        assert!(promotion_pending(&f), "behind");
        let f = facts(&[1], &[(2, Role::Voter, Some(0))]);
        assert!(
            !promotion_pending(&f),
            "caught up: promoted now, not pending"
        );
        let mut f = facts(
            &[1],
            &[
                (2, Role::Storage, None),
                (3, Role::Voter, None),
                (4, Role::Voter, None),
                (5, Role::Voter, None),
            ],
        );
        f.held_back.insert(n(3));
        f.leaving.insert(n(4));
        f.failed_for.insert(n(5), Duration::from_secs(1));
        assert!(!promotion_pending(&f));
        let f = facts(&[1, 2, 3], &[(4, Role::Voter, None)]);
        assert!(!promotion_pending(&f), "at the target");
    }

    #[test]
    fn at_the_target_nobody_is_promoted() {
        let f = facts(&[1, 2, 3], &[(4, Role::Voter, Some(0))]);
        assert_eq!(next_action(&f), None);
    }

    #[test]
    fn a_storage_or_leaving_voter_is_demoted_but_never_the_leader_or_the_last() {
        let mut f = facts(&[1, 2, 3], &[]);
        f.roles.insert(n(2), Role::Storage);
        assert_eq!(next_action(&f), Some(Action::Demote(n(2))));
        let mut f = facts(&[1, 2, 3], &[]);
        f.leaving.insert(n(3));
        assert_eq!(next_action(&f), Some(Action::Demote(n(3))));
        let mut f = facts(&[1], &[]);
        f.leaving.insert(n(1));
        assert_eq!(next_action(&f), None);
    }

    #[test]
    fn failed_nodes_are_removed_after_the_grace_but_voters_only_in_surplus() {
        let mut f = facts(&[1, 2, 3], &[(4, Role::Storage, Some(0))]);
        f.failed_for.insert(n(4), Duration::from_secs(30));
        assert_eq!(next_action(&f), None, "within the grace period");
        f.failed_for.insert(n(4), Duration::from_secs(61));
        assert_eq!(next_action(&f), Some(Action::Remove(n(4))));

        let mut f = facts(&[1, 2, 3], &[]);
        f.failed_for.insert(n(3), Duration::from_secs(600));
        assert_eq!(next_action(&f), None, "three voters keep their failed one");

        let mut f = facts(&[1, 2, 3, 4], &[]);
        f.failed_for.insert(n(4), Duration::from_secs(600));
        assert_eq!(
            next_action(&f),
            Some(Action::Remove(n(4))),
            "a surplus voter goes"
        );

        let mut f = facts(&[1, 2, 3], &[(4, Role::Storage, Some(0))]);
        f.grace = None;
        f.failed_for.insert(n(4), Duration::from_secs(6000));
        assert_eq!(next_action(&f), None, "no grace: never removed");
    }

    #[test]
    fn a_failed_learner_is_not_promoted_and_moved_addresses_come_first() {
        let mut f = facts(
            &[1],
            &[(2, Role::Voter, Some(0)), (3, Role::Voter, Some(0))],
        );
        f.failed_for.insert(n(2), Duration::from_secs(1));
        assert_eq!(
            next_action(&f),
            Some(Action::Promote(BTreeSet::from([n(3)])))
        );
        f.moved.insert(n(3), "10.0.0.3:7947".into());
        assert!(matches!(next_action(&f), Some(Action::UpdateAddrs(_))));
    }

    /// Property tests over random group states.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn facts() -> impl Strategy<Value = Facts> {
            // Nodes 1 to 8, each a voter, a learner or neither, of a role or unrecorded, with
            // a lag, maybe leaving, held back, failed for some time, or moved.
            let node = (
                0u8..3,
                prop_oneof![
                    3 => Just(Some(Role::Voter)),
                    1 => Just(Some(Role::Storage)),
                    1 => Just(None)
                ],
                prop_oneof![Just(None), (0u64..2_000).prop_map(Some)],
                proptest::bool::weighted(0.1),
                proptest::bool::weighted(0.2),
                prop_oneof![Just(None), (0u64..200).prop_map(Some)],
                proptest::bool::weighted(0.05),
            );
            (
                proptest::collection::vec(node, 1..9),
                prop_oneof![Just(1usize), Just(3), Just(5), Just(7)],
                prop_oneof![Just(None), Just(Some(Duration::from_secs(60)))],
                any::<bool>(),
            )
                .prop_filter_map(
                    "a leader among the voters",
                    |(nodes, target, grace, at_target)| {
                        let mut f = Facts {
                            target,
                            grace,
                            ..Facts::default()
                        };
                        for (i, (place, role, lag, leaving, held, failed, moved)) in
                            nodes.into_iter().enumerate()
                        {
                            let id = n(i as u64 + 1);
                            match place {
                                0 => f.voters.insert(id),
                                1 => f.learners.insert(id),
                                _ => false,
                            };
                            if let Some(r) = role {
                                f.roles.insert(id, r);
                            }
                            f.lag.insert(id, lag);
                            if leaving {
                                f.leaving.insert(id);
                            }
                            if held {
                                f.held_back.insert(id);
                            }
                            if let Some(s) = failed {
                                f.failed_for.insert(id, Duration::from_secs(s));
                            }
                            if moved {
                                f.moved.insert(id, "10.0.0.9:7947".into());
                            }
                        }
                        f.leader = *f.voters.iter().next()?;
                        // Half the groups sit at their target, where a removal must not go below.
                        if at_target {
                            f.target = f.voters.len();
                        }
                        Some(f)
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Never the leader, never a storage node to voter, never a removal that takes the
            /// voters below the target, never more promotions than the target needs.
            #[test]
            fn the_autopilot_keeps_its_rules(f in facts()) {
                match next_action(&f) {
                    Some(Action::Promote(ids)) => {
                        prop_assert!(!ids.is_empty());
                        prop_assert!(f.voters.len() + ids.len() <= f.target);
                        for id in &ids {
                            prop_assert!(f.learners.contains(id), "{id} is not a learner");
                            prop_assert_eq!(f.roles.get(id), Some(&Role::Voter));
                            prop_assert!(!f.held_back.contains(id) && !f.leaving.contains(id));
                            prop_assert!(!f.failed_for.contains_key(id));
                        }
                    }
                    Some(Action::Demote(id)) => {
                        prop_assert!(id != f.leader && f.voters.contains(&id));
                    }
                    Some(Action::Remove(id)) => {
                        prop_assert!(id != f.leader);
                        if f.voters.contains(&id) {
                            prop_assert!(f.voters.len() > f.target, "a voter removed at or below the target");
                        }
                        let grace = f.grace.expect("a removal only with a grace");
                        prop_assert!(f.failed_for.get(&id).is_some_and(|d| *d >= grace));
                    }
                    Some(Action::UpdateAddrs(m)) => prop_assert_eq!(m, f.moved.clone()),
                    None => {}
                }
            }
        }
    }
}
