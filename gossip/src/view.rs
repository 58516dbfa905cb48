//! The membership view: what gossip observed, turned into one member per node id and a list
//! of changes. Pure: the driver feeds it observations; tests feed it by hand.
//!
//! Rules: a node enters the view the first time it is seen alive (so a node that has only just
//! been heard of is never reported failed), or the first time it is seen leaving. Of a node's
//! generations, the newest live one speaks, else the newest one: a restarted node replaces its
//! old incarnation, with no ghost entry, and is not reported failed while its new generation is
//! still warming up. A node whose state carries the leaving marker is `left`, not `failed`: the
//! marker is the node's own word, so it needs no liveness to be believed, and every peer lists
//! a leaver as `left` until it is reaped, also a peer that first heard of it after (or while)
//! it left. A node that gossip no longer knows (reaped after its grace period) is `removed`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use quorate_base::NodeId;
use serde::Serialize;

use crate::meta::{LEAVING, NodeMeta, STATUS_KEY};

/// A member's liveness as gossip sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// Heartbeats arrive.
    Alive,
    /// Heartbeats stopped without a goodbye.
    Failed,
    /// Left gracefully.
    Left,
}

impl std::fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Failed => "failed",
            MemberStatus::Left => "left",
        })
    }
}

/// One member of the gossip view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Node id.
    pub id: NodeId,
    /// Incarnation: grows on every restart.
    pub generation: u64,
    /// Gossip address.
    pub addr: SocketAddr,
    /// Liveness.
    pub status: MemberStatus,
    /// What the node says about itself.
    #[serde(flatten)]
    pub meta: NodeMeta,
}

/// One node incarnation as gossip knows it now.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Node id.
    pub id: NodeId,
    /// Generation.
    pub generation: u64,
    /// Gossip address.
    pub addr: SocketAddr,
    /// Its live keys.
    pub pairs: Vec<(String, String)>,
    /// Whether the failure detector holds it alive.
    pub live: bool,
}

/// A change in the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// First seen alive, or alive again after failing.
    Joined(Member),
    /// Metadata or generation changed.
    Updated(Member),
    /// Stopped without a goodbye.
    Failed(Member),
    /// Left gracefully.
    Left(Member),
    /// Forgotten after the reap period.
    Removed(Member),
}

impl Change {
    /// The member concerned.
    pub fn member(&self) -> &Member {
        match self {
            Change::Joined(m)
            | Change::Updated(m)
            | Change::Failed(m)
            | Change::Left(m)
            | Change::Removed(m) => m,
        }
    }

    /// `joined`, `updated`, `failed`, `left` or `removed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Joined(_) => "joined",
            Change::Updated(_) => "updated",
            Change::Failed(_) => "failed",
            Change::Left(_) => "left",
            Change::Removed(_) => "removed",
        }
    }
}

/// The current members by node id.
#[derive(Clone, Debug, Default)]
pub struct View {
    members: BTreeMap<NodeId, Member>,
    /// Members whose speaking incarnation the failure detector holds dead.
    dead: BTreeSet<NodeId>,
}

impl View {
    /// Members, by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// The members the failure detector holds dead (failed, or left and gone): its verdict
    /// alone, not what a node's gossiped values claim.
    pub fn dead(&self) -> &BTreeSet<NodeId> {
        &self.dead
    }

