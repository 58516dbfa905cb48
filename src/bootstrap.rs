//! The zero-configuration decision, pure: what a node that belongs to no cluster does, given
//! what mDNS shows of its cluster name.
//!
//! - A formed cluster of this name is visible (peers advertising `member`): join it, through
//!   those peers, pinning the CA they advertise.
//! - Otherwise a storage node waits: it never forms a cluster (it never votes).
//! - Otherwise, when at least `expect` voter-eligible nodes are forming (this one included),
//!   the one with the lowest node id bootstraps, once the set it sees has not changed for a
//!   settling time; every other node waits for it to turn `member`, then joins it.
//!
//! Two things make formation quick without weakening that rule. The others need not wait
//! for the lowest node's advertisement to turn `member` (mDNS repeats a record at most once a
//! second): once their own view has settled a little longer than the lowest needs, they ask
//! it directly ([`Decision::JoinNode`]: a join that trusts whatever CA the node presents as
//! long as its certificate names the node the advertisement named), and again until it has
//! formed; and gossip, which runs between forming nodes too, shows a member within a round. A
//! join never makes a cluster, so asking early is safe whatever the timing.
//!
//! Exactly one node initializes Raft, alone; the others join it with the ordinary join
//! handshake and the autopilot promotes them, so no node is ever put into a Raft membership
//! before it holds a certificate of the cluster. With exactly `expect` nodes only the lowest
//! can see `expect` forming voters with itself the lowest, so two clusters cannot form; with
//! more, the settling time lets every node hear of the others first (mDNS announcements reach
//! a LAN in milliseconds). The agent counts the settling time from its own announcement too
//! (`stable_for` is the shorter of the two), which closes the race of a late node with a lower
//! id: a node that formed before hearing of it had not been told of it, so the late node's
//! announcement came after that node formed, and the late node waits a settling time after its
//! own announcement, in which gossip (a round is 200 ms) shows it the member.
//!
//! [`over_peers`] is the same decision where mDNS does not reach (Kubernetes, clouds, VPNs):
//! the peers come from `--peers` (addresses, or DNS names resolved at each attempt), and what
//! each of them is (id, role, forming or member) from gossip, which the agent seeds with those
//! addresses on the gossip port. No new trust enters: gossip carries every node's id, role and
//! cluster state already (sealed with the cluster key when there is one, so that only key
//! holders are counted), and the rule is [`decide`]'s, whose proof does not depend on where the
//! view comes from: a node bootstraps only when it sees `expect` forming voter-eligible nodes
//! with itself the lowest, and with exactly `expect` of them only the lowest can. Two more
//! rules keep a formed cluster from being overlooked: any member in view means join, never
//! form (gossip does not carry the CA, so its members are joined through `--peers` trust); and
//! no node forms while an address `--peers` resolved to is one gossip does not know (a member
//! whose gossip port differs, say) and has not been tried with a join.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use quorate_base::NodeId;

/// A peer as the decision needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Node id.
    pub id: NodeId,
    /// Whether it may vote (voter role).
    pub voter: bool,
    /// Whether it is a member of a formed cluster.
    pub member: bool,
    /// Its QUIC address.
    pub quic: Option<SocketAddr>,
    /// The CA fingerprint prefix it advertises, once a member.
    pub ca: Option<String>,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing yet, for this reason.
    Wait(String),
    /// Make the cluster.
    Bootstrap,
    /// Join the formed cluster whose CA has this fingerprint prefix, through these members.
    Join {
        /// CA fingerprint prefix (as advertised).
        ca: String,
        /// Members' QUIC addresses.
        seeds: Vec<SocketAddr>,
    },
    /// Ask this node to admit us, trusting the CA it presents if its certificate names it:
    /// a member whose CA is not in view (gossip shows it), or the lowest forming voter, which
    /// forms the cluster once settled (asked until it has).
    JoinNode {
        /// The node asked.
        node: NodeId,
        /// Its QUIC address.
        seeds: Vec<SocketAddr>,
    },
}

