//! The bridge between the layers once this node is a member: Raft's decisions go into gossip
//! and mDNS, gossip's facts go to Raft's autopilot.
//!
//! Six jobs, each a function: [`advertise_member`] (mDNS says `member` and the CA prefix,
//! once), [`sync_join_keys`] (the join policy, join keys and join secrets follow the node's
//! keyring), [`publish_raft_view`] (state, leader, term and this node's registry labels into
//! gossip meta when they change), [`report_failures`] (which nodes gossip's failure detector
//! holds dead, and since when, to the autopilot, and as `failed`/`recovered` events of the
//! node's hub, see [`liveness_events`]), [`seed_members`] (registry members' gossip
//! addresses become gossip seeds) and [`publish_membership`] (the membership view embedding
//! applications watch). [`run`] does the first once and the other five every 500 ms, in that
//! order, from one copy of the registry taken again only when the node applied new entries
//! ([`Applied`]); the seeds are looked at only when that copy is new. A node that joined
//! with open gossip adopts the cluster's keys ([`adopt_secrets`]): a voter its cluster keys,
//! a storage node only their gossip keys.
//! Nothing here decides membership: the autopilot, on the leader, does, and it takes a failure
//! only from the failure detector (never from a value a node gossips about itself), confirmed
//! by another voter.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorate_consensus::{AdmissionConfig, Consensus, EventKind, JoinPolicy, NodeStatus, Registry};
use quorate_discovery::{AdvertState, Advertisement, Mdns};
use quorate_gossip::{Gossip, Key, NodeMeta};
use tracing::{info, warn};

use crate::NodeId;
use crate::Role;
use crate::api::Membership;
use crate::data_dir::DataDir;
use crate::keys::{KeyKind, SharedKeys, StoredKeys};

/// How often the bridge brings the layers in step.
const PERIOD: Duration = Duration::from_millis(500);

/// Runs the bridge for the life of the membership: advertises membership on mDNS once, then
/// every [`PERIOD`] keeps the join keys, gossip meta, failure reports and seeds in step.
pub(super) async fn run(
    node: Arc<Consensus>,
    gossip: Arc<Gossip>,
    keys: SharedKeys,
    mdns: Option<Arc<Mdns>>,
    advert: Option<Advertisement>,
    grace: Duration,
    membership: tokio::sync::watch::Sender<Option<Membership>>,
) {
    if let (Some(mdns), Some(ad)) = (mdns.as_deref(), advert) {
        advertise_member(&node, mdns, ad);
    }
    let mut published: Option<NodeMeta> = None;
    let mut failed_since: BTreeMap<NodeId, Instant> = BTreeMap::new();
    let mut reported: BTreeSet<NodeId> = BTreeSet::new();
    let mut seeded: BTreeSet<SocketAddr> = BTreeSet::new();
    let mut registry = Applied::default();
    loop {
        let fresh = registry.refresh(&node);
        sync_join_keys(&node, &keys);
        publish_raft_view(&node, &gossip, &registry.registry, &mut published).await;
        report_failures(
            &node,
            &gossip,
            &registry.active,
            &mut failed_since,
            &mut reported,
            grace,
        );
        if fresh {
            seed_members(&node, &gossip, &registry.registry, &mut seeded);
        }
        publish_membership(&node, &gossip, &membership);
        tokio::time::sleep(PERIOD).await;
    }
}

/// The registry as this node last applied it, and its active members: copied again only when
/// the applied index has moved, so that a node at rest does not copy N records every period.
#[derive(Default)]
struct Applied {
    /// The applied index the copy was taken at (`None`: not taken yet, or nothing applied).
    index: Option<Option<u64>>,
    registry: Registry,
    active: BTreeSet<NodeId>,
}

impl Applied {
    /// Takes a new copy if the node applied entries since the last; true if it did.
    fn refresh(&mut self, node: &Consensus) -> bool {
        // The index first: the registry read after it is at least as new.
        let index = node.applied_index();
        if self.index == Some(index) {
            return false;
        }
        self.index = Some(index);
        self.registry = node.local_registry();
        self.active = self
            .registry
            .nodes
            .values()
            .filter(|n| n.status == NodeStatus::Active)
            .map(|n| n.id)
            .collect();
        true
    }
}