    /// One member.
    pub fn get(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// Takes a full observation and returns what changed.
    pub fn update(&mut self, observed: Vec<Observed>) -> Vec<Change> {
        let mut speaking: BTreeMap<NodeId, Observed> = BTreeMap::new();
        for o in observed {
            let better = match speaking.get(&o.id) {
                None => true,
                Some(cur) => (o.live, o.generation) > (cur.live, cur.generation),
            };
            if better {
                speaking.insert(o.id, o);
            }
        }
        let mut changes = Vec::new();
        let gone: Vec<NodeId> = self
            .members
            .keys()
            .filter(|id| !speaking.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(m) = self.members.remove(&id) {
                changes.push(Change::Removed(m));
            }
        }
        let dead: BTreeSet<NodeId> = speaking
            .iter()
            .filter(|(_, o)| !o.live)
            .map(|(id, _)| *id)
            .collect();
        for (id, o) in speaking {
            let leaving = o.pairs.iter().any(|(k, v)| k == STATUS_KEY && v == LEAVING);
            let status = if leaving {
                MemberStatus::Left
            } else if o.live {
                MemberStatus::Alive
            } else {
                MemberStatus::Failed
            };
            let member = Member {
                id,
                generation: o.generation,
                addr: o.addr,
                status,
                meta: NodeMeta::from_pairs(o.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            };
            match self.members.get(&id) {
                None if status == MemberStatus::Alive => {
                    changes.push(Change::Joined(member.clone()));
                    self.members.insert(id, member);
                }
                // First heard of while leaving or after it left: its own marker says so.
                None if status == MemberStatus::Left => {
                    changes.push(Change::Left(member.clone()));
                    self.members.insert(id, member);
                }
                None => {} // never seen alive: not a member of the view yet
                Some(prev) if prev.status != status => {
                    changes.push(match status {
                        MemberStatus::Alive => Change::Joined(member.clone()),
                        MemberStatus::Failed => Change::Failed(member.clone()),
                        MemberStatus::Left => Change::Left(member.clone()),
                    });
                    self.members.insert(id, member);
                }
                Some(prev) if *prev != member => {
                    changes.push(Change::Updated(member.clone()));
                    self.members.insert(id, member);
                }
                Some(_) => {}
            }
        }
        self.dead = dead
            .into_iter()
            .filter(|id| self.members.contains_key(id))
            .collect();
        changes
    }

    /// How many members have each status: (alive, failed, left).
    pub fn counts(&self) -> (usize, usize, usize) {
        self.members
            .values()
            .fold((0, 0, 0), |(a, f, l), m| match m.status {
                MemberStatus::Alive => (a + 1, f, l),
                MemberStatus::Failed => (a, f + 1, l),
                MemberStatus::Left => (a, f, l + 1),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test nodes are named by one letter; their id is that letter's code.
    fn id(name: &str) -> NodeId {
        NodeId::new(u64::from(name.as_bytes()[0]))
    }

    fn obs(name: &str, generation: u64, live: bool, extra: &[(&str, &str)]) -> Observed {
        let id = id(name);
        let mut pairs = vec![("name".to_string(), format!("name-{id}"))];
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Observed {
            id,
            generation,
            addr: "10.0.0.1:7946".parse().expect("addr"),
            pairs,
            live,
        }
    }

    fn kinds(c: &[Change]) -> Vec<(&'static str, String, u64)> {
        c.iter()
            .map(|c| {
                let name = char::from(c.member().id.get() as u8).to_string();
                (c.kind(), name, c.member().generation)
            })
            .collect()
    }

    #[test]
    fn joins_updates_failures_and_removal() {
        let mut v = View::default();
        assert_eq!(
            kinds(&v.update(vec![obs("a", 1, true, &[]), obs("b", 1, false, &[])])),
            vec![("joined", "a".into(), 1)],
            "b never seen alive"
        );
        assert!(
            v.update(vec![obs("a", 1, true, &[])]).is_empty(),
            "no change, no event"
        );
        assert_eq!(
            kinds(&v.update(vec![obs("a", 1, true, &[("label:z", "1")])])),
            vec![("updated", "a".into(), 1)]
        );
        assert_eq!(v.get(id("a")).map(|m| m.meta.labels.len()), Some(1));
        assert_eq!(
            kinds(&v.update(vec![obs("a", 1, false, &[("label:z", "1")])])),
            vec![("failed", "a".into(), 1)]
        );
        assert_eq!(v.counts(), (0, 1, 0));
        assert_eq!(kinds(&v.update(vec![])), vec![("removed", "a".into(), 1)]);
        assert_eq!(v.members().count(), 0);
    }

    #[test]
    fn a_restart_replaces_the_old_generation_without_a_ghost_or_a_false_failure() {
        let mut v = View::default();
        v.update(vec![obs("a", 1, true, &[])]);
        // The new generation is heard of before it is held alive: the old one still speaks.
        assert!(
            v.update(vec![obs("a", 1, true, &[]), obs("a", 2, false, &[])])
                .is_empty()
        );
        assert_eq!(
            kinds(&v.update(vec![obs("a", 1, true, &[]), obs("a", 2, true, &[])])),
            vec![("updated", "a".into(), 2)]
        );
        assert_eq!(v.members().count(), 1);
        // After a kill the old generation fails; the restart comes back as joined.
        let mut v = View::default();
        v.update(vec![obs("a", 1, true, &[])]);
        assert_eq!(
            kinds(&v.update(vec![obs("a", 1, false, &[])])),
            vec![("failed", "a".into(), 1)]
        );
        assert_eq!(
            kinds(&v.update(vec![obs("a", 1, false, &[]), obs("a", 2, true, &[])])),
            vec![("joined", "a".into(), 2)]
        );
        assert_eq!(v.members().count(), 1);
    }

    #[test]
    fn a_leaving_node_is_left_not_failed() {
        let mut v = View::default();
        v.update(vec![obs("a", 1, true, &[])]);
        assert_eq!(
            kinds(&v.update(vec![obs("a", 1, true, &[("status", "leaving")])])),
            vec![("left", "a".into(), 1)]
        );
        assert!(
            v.update(vec![obs("a", 1, false, &[("status", "leaving")])])
                .is_empty(),
            "dead after leaving stays left"
        );
        assert_eq!(v.counts(), (0, 0, 1));
    }

    /// A peer that starts after a node began leaving (a restarted peer, a late joiner) first
    /// observes it with the marker already set, alive for its last rounds or already dead: it
    /// lists it `left` like every other peer, instead of never listing it at all.
    #[test]
    fn a_node_first_seen_leaving_is_left() {
        let mut v = View::default();
        assert_eq!(
            kinds(&v.update(vec![obs("a", 1, true, &[("status", "leaving")])])),
            vec![("left", "a".into(), 1)],
            "still heartbeating its last rounds"
        );
        assert_eq!(v.counts(), (0, 0, 1));
        let mut v = View::default();
        assert_eq!(
            kinds(&v.update(vec![obs("a", 1, false, &[("status", "leaving")])])),
            vec![("left", "a".into(), 1)],
            "already gone"
        );
        assert!(
            v.update(vec![obs("a", 1, false, &[("status", "leaving")])])
                .is_empty()
        );
        // A node never seen alive and without the marker is still not listed (never failed).
        assert!(
            v.update(vec![
                obs("a", 1, false, &[("status", "leaving")]),
                obs("b", 1, false, &[])
            ])
            .is_empty()
        );
        assert_eq!(v.members().count(), 1);
    }

    /// The detector's verdict is kept apart from what a node's values claim: a live node whose
    /// gossiped values say `leaving` (its own, or forged) is listed left but not dead; it is
    /// dead once the detector says so.
    #[test]
    fn a_leaving_claim_is_not_a_death() {
        let mut v = View::default();
        v.update(vec![obs("a", 1, true, &[])]);
        v.update(vec![obs("a", 1, true, &[("status", "leaving")])]);
        assert_eq!(v.counts(), (0, 0, 1));
        assert!(v.dead().is_empty(), "still heartbeating");
        v.update(vec![obs("a", 1, false, &[("status", "leaving")])]);
        assert_eq!(v.dead(), &BTreeSet::from([id("a")]));
        v.update(vec![obs("b", 1, false, &[])]);
        assert!(
            v.dead().is_empty(),
            "never seen alive, and a is gone: no one"
        );
    }

    /// Property tests over random sequences of observations.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn observation() -> impl Strategy<Value = Vec<Observed>> {
            let one = (
                prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")],
                1u64..4,
                any::<bool>(),
                proptest::bool::weighted(0.2),
                prop_oneof![Just("x"), Just("y")],
            )
                .prop_map(|(name, generation, live, leaving, zone)| {
                    let mut extra = vec![("zone", zone)];
                    if leaving {
                        extra.push((STATUS_KEY, LEAVING));
                    }
                    obs(name, generation, live, &extra)
                });
            proptest::collection::vec(one, 0..6)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// The changes are a faithful diff: applied in order to a copy, they give the
            /// view's members; a node enters only alive or leaving, never failed; the same
            /// observation twice changes nothing the second time; the detector's dead are
            /// members.
            #[test]
            fn the_changes_replay_to_the_view(rounds in proptest::collection::vec(observation(), 1..12)) {
                let mut view = View::default();
                let mut copy: BTreeMap<NodeId, Member> = BTreeMap::new();
                for observed in rounds {
                    let changes = view.update(observed.clone());
                    for c in &changes {
                        let m = c.member().clone();
                        match c {
                            Change::Removed(_) => {
                                prop_assert!(copy.remove(&m.id).is_some(), "removed a non-member");
                            }
                            Change::Failed(_) => {
                                prop_assert!(copy.contains_key(&m.id), "entered failed");
                                copy.insert(m.id, m);
                            }
                            _ => {
                                let entering = !copy.contains_key(&m.id);
                                prop_assert!(
                                    !entering || m.status != MemberStatus::Failed,
                                    "entered failed"
                                );
                                if let Change::Joined(_) = c {
                                    prop_assert_eq!(m.status, MemberStatus::Alive);
                                }
                                copy.insert(m.id, m);
                            }
                        }
                    }
                    let members: BTreeMap<NodeId, Member> =
                        view.members().map(|m| (m.id, m.clone())).collect();
                    prop_assert_eq!(&copy, &members);
                    prop_assert!(view.dead().iter().all(|id| members.contains_key(id)));
                    prop_assert_eq!(view.update(observed), Vec::<Change>::new());
                }
            }
        }
    }
}