/// How much longer than the settling time the other forming voters wait before they ask the
/// lowest directly: it forms the cluster once its own view has settled, which may be a little
/// later than theirs.
pub const ASK_AFTER: Duration = Duration::from_millis(100);

/// Decides for node `me` (`voter`: it may vote) seeing `peers` (of its cluster name, itself
/// not included), when the set of forming voters has been unchanged for `stable_for`.
pub fn decide(
    me: NodeId,
    voter: bool,
    peers: &[Seen],
    expect: usize,
    stable_for: Duration,
    settle: Duration,
) -> Decision {
    // Formed clusters, by CA: the one with the most members visible wins (two clusters of one
    // name is an operator's mistake; joining the larger one is the least surprising).
    // Every member counts for seeing a cluster formed; only its voters are seeds, since only
    // voters admit nodes (a joiner refuses any other at the handshake).
    let mut formed: BTreeMap<&str, (usize, Vec<SocketAddr>)> = BTreeMap::new();
    for p in peers.iter().filter(|p| p.member) {
        if let (Some(ca), Some(q)) = (p.ca.as_deref(), p.quic) {
            let e = formed.entry(ca).or_default();
            e.0 += 1;
            if p.voter {
                e.1.push(q);
            }
        }
    }
    if let Some((ca, (_, seeds))) = formed
        .iter()
        .max_by_key(|(ca, (seen, _))| (*seen, std::cmp::Reverse(*ca)))
    {
        if seeds.is_empty() {
            return Decision::Wait(format!(
                "a formed cluster (CA {ca}) is in view, but none of its voters yet"
            ));
        }
        return Decision::Join {
            ca: ca.to_string(),
            seeds: seeds.clone(),
        };
    }
    // A member whose CA is not in view yet (gossip shows the state, not the CA).
    if let Some((node, quic)) = peers
        .iter()
        .filter(|p| p.member && p.voter)
        .filter_map(|p| Some((p.id, p.quic?)))
        .min()
    {
        return Decision::JoinNode {
            node,
            seeds: vec![quic],
        };
    }
    if peers.iter().any(|p| p.member) {
        return Decision::Wait("a formed cluster is in view, but none of its voters yet".into());
    }
    if !voter {
        return Decision::Wait(
            "a storage node waits for a formed cluster to join (it never forms one)".into(),
        );
    }
    let forming: BTreeSet<NodeId> = peers
        .iter()
        .filter(|p| p.voter && !p.member)
        .map(|p| p.id)
        .chain([me])
        .collect();
    if forming.len() < expect {
        return Decision::Wait(format!(
            "waiting for {expect} voter-eligible nodes to form a cluster; {} seen",
            forming.len()
        ));
    }
    let lowest = forming.iter().next().copied().unwrap_or(me);
    if lowest != me {
        let quic = peers.iter().find(|p| p.id == lowest).and_then(|p| p.quic);
        if let Some(quic) = quic
            && stable_for >= settle + ASK_AFTER
        {
            return Decision::JoinNode {
                node: lowest,
                seeds: vec![quic],
            };
        }
        return Decision::Wait(format!(
            "{} voter-eligible nodes seen; node {lowest} (the lowest id) forms the cluster",
            forming.len()
        ));
    }
    if stable_for < settle {
        return Decision::Wait(format!(
            "{} voter-eligible nodes seen; forming the cluster once the view is settled",
            forming.len()
        ));
    }
    Decision::Bootstrap
}

/// An address `--peers` resolved to, as [`over_peers`] needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The QUIC address.
    pub addr: SocketAddr,
    /// How long gossip has told nothing of it since it was resolved or last tried.
    pub unknown_for: Duration,
    /// Whether a join through it was tried and failed while gossip knew nothing of it.
    pub tried: bool,
}

/// What a node joining or forming through `--peers` does now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeersStep {
    /// Nothing yet, for this reason.
    Wait(String),
    /// Make the cluster.
    Bootstrap,
    /// Join through these members (gossip shows them members of a formed cluster).
    Join(Vec<SocketAddr>),
    /// Try a join through these addresses, which gossip knows nothing of.
    Probe(Vec<SocketAddr>),
}