/// (a) The mDNS advertisement says `member`, with the prefix of the cluster CA's fingerprint
/// (what a token's joiner matches seeds by).
fn advertise_member(node: &Consensus, mdns: &Mdns, mut ad: Advertisement) {
    ad.advert.state = AdvertState::Member;
    ad.advert.ca = Some(node.cluster().ca_fingerprint[..16].to_string());
    match mdns.advertise(&ad) {
        Ok(_) => info!("mdns advertisement says member"),
        Err(e) => warn!(error = %e, "mdns advertisement not updated"),
    }
}

/// (b) Join policy and secrets follow the keyring (rotations included).
fn sync_join_keys(node: &Consensus, keys: &SharedKeys) {
    if let Ok(k) = keys.lock() {
        node.set_admission(admission(&k));
    }
}

/// How a node with `keys` admits joiners: open while gossip is open, else by join key or
/// token; the join keys are derived from its cluster keys; a voter-role joiner is handed the
/// cluster keys, a storage-role joiner their gossip keys only.
pub(super) fn admission(keys: &StoredKeys) -> AdmissionConfig {
    let list = |ks: Vec<Key>| {
        serde_json::to_string(&ks.iter().map(Key::to_base64).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let mut voter_secrets = BTreeMap::new();
    let mut storage_secrets = BTreeMap::new();
    if keys.sealed() {
        storage_secrets.insert(GOSSIP_KEYS_SECRET.to_string(), list(keys.gossip_keys()));
        if keys.kind == KeyKind::Cluster {
            voter_secrets.insert(CLUSTER_KEYS_SECRET.to_string(), list(keys.keys.clone()));
        }
    }
    AdmissionConfig {
        policy: if keys.sealed() {
            JoinPolicy::KeyOrToken
        } else {
            JoinPolicy::Open
        },
        keys: keys.join_keys(),
        voter_secrets,
        storage_secrets,
    }
}

/// (c) Raft's view into this node's gossip meta: state `member`, leader, term, and its labels
/// as the registry holds them; written only when it differs from what was last `published`.
async fn publish_raft_view(
    node: &Consensus,
    gossip: &Gossip,
    registry: &Registry,
    published: &mut Option<NodeMeta>,
) {
    let (leader, term) = node.leader_and_term();
    let mut meta = gossip.meta().await;
    meta.cluster_state = "member".to_string();
    meta.raft_leader = leader;
    meta.raft_term = Some(term);
    if let Some(me) = registry.nodes.get(&node.id()) {
        meta.labels = me.labels.clone();
    }
    if published.as_ref() != Some(&meta) {
        gossip.set_meta(meta.clone()).await;
        *published = Some(meta);
    }
}

/// (d) Failures as gossip's failure detector reports them (failed, or left and gone), each
/// with the time it was first seen dead, to the autopilot with the grace period before removal.
/// A node's gossiped values (a `leaving` status, say) are not a failure: a live node is never
/// reported, whatever is said about it. The same verdicts become local events (`reported`:
/// the members this node announced failed).
fn report_failures(
    node: &Consensus,
    gossip: &Gossip,
    active: &BTreeSet<NodeId>,
    failed_since: &mut BTreeMap<NodeId, Instant>,
    reported: &mut BTreeSet<NodeId>,
    grace: Duration,
) {
    let now = Instant::now();
    let down = gossip.dead();
    failed_since.retain(|id, _| down.contains(id));
    for id in &down {
        failed_since.entry(*id).or_insert(now);
    }
    node.set_failed(failed_since.clone(), Some(grace));
    let events = node.events();
    for kind in liveness_events(active, &down, reported) {
        events.publish_local(kind);
    }
}

/// The liveness events of one look at the failure detector: an active registry member held
/// dead and not yet announced is `failed`; an announced one alive again is `recovered`. A node
/// that leaves the registry (or is leaving) is forgotten silently: `removed` or `left` says
/// what became of it. `reported` is updated.
pub(super) fn liveness_events(
    active: &BTreeSet<NodeId>,
    down: &BTreeSet<NodeId>,
    reported: &mut BTreeSet<NodeId>,
) -> Vec<EventKind> {
    reported.retain(|id| active.contains(id));
    let recovered: Vec<NodeId> = reported.difference(down).copied().collect();
    let failed: Vec<NodeId> = down
        .intersection(active)
        .filter(|id| !reported.contains(id))
        .copied()
        .collect();
    for id in &recovered {
        reported.remove(id);
    }
    reported.extend(failed.iter().copied());
    recovered
        .into_iter()
        .map(|node| EventKind::Recovered { node })
        .chain(failed.into_iter().map(|node| EventKind::Failed { node }))
        .collect()
}

/// (e) Every registry member's gossip address is a seed (mDNS may not reach them all); each
/// address is handed over once (`seeded`).
fn seed_members(
    node: &Consensus,
    gossip: &Gossip,
    registry: &Registry,
    seeded: &mut BTreeSet<SocketAddr>,
) {
    let me = node.id();
    let fresh: Vec<SocketAddr> = registry
        .nodes
        .values()
        .filter(|n| n.id != me)
        .filter_map(|n| n.gossip_addr.parse().ok())
        .filter(|a| !seeded.contains(a))
        .collect();
    if !fresh.is_empty() {
        seeded.extend(fresh.iter().copied());
        gossip.add_seeds(fresh);
    }
}

/// (f) The membership view embedding applications watch ([`crate::Agent::membership`]):
/// sent only when it differs from the last one, so a receiver wakes for changes alone.
fn publish_membership(
    node: &Consensus,
    gossip: &Gossip,
    membership: &tokio::sync::watch::Sender<Option<Membership>>,
) {
    // Built only while an application watches: an agent nobody embeds pays nothing. A new
    // receiver sees the view from the next look on (within a period).
    if membership.receiver_count() == 0 {
        return;
    }
    let view = crate::api::membership(node, gossip);
    membership.send_if_modified(|current| {
        if current.as_ref() == Some(&view) {
            false
        } else {
            *current = Some(view);
            true
        }
    });
}

/// A node that joined a sealed cluster while its own gossip was open takes the cluster's keys.
pub(super) fn adopt_secrets(
    gossip: &Gossip,
    data_dir: &DataDir,
    keys: &SharedKeys,
    role: Role,
    secrets: &BTreeMap<String, String>,
) {
    let read = |name: &str| -> Vec<Key> {
        secrets
            .get(name)
            .map(|list| {
                serde_json::from_str::<Vec<String>>(list)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|k| Key::from_base64(k).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let adopted = match role {
        Role::Voter => StoredKeys::from_cluster_keys(read(CLUSTER_KEYS_SECRET), role),
        Role::Storage => StoredKeys {
            kind: KeyKind::Gossip,
            keys: read(GOSSIP_KEYS_SECRET),
        },
    };
    let Ok(mut current) = keys.lock() else {
        return;
    };
    if !adopted.sealed() || current.sealed() {
        return;
    }
    match gossip.adopt_keys(adopted.gossip_keys()) {
        Ok(()) => {
            if let Err(e) = data_dir.save_keyring(&adopted) {
                warn!(error = %e, "the cluster's keys could not be saved in the data dir");
            }
            *current = adopted;
            info!("gossip sealed with the cluster's keys");
        }
        Err(e) => warn!(error = %e, "could not take the cluster's gossip keys"),
    }
}

/// The join secret that carries the gossip keyring (base64 keys, primary first, as JSON).
const GOSSIP_KEYS_SECRET: &str = "gossip_keys";

/// The join secret that carries the cluster keys (base64, primary first, as JSON): handed to
/// voter-role joiners only.
const CLUSTER_KEYS_SECRET: &str = "cluster_keys";

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ns: &[u64]) -> BTreeSet<NodeId> {
        ns.iter().map(|n| NodeId::new(*n)).collect()
    }

    #[test]
    fn liveness_events_announce_members_once_and_their_recovery() {
        let mut reported = BTreeSet::new();
        let active = ids(&[1, 2, 3]);
        // 9 is dead but no member: no event.
        let first = liveness_events(&active, &ids(&[2, 9]), &mut reported);
        assert_eq!(
            first,
            vec![EventKind::Failed {
                node: NodeId::new(2)
            }]
        );
        assert!(liveness_events(&active, &ids(&[2, 9]), &mut reported).is_empty());
        let back = liveness_events(&active, &ids(&[]), &mut reported);
        assert_eq!(
            back,
            vec![EventKind::Recovered {
                node: NodeId::new(2)
            }]
        );
        // Failed, then out of the registry: forgotten without a recovery.
        liveness_events(&active, &ids(&[3]), &mut reported);
        let gone = liveness_events(&ids(&[1, 2]), &ids(&[]), &mut reported);
        assert!(gone.is_empty(), "{gone:?}");
        assert!(reported.is_empty());
    }
}