/// Decides for node `me` over `peers` (what gossip, and mDNS when on, show; itself left out)
/// and `candidates` (what `--peers` resolved to, itself left out); `probe_after` is how long
/// gossip may know nothing of a candidate before a join is tried through it.
#[allow(clippy::too_many_arguments)]
pub fn over_peers(
    me: NodeId,
    voter: bool,
    peers: &[Seen],
    candidates: &[Candidate],
    expect: usize,
    stable_for: Duration,
    settle: Duration,
    probe_after: Duration,
) -> PeersStep {
    let voters: Vec<SocketAddr> = peers
        .iter()
        .filter(|p| p.member && p.voter)
        .filter_map(|p| p.quic)
        .collect();
    if !voters.is_empty() {
        return PeersStep::Join(voters);
    }
    if peers.iter().any(|p| p.member) {
        return PeersStep::Wait(
            "a formed cluster is in view but no voter of it gives its QUIC address yet".into(),
        );
    }
    let known = |a: SocketAddr| {
        peers
            .iter()
            .any(|p| p.quic.is_some_and(|q| q == a || q.ip() == a.ip()))
    };
    let unknown: Vec<&Candidate> = candidates.iter().filter(|c| !known(c.addr)).collect();
    let due: Vec<SocketAddr> = unknown
        .iter()
        .filter(|c| c.unknown_for >= probe_after)
        .map(|c| c.addr)
        .collect();
    if !due.is_empty() {
        return PeersStep::Probe(due);
    }
    match decide(me, voter, peers, expect, stable_for, settle) {
        Decision::Bootstrap if unknown.iter().any(|c| !c.tried) => PeersStep::Wait(format!(
            "forming once every peer address is known to gossip or tried: {} not yet",
            unknown
                .iter()
                .filter(|c| !c.tried)
                .map(|c| c.addr.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Decision::Bootstrap => PeersStep::Bootstrap,
        Decision::Join { seeds, .. } => PeersStep::Join(seeds),
        // Members in view were joined above; the lowest forming node is joined once gossip
        // shows it a member (a join through `--peers` waits long for a node that does not
        // serve yet).
        Decision::JoinNode { node, .. } => PeersStep::Wait(format!(
            "node {node} (the lowest id) forms the cluster; joining it once gossip shows it a member"
        )),
        Decision::Wait(why) => PeersStep::Wait(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forming(id: u64) -> Seen {
        Seen {
            id: NodeId::new(id),
            voter: true,
            member: false,
            quic: Some(SocketAddr::from(([10, 0, 0, id as u8], 7947))),
            ca: None,
        }
    }

    fn member(id: u64, ca: &str) -> Seen {
        Seen {
            member: true,
            ca: Some(ca.into()),
            ..forming(id)
        }
    }

    const S: Duration = Duration::from_secs(1);

    /// Storage members count for seeing a formed cluster (no new one is formed beside it), but
    /// are never seeds: only voters admit nodes, and a storage node could relay a join.
    #[test]
    fn storage_members_are_never_seeds() {
        let storage = |id| Seen {
            voter: false,
            ..member(id, "aaaaaaaaaaaaaaaa")
        };
        let peers = [storage(1), member(7, "aaaaaaaaaaaaaaaa"), forming(2)];
        assert_eq!(
            decide(NodeId::new(3), true, &peers, 3, S, S),
            Decision::Join {
                ca: "aaaaaaaaaaaaaaaa".into(),
                seeds: vec![SocketAddr::from(([10, 0, 0, 7], 7947))],
            }
        );
        let only_storage = [storage(1), forming(2), forming(5)];
        assert!(matches!(
            decide(NodeId::new(3), true, &only_storage, 3, S, S),
            Decision::Wait(w) if w.contains("none of its voters")
        ));
        let no_ca = |voter| Seen {
            ca: None,
            voter,
            ..member(1, "")
        };
        assert!(matches!(
            decide(NodeId::new(3), true, &[no_ca(false)], 3, S, S),
            Decision::Wait(_)
        ));
        assert!(matches!(
            decide(NodeId::new(3), true, &[no_ca(true)], 3, S, S),
            Decision::JoinNode { .. }
        ));
        assert!(matches!(
            over_peers(NodeId::new(3), true, &[storage(1)], &[], 3, S, S, S),
            PeersStep::Wait(w) if w.contains("no voter")
        ));
    }

    #[test]
    fn the_lowest_of_enough_settled_voters_bootstraps_and_only_it() {
        let peers = [forming(5), forming(9)];
        assert_eq!(
            decide(NodeId::new(3), true, &peers, 3, S, S),
            Decision::Bootstrap
        );
        let peers = [forming(3), forming(9)];
        assert!(
            matches!(decide(NodeId::new(5), true, &peers, 3, S, S), Decision::Wait(w) if w.contains("0000000000000003"))
        );
        let peers = [forming(5), forming(9)];
        assert!(matches!(
            decide(NodeId::new(3), true, &peers, 3, Duration::from_millis(10), S),
            Decision::Wait(w) if w.contains("settled")
        ));
    }

    #[test]
    fn too_few_voters_or_a_storage_node_wait() {
        let peers = [forming(5)];
        assert!(
            matches!(decide(NodeId::new(3), true, &peers, 3, S, S), Decision::Wait(w) if w.contains("2 seen"))
        );
        let storage = Seen {
            voter: false,
            ..forming(1)
        };
        // Storage peers do not count towards the voters.
        let peers = [forming(5), storage];
        assert!(matches!(
            decide(NodeId::new(3), true, &peers, 3, S, S),
            Decision::Wait(_)
        ));
        let peers = [forming(5), forming(9)];
        assert!(
            matches!(decide(NodeId::new(1), false, &peers, 3, S, S), Decision::Wait(w) if w.contains("storage"))
        );
    }

    #[test]
    fn a_formed_cluster_is_joined_instead_even_by_the_lowest() {
        let peers = [member(7, "aaaaaaaaaaaaaaaa"), forming(5), forming(9)];
        assert_eq!(
            decide(NodeId::new(1), true, &peers, 3, S, S),
            Decision::Join {
                ca: "aaaaaaaaaaaaaaaa".into(),
                seeds: vec![SocketAddr::from(([10, 0, 0, 7], 7947))],
            }
        );
        // Storage nodes join too.
        assert!(matches!(
            decide(NodeId::new(1), false, &peers, 3, S, S),
            Decision::Join { .. }
        ));
        // Of two formed clusters, the one with more members.
        let peers = [
            member(7, "bbbbbbbbbbbbbbbb"),
            member(8, "aaaaaaaaaaaaaaaa"),
            member(9, "aaaaaaaaaaaaaaaa"),
        ];
        assert!(
            matches!(decide(NodeId::new(1), true, &peers, 3, S, S), Decision::Join { ca, .. } if ca == "aaaaaaaaaaaaaaaa")
        );
    }

    /// Once its view has settled a little longer than the lowest needs to form, a forming
    /// voter asks the lowest directly rather than wait for its advertisement to change.
    #[test]
    fn the_others_ask_the_lowest_directly_once_settled() {
        let peers = [forming(3), forming(9)];
        let lowest = Decision::JoinNode {
            node: NodeId::new(3),
            seeds: vec![SocketAddr::from(([10, 0, 0, 3], 7947))],
        };
        assert_eq!(
            decide(NodeId::new(5), true, &peers, 3, S + ASK_AFTER, S),
            lowest
        );
        assert!(matches!(
            decide(NodeId::new(5), true, &peers, 3, S + ASK_AFTER / 2, S),
            Decision::Wait(_)
        ));
        // Not with too few voters in view, nor without the lowest's address.
        assert!(matches!(
            decide(NodeId::new(5), true, &peers[..1], 3, 2 * S, S),
            Decision::Wait(_)
        ));
        let silent = [
            Seen {
                quic: None,
                ..forming(3)
            },
            forming(9),
        ];
        assert!(matches!(
            decide(NodeId::new(5), true, &silent, 3, 2 * S, S),
            Decision::Wait(_)
        ));
        // Over --peers the lowest is joined once gossip shows it a member.
        assert!(matches!(
            over_peers(NodeId::new(5), true, &peers, &[], 3, 2 * S, S, P),
            PeersStep::Wait(w) if w.contains("0000000000000003")
        ));
    }

    /// A member gossip shows (no CA) is asked directly, by any node, the lowest and storage
    /// nodes included; a member whose CA is in view is joined with that CA pinned instead.
    #[test]
    fn a_member_without_a_ca_in_view_is_asked_directly() {
        let m = Seen {
            member: true,
            ca: None,
            ..forming(7)
        };
        let asked = Decision::JoinNode {
            node: NodeId::new(7),
            seeds: vec![SocketAddr::from(([10, 0, 0, 7], 7947))],
        };
        let peers = [m.clone(), forming(5), forming(9)];
        assert_eq!(decide(NodeId::new(1), true, &peers, 3, S, S), asked);
        assert_eq!(decide(NodeId::new(1), false, &peers, 3, S, S), asked);
        let peers = [m, member(8, "aaaaaaaaaaaaaaaa")];
        assert!(matches!(
            decide(NodeId::new(1), true, &peers, 3, S, S),
            Decision::Join { ca, .. } if ca == "aaaaaaaaaaaaaaaa"
        ));
    }

    /// What node `i` of `ids` sees of the others in the partial view `mask` (two bits a node:
    /// whether it sees each of the other two).
    fn partial_view(ids: &[u64], i: usize, mask: u32) -> Vec<Seen> {
        ids.iter()
            .enumerate()
            .filter(|(j, _)| *j != i && mask & (1 << (i * 2 + usize::from(*j > i))) != 0)
            .map(|(_, id)| forming(*id))
            .collect()
    }

    /// With exactly `expect` nodes and any partial views, at most one node bootstraps.
    #[test]
    fn with_expect_nodes_no_partial_view_gives_two_bootstraps() {
        let ids = [11u64, 4, 29];
        // Every subset of the others each node might see.
        for mask in 0..(1 << 6) {
            let mut deciders = 0;
            for (i, me) in ids.iter().enumerate() {
                let peers = partial_view(&ids, i, mask);
                if decide(NodeId::new(*me), true, &peers, 3, S, S) == Decision::Bootstrap {
                    deciders += 1;
                }
            }
            assert!(
                deciders <= 1,
                "mask {mask:b}: {deciders} nodes bootstrapped"
            );
        }
    }

    fn cand(addr: &str, unknown_ms: u64, tried: bool) -> Candidate {
        Candidate {
            addr: addr.parse().unwrap(),
            unknown_for: Duration::from_millis(unknown_ms),
            tried,
        }
    }

    const P: Duration = Duration::from_secs(3);

    #[test]
    fn over_peers_the_lowest_of_the_gossiped_forming_voters_bootstraps() {
        let peers = [forming(5), forming(9)];
        // The candidates are the peers gossip shows (matched by QUIC address).
        let cands = [
            cand("10.0.0.5:7947", 0, false),
            cand("10.0.0.9:7947", 0, false),
        ];
        assert_eq!(
            over_peers(NodeId::new(3), true, &peers, &cands, 3, S, S, P),
            PeersStep::Bootstrap
        );
        let peers = [forming(3), forming(9)];
        assert!(matches!(
            over_peers(NodeId::new(5), true, &peers, &[], 3, S, S, P),
            PeersStep::Wait(w) if w.contains("0000000000000003")
        ));
        assert!(matches!(
            over_peers(NodeId::new(3), true, &[forming(5)], &[], 3, S, S, P),
            PeersStep::Wait(w) if w.contains("2 seen")
        ));
    }

    #[test]
    fn over_peers_a_member_in_view_is_joined_never_a_second_cluster_formed() {
        // A member without a CA (gossip carries none) is joined through its QUIC address.
        let m = Seen {
            member: true,
            ca: None,
            ..forming(7)
        };
        let peers = [m.clone(), forming(5), forming(9)];
        assert_eq!(
            over_peers(NodeId::new(1), true, &peers, &[], 3, S, S, P),
            PeersStep::Join(vec![SocketAddr::from(([10, 0, 0, 7], 7947))])
        );
        let silent = Seen { quic: None, ..m };
        let peers = [silent, forming(5), forming(9)];
        assert!(matches!(
            over_peers(NodeId::new(1), true, &peers, &[], 3, S, S, P),
            PeersStep::Wait(_)
        ));
    }

    #[test]
    fn over_peers_an_address_gossip_does_not_know_is_tried_before_forming() {
        let peers = [forming(5), forming(9)];
        let fresh = [cand("10.0.0.200:7947", 500, false)];
        assert!(matches!(
            over_peers(NodeId::new(3), true, &peers, &fresh, 3, S, S, P),
            PeersStep::Wait(w) if w.contains("10.0.0.200:7947")
        ));
        let due = [cand("10.0.0.200:7947", 3000, false)];
        assert_eq!(
            over_peers(NodeId::new(3), true, &peers, &due, 3, S, S, P),
            PeersStep::Probe(vec!["10.0.0.200:7947".parse().unwrap()])
        );
        let tried = [cand("10.0.0.200:7947", 100, true)];
        assert_eq!(
            over_peers(NodeId::new(3), true, &peers, &tried, 3, S, S, P),
            PeersStep::Bootstrap
        );
    }

    /// The proof of `decide` carries over: with exactly `expect` nodes and any partial gossip
    /// views, at most one node bootstraps over peers.
    #[test]
    fn over_peers_no_partial_view_gives_two_bootstraps() {
        let ids = [11u64, 4, 29];
        for mask in 0..(1 << 6) {
            let mut deciders = 0;
            for (i, me) in ids.iter().enumerate() {
                let peers = partial_view(&ids, i, mask);
                let cands: Vec<Candidate> = peers
                    .iter()
                    .map(|p| Candidate {
                        addr: p.quic.unwrap(),
                        unknown_for: Duration::ZERO,
                        tried: false,
                    })
                    .collect();
                let step = over_peers(NodeId::new(*me), true, &peers, &cands, 3, S, S, P);
                if step == PeersStep::Bootstrap {
                    deciders += 1;
                }
            }
            assert!(
                deciders <= 1,
                "mask {mask:b}: {deciders} nodes bootstrapped"
            );
        }
    }

    /// Property tests over random LANs of forming nodes.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Nodes that see one another (each sees every other) never form two clusters: at
            /// most one decides to bootstrap, whatever the ids, roles, expected count and how
            /// long the view has been settled; and a node that sees a member never does.
            #[test]
            fn no_two_clusters_from_one_view(
                nodes in proptest::collection::btree_map(1u64..1_000, any::<bool>(), 1..8),
                expect in 1usize..6,
                stable_ms in 0u64..3_000,
                member in proptest::option::of(0usize..8),
            ) {
                let seen: Vec<Seen> = nodes
                    .iter()
                    .enumerate()
                    .map(|(i, (id, voter))| Seen {
                        voter: *voter,
                        member: member == Some(i),
                        ca: (member == Some(i)).then(|| "abcdef0123456789".to_string()),
                        ..forming(*id)
                    })
                    .collect();
                let settle = Duration::from_secs(1);
                let stable = Duration::from_millis(stable_ms);
                let mut bootstraps = Vec::new();
                for me in seen.iter().filter(|s| !s.member) {
                    let others: Vec<Seen> = seen.iter().filter(|s| s.id != me.id).cloned().collect();
                    let d = decide(me.id, me.voter, &others, expect, stable, settle);
                    if d == Decision::Bootstrap {
                        prop_assert!(me.voter, "a storage node bootstraps");
                        prop_assert!(!others.iter().any(|s| s.member), "bootstraps beside a member");
                        bootstraps.push(me.id);
                    }
                }
                prop_assert!(bootstraps.len() <= 1, "two clusters: {:?}", bootstraps);
            }
        }
    }
}
